"""systemd integration without a dependency: sd_notify over $NOTIFY_SOCKET and sockets from $LISTEN_FDS.

Both protocols are a few lines (see sd_notify(3) and sd_listen_fds(3)); writing
them here keeps rsubd free of a C extension that a user's laptop may not have.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


def _address(env: Mapping[str, str]) -> str | bytes | None:
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):  # an abstract socket
        return b"\0" + path[1:].encode()
    return path


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message ("READY=1", "STATUS=...", "WATCHDOG=1"); False when not under systemd."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two WATCHDOG=1 pings: half of $WATCHDOG_USEC, if the watchdog is for this process."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


def listen_socket(env: Mapping[str, str] | None = None) -> socket.socket | None:
    """The Unix stream socket systemd passed (socket activation), or None; clears the variables after use."""
    env = os.environ if env is None else env
    fds, pid = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    if not fds or not fds.isdigit() or int(fds) < 1:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    if int(fds) > 1:
        raise ValueError(f"systemd passed {fds} sockets; rsubd listens on exactly one (check rsubd.socket)")
    sock = socket.socket(fileno=LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ValueError("the socket systemd passed is not a Unix stream socket (check ListenStream= in rsubd.socket)")
    os.set_inheritable(sock.fileno(), False)
    if env is os.environ:
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    return sock
