"""rsubd's configuration: TOML, validated once at start, then frozen.

No file means the embedded default: one schedd named "local" on the embedded
scheduler. A wrong key or value is refused with a message that names the key
and says what is allowed.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsub import paths

BACKENDS = ("local", "htcondor")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_POLL = {"local": 2.0, "htcondor": 60.0}


class ConfigError(Exception):
    """The configuration is refused; the message names the key."""


@dataclass(frozen=True)
class ScheddConfig:
    name: str
    backend: str
    poll_interval: float
    slots: int | None = None
    pool: str | None = None


@dataclass(frozen=True)
class Config:
    socket: Path
    state_dir: Path
    log_level: str = "info"
    leave_in_queue_days: float = 10.0
    schedds: tuple[ScheddConfig, ...] = field(default_factory=tuple)
    source: Path | None = None

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.db"

    def schedd(self, name: str | None) -> ScheddConfig:
        if name is None:
            return self.schedds[0]
        for s in self.schedds:
            if s.name == name:
                return s
        raise KeyError(name)


TOP_KEYS = {"socket", "state_dir", "log_level", "leave_in_queue_days", "schedd"}
SCHEDD_KEYS = {"name", "backend", "poll_interval", "slots", "pool"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {where}{key!r}; allowed keys: {', '.join(sorted(allowed))}")


def _number(value: Any, key: str, *, minimum: float) -> float:
    # TOML has nan and inf; neither is a usable interval or age.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key} must be a finite number >= {minimum:g}, not {value!r}")
    return float(value)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, not {value!r}")
    return value


def _schedd(table: Any, index: int) -> ScheddConfig:
    where = f"[[schedd]] #{index + 1}: "
    if not isinstance(table, dict):
        raise ConfigError(f"{where}must be a table")
    _check_keys(table, SCHEDD_KEYS, where)
    name = _string(table.get("name"), f"{where}name")
    backend = table.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"{where}backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    if backend == "htcondor":
        raise ConfigError(f"{where}backend 'htcondor' is not available in this version of rsub; use 'local'")
    poll = _number(table.get("poll_interval", DEFAULT_POLL[backend]), f"{where}poll_interval", minimum=0.1)
    slots = table.get("slots")
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 1):
        raise ConfigError(f"{where}slots must be a whole number >= 1, not {slots!r}")
    pool = table.get("pool")
    if pool is not None:
        pool = _string(pool, f"{where}pool")
    return ScheddConfig(name=name, backend=backend, poll_interval=poll, slots=slots, pool=pool)


def load(explicit: str | None = None) -> Config:
    """Load the config from --config, $RSUB_CONFIG or the XDG location; defaults when there is none."""
    path = paths.config_file(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    return from_dict(data, source=path)


def from_dict(data: dict[str, Any], *, source: Path | None = None) -> Config:
    _check_keys(data, TOP_KEYS, "")
    socket = Path(_string(data["socket"], "socket")).expanduser() if "socket" in data else paths.socket_path()
    state = Path(_string(data["state_dir"], "state_dir")).expanduser() if "state_dir" in data else paths.state_dir()
    level = data.get("log_level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    days = _number(data.get("leave_in_queue_days", 10), "leave_in_queue_days", minimum=0.001)
    raw = data.get("schedd", [{"name": "local", "backend": "local"}])
    if not isinstance(raw, list) or not raw:
        raise ConfigError("schedd must be a non-empty list of [[schedd]] tables")
    schedds = tuple(_schedd(t, i) for i, t in enumerate(raw))
    names = [s.name for s in schedds]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"[[schedd]] name {n!r} is used more than once; names must be unique")
        if not n.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"[[schedd]] name {n!r} may hold only letters, digits, '-', '_' and '.'")
    if len(str(socket)) > 100:
        raise ConfigError(f"socket path {socket} is too long for a Unix socket (at most 100 characters)")
    return Config(socket=socket, state_dir=state, log_level=level, leave_in_queue_days=days,
                  schedds=schedds, source=source)
