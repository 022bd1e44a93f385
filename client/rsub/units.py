"""The systemd user units for rsubd: written by `rsub daemon install`, and kept in systemd/ as shipped.

A test checks that the files in systemd/ are exactly these templates rendered
with the default ExecStart, so the two never drift apart.
"""

from __future__ import annotations

DEFAULT_EXEC = "%h/.local/bin/rsubd"
DEFAULT_LISTEN = "%t/rsub/rsubd.sock"  # rsub's default socket: $XDG_RUNTIME_DIR/rsub/rsubd.sock

SERVICE = """\
# rsubd as a systemd user unit. `rsub daemon install` writes it (and rsubd.socket)
# to ~/.config/systemd/user with the right ExecStart; or copy it there by hand.
[Unit]
Description=rsub daemon: submits, tracks and retrieves HTCondor jobs
Documentation=https://htcondor.readthedocs.io/en/latest/users-manual/submitting-a-job.html
After=network-online.target
Wants=network-online.target

[Service]
# rsubd says READY=1 once its socket serves, then WATCHDOG=1 from its event loop.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
WatchdogSec=60s
TimeoutStartSec=60s
TimeoutStopSec=30s
# Only rsubd itself is stopped: jobs of the embedded scheduler run in sessions of
# their own and are found again at the next start; binding workers exit with it.
KillMode=process
UMask=0077
# Sandboxing that still lets rsubd write its state, its socket, token files and
# every output directory a job names (anywhere under your home or /tmp).
NoNewPrivileges=yes
ProtectSystem=full
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
"""

SOCKET = """\
# Socket activation for rsubd: systemd listens on rsub's default socket and starts
# rsubd at the first `rsub` command. Enable with: systemctl --user enable --now rsubd.socket
[Unit]
Description=rsub daemon socket

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
Service=rsubd.service

[Install]
WantedBy=sockets.target
"""


def render(exec_start: str = DEFAULT_EXEC, listen: str = DEFAULT_LISTEN) -> dict[str, str]:
    """The unit files by name, with rsubd's ExecStart and the socket rsub talks to."""
    return {"rsubd.service": SERVICE.format(exec_start=exec_start), "rsubd.socket": SOCKET.format(listen=listen)}
