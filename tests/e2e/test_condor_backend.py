"""The real htcondor2 bindings, no pool needed: a dead address and a schedd that never answers."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def silent_schedd() -> Iterator[int]:
    """A TCP listener on loopback that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def condor_config(port: int, call_timeout: float = 3) -> str:
    return f"""
        [[schedd]]
        name = "local"
        backend = "local"

        [[schedd]]
        name = "remote"
        backend = "htcondor"
        address = "<127.0.0.1:{port}>"
        own_schedd = true
        poll_interval = 1
        call_timeout = {call_timeout}
        transfer_timeout = {call_timeout}
    """


def test_unreachable_schedd_fails_at_once_with_a_clear_error(short_tmp: Path, workdir: Path) -> None:
    daemon = Rsubd(short_tmp, config=condor_config(free_port()))
    daemon.start()
    try:
        write_job(workdir, "job.sh", "true\n")
        (workdir / "job.sub").write_text("executable = job.sh\nqueue\n")
        started = time.monotonic()
        result = daemon.rsub("submit", "--schedd", "remote", "job.sub", cwd=workdir)
        assert time.monotonic() - started < 10
        assert result.returncode == 7, result.stderr
        assert "schedd_unreachable" in result.stderr and "Failed to connect" in result.stderr
        assert result.stderr.count("\n") == 1
        # The local schedd is unaffected.
        assert daemon.rsub("submit", "job.sub", cwd=workdir).returncode == 0
    finally:
        daemon.stop()


def test_hung_schedd_is_cut_off_and_status_keeps_answering(short_tmp: Path, workdir: Path, silent_schedd: int) -> None:
    daemon = Rsubd(short_tmp, config=condor_config(silent_schedd, call_timeout=4))
    daemon.start()
    try:
        write_job(workdir, "job.sh", "true\n")
        (workdir / "job.sub").write_text("executable = job.sh\nqueue\n")
        submit = subprocess.Popen([str(BIN / "rsub"), "submit", "--schedd", "remote", "job.sub"], cwd=workdir,
                                  env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # let the submit reach the silent schedd; the check below is what matters
        assert submit.poll() is None, "the submit should still be waiting on the silent schedd"
        for _ in range(3):
            started = time.monotonic()
            status = daemon.rsub("status")
            assert status.returncode == 0, status.stderr
            assert time.monotonic() - started < 1.0
        _, stderr = submit.communicate(timeout=30)
        assert submit.returncode == 7
        assert "took longer than 4 s" in stderr
        assert daemon.rsub("ping").returncode == 0
    finally:
        daemon.stop()


def test_an_action_on_a_silent_schedd_is_reported_as_a_timeout(short_tmp: Path, silent_schedd: int) -> None:
    # The bindings' act() gives up after its own 20 s with the words it uses for a refused connection
    # (issue 13, item 5): rsub must not tell the user the schedd is down when it is frozen.
    daemon = Rsubd(short_tmp, config=condor_config(silent_schedd, call_timeout=40))
    daemon.start()
    try:
        result = daemon.rsub("hold", "--schedd", "remote", "--constraint", "true", "--reason", "x", timeout=60)
        assert result.returncode == 7, result.stderr
        assert "timeout" in result.stderr and "never answered" in result.stderr, result.stderr
        assert "schedd_unreachable" not in result.stderr
    finally:
        daemon.stop()


def test_a_new_token_replaces_the_binding_worker_but_never_between_submit_and_spool(tmp_path: Path) -> None:
    from rsubd.backends.condor.client import CondorSchedd, CondorSettings
    from rsubd.backends.schedd import ScheddError
    from rsubd.tokens.manager import Credential

    generation = [1]
    schedd = CondorSchedd(
        CondorSettings(name="dead", address=f"<127.0.0.1:{free_port()}>", call_timeout=20),
        lambda: Credential("p", generation[0], {"_condor_SCITOKENS_FILE": str(tmp_path / "bt")}, None),
    )
    try:
        def worker_pid() -> int:
            with pytest.raises(ScheddError):
                schedd.query("true", ["ClusterId"])
            return int(schedd._proc.pid)

        first = worker_pid()
        assert worker_pid() == first  # same token: same worker, same security session
        generation[0] = 2
        second = worker_pid()
        assert second != first  # the bindings cache their session: a new token needs a new process
        schedd._unspooled.add(7)  # a submitted cluster still to spool lives in this worker
        generation[0] = 3
        assert worker_pid() == second
        schedd._unspooled.clear()
        assert worker_pid() != second
    finally:
        schedd.close()


def test_a_submit_with_a_token_of_its_own_goes_through_a_worker_of_its_own(short_tmp: Path, workdir: Path) -> None:
    import sys

    from tests import tokenkit

    kit = Path(tokenkit.__file__)
    daemon = Rsubd(short_tmp, config=condor_config(free_port()) + f"""
        [tokens.dune]
        kind = "scitoken"
        file = "{short_tmp}/bt"
        group = "dune"
        refresh_command = ["{sys.executable}", "{kit}", "scoped", "3600"]
    """)
    daemon.start()
    try:
        wait_until(lambda: daemon.rsub("token", "status").returncode == 0 and (short_tmp / "bt").exists(), 15,
                   "the profile's token")
        write_job(workdir, "run.sh", "true\n")
        result = daemon.rsub("submit", "--schedd", "remote", "-G", "dune", "--need-scope", "compute.create",
                             f"file://{workdir}/run.sh", cwd=workdir)
        # The bindings, in a worker started with the submit's token, got as far as the (dead) schedd.
        assert result.returncode == 7, result.stderr
        assert "Failed to connect" in result.stderr
        scoped = daemon.state_dir / "tokens" / "scoped"
        assert not scoped.exists() or list(scoped.iterdir()) == []
        assert "token.scoped_fetched" in daemon.log.read_text()
    finally:
        daemon.stop()
