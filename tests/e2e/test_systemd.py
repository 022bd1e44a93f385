"""rsubd under systemd: sd_notify READY/STATUS/WATCHDOG, socket activation, and units that verify."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsub import units
from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_units_are_the_templates_rsub_installs() -> None:
    for name, text in units.render().items():
        assert (REPO / "systemd" / name).read_text() == text


def test_daemon_install_writes_units_that_systemd_accepts(short_tmp: Path) -> None:
    daemon = Rsubd(short_tmp)
    target = short_tmp / "units"
    result = daemon.rsub("daemon", "install", "--dir", str(target))
    assert result.returncode == 0, result.stderr
    assert "loginctl enable-linger" in result.stdout and "systemctl --user enable --now rsubd" in result.stdout
    service = (target / "rsubd.service").read_text()
    assert f"ExecStart={BIN / 'rsubd'}\n" in service and "Type=notify" in service and "WatchdogSec=" in service
    assert "ListenStream=%t/rsub/rsubd.sock" in (target / "rsubd.socket").read_text()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    verified = subprocess.run(["systemd-analyze", "verify", str(target / "rsubd.service"),
                               str(target / "rsubd.socket")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr


def test_rsubd_reports_ready_status_and_watchdog(short_tmp: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_tmp / "notify"))
    notify.settimeout(0.2)
    daemon = Rsubd(short_tmp)
    daemon.env.update(NOTIFY_SOCKET=str(short_tmp / "notify"), WATCHDOG_USEC="600000")  # ping every 0.3 s
    messages: list[str] = []

    def receive() -> list[str]:
        try:
            messages.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
        return messages

    daemon.start(wait=False)
    try:
        wait_until(lambda: any("READY=1" in m for m in receive()), 15, "READY=1")
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=0 jobs in flight on 1 schedd(s)" in ready
        # rsub answers once READY was sent: systemd may start dependents then.
        assert daemon.rsub("ping").returncode == 0
        wait_until(lambda: sum("WATCHDOG=1" in m for m in receive()) >= 3, 10, "three watchdog pings")
        daemon.stop()
        wait_until(lambda: any("STOPPING=1" in m for m in receive()), 10, "STOPPING=1")
    finally:
        daemon.stop()
        notify.close()


def test_rsubd_serves_a_socket_passed_by_systemd(short_tmp: Path) -> None:
    path = short_tmp / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    daemon = Rsubd(short_tmp, f'socket = "{path}"\n')
    # As systemd does: the socket on fd 3, LISTEN_FDS=1 and LISTEN_PID = rsubd's own pid.
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS'] = '1'; "
                "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])")
    with open(daemon.log, "ab") as log:
        daemon.proc = subprocess.Popen([sys.executable, "-c", launcher, str(listener.fileno()), str(BIN / "rsubd")],
                                       env=daemon.env, stdout=log, stderr=log, pass_fds=(listener.fileno(),))
    listener.close()  # only rsubd holds it now
    try:
        wait_until(lambda: daemon.rsub("ping").returncode == 0, 15, "rsubd to answer on the passed socket")
        # Under systemd but not on the journal (no JOURNAL_STREAM): the log is the default file.
        assert '"socket_activated": true' in daemon.log_file.read_text()
        daemon.stop()
        assert path.exists()  # the socket belongs to systemd: rsubd never removes it
    finally:
        daemon.stop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()


def test_more_than_one_passed_socket_is_refused(short_tmp: Path) -> None:
    env = {**os.environ, "LISTEN_FDS": "2", "XDG_STATE_HOME": str(short_tmp / "s"),
           "XDG_RUNTIME_DIR": str(short_tmp / "r"), "XDG_CONFIG_HOME": str(short_tmp / "c")}
    launcher = "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[1], sys.argv[1:])"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", launcher, str(BIN / "rsubd")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert "systemd passed 2 sockets" in result.stderr
    assert time.monotonic() - started < 30
