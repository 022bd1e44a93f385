"""Where rsub keeps things, by the XDG rules; shared by the client and the daemon."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(name: str) -> str | None:
    """An XDG base directory variable; unset, empty or relative counts as unset, as the spec says."""
    value = os.environ.get(name)
    return value if value and os.path.isabs(value) else None


def config_file(explicit: str | None = None) -> Path | None:
    """The config file: --config, else $RSUB_CONFIG, else $XDG_CONFIG_HOME/rsub/config.toml if it exists."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("RSUB_CONFIG")
    if env:
        return Path(env).expanduser()
    base = _xdg("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    path = Path(base) / "rsub" / "config.toml"
    return path if path.exists() else None


def state_dir() -> Path:
    """$XDG_STATE_HOME/rsub (default ~/.local/state/rsub): the ledger and the local scheduler."""
    base = _xdg("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rsub"


LOG_NAME = "rsubd.log"  # rsubd's own log, in the state directory, when it writes one by default


def log_file(state: Path | None = None) -> Path:
    """Where rsubd writes its log by default: <state dir>/rsubd.log."""
    return (state or state_dir()) / LOG_NAME


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/rsub, or a private /tmp/rsub-<uid> where XDG_RUNTIME_DIR is unset."""
    base = _xdg("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "rsub"
    return Path(f"/tmp/rsub-{os.getuid()}")


def socket_path(explicit: str | None = None) -> Path:
    """The daemon's socket: explicit, else $RSUB_SOCKET, else <runtime dir>/rsubd.sock."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("RSUB_SOCKET")
    if env:
        return Path(env).expanduser()
    return runtime_dir() / "rsubd.sock"


def ensure_private_dir(path: Path) -> None:
    """Create `path` mode 0700, and refuse one that another user owns or others can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
    if st.st_mode & 0o077:
        path.chmod(0o700)
