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

from rsub.wire import paths
from rsub.wire.jobsubconf import JobsubConfig, JobsubConfigError
from rsub.wire.jobsubconf import parse as parse_jobsub
from rsubd.services.notify import EVENTS as NOTIFY_EVENTS
from rsubd.services.notify import NotifyConfig
from rsubd.services.policyconfig import PolicyConfig, parse_policy
from rsubd.tokens.claims import KINDS as TOKEN_KINDS
from rsubd.tokens.claims import TokenProfile, default_bearer_file, default_token_directory

BACKENDS = ("local", "htcondor")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_DAGMAN = "/usr/bin/condor_dagman"
DEFAULT_POLL = {"local": 2.0, "htcondor": 60.0}


class ConfigError(Exception):
    """The configuration is refused; the message names the key."""


@dataclass(frozen=True)
class ScheddConfig:
    name: str  # rsub's own name: the one in ids (12.0@NAME) and on the command line
    backend: str
    poll_interval: float
    slots: int | None = None
    pool: str | None = None
    address: str | None = None
    condor_config: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    call_timeout: float = 60.0
    transfer_timeout: float = 600.0
    own_schedd: bool = False
    token: str | None = None
    poll_jitter: float = 0.1
    poll_backoff_max: float | None = None  # None: ten intervals, at most 600 s
    early_poll_every: float = 15.0
    early_poll_burst: int = 1
    faults_file: str | None = None
    poll_stall_slack: float = 5.0  # seconds past the longest allowed gap before a poll counts as stalled
    poll_max_duration: float = 3600.0  # seconds one poll may run before it counts as stalled
    retrieve_retry_max: float = 600.0  # seconds: the longest wait between two tries of a retrieve that failed
    retrieve_attention_after: float = 3600.0  # seconds a retrieve may keep failing before a person is asked
    dagman: str = DEFAULT_DAGMAN  # condor_dagman's path on the access point (the embedded one runs its own for it)
    schedd_name: str = ""  # the schedd's Name in the pool (HTCondor's "schedd2@host"); "" until set from name
    max_jobs_per_submission: int = 20_000  # the schedd's MAX_JOBS_PER_SUBMISSION: rsub refuses a bigger submit
    max_jobs_per_owner: int = 100_000  # the schedd's MAX_JOBS_PER_OWNER: rsub refuses a submit that would pass it

    def __post_init__(self) -> None:
        if not self.schedd_name:
            object.__setattr__(self, "schedd_name", self.name)

    @property
    def submit_limits(self) -> tuple[int, int]:
        return self.max_jobs_per_submission, self.max_jobs_per_owner


@dataclass(frozen=True)
class Config:
    socket: Path
    state_dir: Path
    log_level: str = "info"
    log_file: str | None = None  # None: chosen at start (stderr on a terminal or the journal, else <state>/rsubd.log)
    log_max_bytes: int = 10 * 1024 * 1024  # a log file is rotated past this size, keeping log_backups old ones
    log_backups: int = 5
    leave_in_queue_days: float = 10.0
    compact_after_days: float = 30.0  # final jobs older than this lose their events (ledger/compaction.py); 0 never
    schedds: tuple[ScheddConfig, ...] = field(default_factory=tuple)
    tokens: dict[str, TokenProfile] = field(default_factory=dict)
    unspooled: str = "resubmit"
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    jobsub: JobsubConfig = field(default_factory=JobsubConfig)  # the site's defaults for jobsub-style submits
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the hold policy (services/automation.py), off
    source: Path | None = None
    # The daemon's own knobs: defaults only, no TOML key (a test or a wrapper sets them on Config).
    token_scan_interval: float = 1.0  # seconds between two looks at the token files (a stat each)
    liveness_interval: float = 5.0  # seconds between two checks that every schedd's poll schedule is alive
    max_wait: float = 60.0  # seconds a wait or a token refresh request may hold its client, at most
    page_default: int = 1000  # jobs in one status or history reply when the client names no limit
    page_max: int = 100_000  # jobs in one reply, at most
    facts_cache_size: int = 10_000  # clusters whose description facts are kept; past it the cache starts again
    max_resubmits: int = 3  # an unspooled cluster is submitted again at most this often, then removed and reported
    ledger_busy_timeout: float = 5.0  # seconds a ledger write waits on a lock held by another connection
    idle_timeout: float | None = None  # seconds a client may take to send one request; None: the server's default
    send_timeout: float = 30.0  # seconds a reply may wait on a client that does not read
    max_clients: int | None = None  # connections served at once; None: from the descriptor limit

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.db"

    @property
    def compact_after(self) -> float:
        """compact_after_days in seconds (0: never compact)."""
        return self.compact_after_days * 86400

    def schedd(self, name: str | None) -> ScheddConfig:
        if name is None:
            return self.schedds[0]
        for s in self.schedds:
            if s.name == name:
                return s
        raise KeyError(name)


TOP_KEYS = {"socket", "state_dir", "log_level", "log_file", "log_max_bytes", "log_backups", "leave_in_queue_days",
            "compact_after_days", "schedd", "tokens", "unspooled", "notify", "jobsub", "policy"}
NOTIFY_KEYS = {"command", "on", "desktop"}
UNSPOOLED = ("resubmit", "report")
SCHEDD_KEYS = {"name", "schedd_name", "backend", "poll_interval", "slots", "pool", "address", "condor_config", "params",
               "call_timeout", "transfer_timeout", "own_schedd", "token", "poll_jitter", "poll_backoff_max",
               "early_poll_every", "early_poll_burst", "faults_file", "poll_stall_slack", "poll_max_duration",
               "retrieve_retry_max", "retrieve_attention_after", "dagman", "max_jobs_per_submission",
               "max_jobs_per_owner"}
TOKEN_KEYS = {"kind", "file", "directory", "refresh_command", "refresh_margin", "refresh_floor", "refresh_timeout",
              "group", "role", "vault", "issuer", "htgettoken_options"}
# A client may ask for an early poll (rsub wait, a submit) at most once per this many seconds by default.
DEFAULT_EARLY_POLL_EVERY = {"local": 0.5, "htcondor": 15.0}
LOCAL_ONLY = {"slots", "faults_file"}
HTCONDOR_ONLY = {"pool", "address", "condor_config", "params", "call_timeout", "transfer_timeout", "own_schedd"}
# HTCondor asks job trackers to query a shared schedd at most about once a minute;
# below this floor only the user's own schedd may be polled.
HTCONDOR_POLL_FLOOR = 10.0


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {where}{key!r}; allowed keys: {', '.join(sorted(allowed))}")


def _number(value: Any, key: str, *, minimum: float) -> float:
    # TOML has nan and inf; neither is a usable interval or age.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key} must be a finite number >= {minimum:g}, not {value!r}")
    return float(value)


def _whole(value: Any, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be a whole number >= {minimum}, not {value!r}")
    return value


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
    wrong = (HTCONDOR_ONLY if backend == "local" else LOCAL_ONLY) & set(table)
    if wrong:
        raise ConfigError(f"{where}key {sorted(wrong)[0]!r} does not apply to backend {backend!r}")
    own = table.get("own_schedd", False)
    if not isinstance(own, bool):
        raise ConfigError(f"{where}own_schedd must be true or false, not {own!r}")
    floor = HTCONDOR_POLL_FLOOR if backend == "htcondor" and not own else 0.1
    poll = table.get("poll_interval", DEFAULT_POLL[backend])
    if floor > 0.1 and isinstance(poll, (int, float)) and not isinstance(poll, bool) and 0.1 <= poll < floor:
        raise ConfigError(f"{where}poll_interval must be at least {floor:g} s for a shared schedd, not {poll!r} "
                          "(set own_schedd = true if the schedd is yours alone)")
    poll = _number(poll, f"{where}poll_interval", minimum=floor)
    slots = table.get("slots")
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 1):
        raise ConfigError(f"{where}slots must be a whole number >= 1, not {slots!r}")
    params = table.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float, bool)) for v in params.values()):
        raise ConfigError(f"{where}params must be a table of HTCondor settings, "
                          'e.g. params = { SEC_CLIENT_AUTHENTICATION_METHODS = "IDTOKENS" }')
    optional: dict[str, str] = {}
    for key in ("pool", "address", "condor_config", "faults_file"):
        if key in table:
            optional[key] = _string(table[key], f"{where}{key}")
    if "condor_config" in optional:
        optional["condor_config"] = str(Path(optional["condor_config"]).expanduser())
    if "condor_config" in optional and not Path(optional["condor_config"]).is_file():
        raise ConfigError(f"{where}condor_config {optional['condor_config']!r} is not a readable file")
    jitter = _number(table.get("poll_jitter", 0.1), f"{where}poll_jitter", minimum=0.0)
    if jitter > 0.5:
        raise ConfigError(f"{where}poll_jitter is a fraction of the interval, at most 0.5, not {jitter!r}")
    burst = table.get("early_poll_burst", 1)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"{where}early_poll_burst must be a whole number >= 1, not {burst!r}")
    token = _string(table["token"], f"{where}token") if "token" in table else None
    pool_name = _string(table["schedd_name"], f"{where}schedd_name").strip() if "schedd_name" in table else name
    if "schedd_name" in table and (any(c.isspace() for c in pool_name) or '"' in pool_name):
        raise ConfigError(f"{where}schedd_name {pool_name!r} is not a schedd Name: no blanks or quotes "
                          "(HTCondor names its schedds like \"schedd2@host.example.org\")")
    call_timeout = _number(table.get("call_timeout", 60.0), f"{where}call_timeout", minimum=0.1)
    transfer_timeout = _number(table.get("transfer_timeout", 600.0), f"{where}transfer_timeout", minimum=0.1)
    # A poll is at most a query, a history call, a retrieve and an edit (plus recovery's calls):
    # past what the backend's own limits allow, it is stuck. The embedded scheduler has no limits.
    max_duration = 4 * call_timeout + 2 * transfer_timeout if backend == "htcondor" else 3600.0
    return ScheddConfig(
        name=name, schedd_name=pool_name, backend=backend, poll_interval=poll, slots=slots, own_schedd=own, token=token,
        poll_jitter=jitter, early_poll_burst=burst,
        poll_backoff_max=None if "poll_backoff_max" not in table else _number(
            table["poll_backoff_max"], f"{where}poll_backoff_max", minimum=poll),
        early_poll_every=_number(table.get("early_poll_every", DEFAULT_EARLY_POLL_EVERY[backend]),
                                 f"{where}early_poll_every", minimum=0.0),
        pool=optional.get("pool"), address=optional.get("address"), condor_config=optional.get("condor_config"),
        faults_file=str(Path(optional["faults_file"]).expanduser()) if "faults_file" in optional else None,
        params=tuple((str(k), str(v)) for k, v in params.items()),
        call_timeout=call_timeout, transfer_timeout=transfer_timeout,
        poll_stall_slack=_number(table.get("poll_stall_slack", 5.0), f"{where}poll_stall_slack", minimum=0.5),
        poll_max_duration=_number(table.get("poll_max_duration", max_duration), f"{where}poll_max_duration",
                                  minimum=1.0),
        retrieve_retry_max=_number(table.get("retrieve_retry_max", 600.0), f"{where}retrieve_retry_max",
                                   minimum=0.0),
        retrieve_attention_after=_number(table.get("retrieve_attention_after", 3600.0),
                                         f"{where}retrieve_attention_after", minimum=0.0),
        dagman=_dagman_path(table.get("dagman", DEFAULT_DAGMAN), f"{where}dagman"),
        max_jobs_per_submission=_whole(table.get("max_jobs_per_submission", 20_000),
                                       f"{where}max_jobs_per_submission", minimum=1),
        max_jobs_per_owner=_whole(table.get("max_jobs_per_owner", 100_000), f"{where}max_jobs_per_owner", minimum=1),
    )


def _dagman_path(value: Any, key: str) -> str:
    path = _string(value, key)
    if not path.startswith("/"):
        raise ConfigError(f"{key} must be condor_dagman's absolute path on the access point, not {path!r}")
    return path


def _argv(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{key} must be a list of arguments, e.g. [\"htgettoken\", \"-a\", \"vault.example.org\"]; "
                          "no shell is used, so a string is not split")
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and a for a in value):
        raise ConfigError(f"{key} must be a non-empty list of non-empty strings, not {value!r}")
    return tuple(value)


def _token(name: str, table: Any) -> TokenProfile:
    where = f"[tokens.{name}] "
    if not isinstance(table, dict):
        raise ConfigError(f"{where}must be a table")
    _check_keys(table, TOKEN_KEYS, where)
    kind = table.get("kind")
    if kind not in TOKEN_KINDS:
        raise ConfigError(f"{where}kind must be one of {', '.join(map(repr, TOKEN_KINDS))}, not {kind!r}")
    if "file" in table and "directory" in table:
        raise ConfigError(f"{where}give either file or directory, not both")
    if "directory" in table and kind != "idtoken":
        raise ConfigError(f"{where}directory is for idtoken profiles; a scitoken profile names its file")
    text = {k: _string(table[k], f"{where}{k}") for k in ("file", "directory", "group", "role", "vault", "issuer",
                                                          "htgettoken_options") if k in table}
    file = Path(text["file"]).expanduser() if "file" in text else None
    directory = Path(text["directory"]).expanduser() if "directory" in text else None
    if file is None and directory is None:
        if kind == "scitoken":
            file = default_bearer_file()
        else:
            directory = default_token_directory()
    margin = table.get("refresh_margin")
    return TokenProfile(
        name=name, kind=kind, file=file, directory=directory,
        refresh_command=(_argv(table["refresh_command"], f"{where}refresh_command")
                         if "refresh_command" in table else None),
        refresh_margin=None if margin is None else _number(margin, f"{where}refresh_margin", minimum=0.0),
        refresh_floor=_number(table.get("refresh_floor", 10.0), f"{where}refresh_floor", minimum=0.0),
        refresh_timeout=_number(table.get("refresh_timeout", 300.0), f"{where}refresh_timeout", minimum=0.1),
        group=text.get("group"), role=text.get("role"), vault=text.get("vault"), issuer=text.get("issuer"),
        htgettoken_options=text.get("htgettoken_options"),
    )


def _notify(table: Any) -> NotifyConfig:
    if not isinstance(table, dict):
        raise ConfigError("notify must be a table: [notify]")
    _check_keys(table, NOTIFY_KEYS, "[notify] ")
    command = _argv(table["command"], "[notify] command") if "command" in table else None
    on = table.get("on", list(NotifyConfig().on))
    if not isinstance(on, list) or not all(e in NOTIFY_EVENTS for e in on):
        raise ConfigError(f"[notify] on must be a list of {', '.join(map(repr, NOTIFY_EVENTS))}, not {on!r}")
    desktop = table.get("desktop", False)
    if not isinstance(desktop, bool):
        raise ConfigError(f"[notify] desktop must be true or false, not {desktop!r}")
    return NotifyConfig(command=command, on=tuple(on), desktop=desktop)


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
    log_file = data.get("log_file")
    if log_file is not None:
        log_file = _string(log_file, "log_file")
        log_file = log_file if log_file == "-" else str(Path(log_file).expanduser())
    max_bytes = _whole(data.get("log_max_bytes", 10 * 1024 * 1024), "log_max_bytes", minimum=4096)
    backups = _whole(data.get("log_backups", 5), "log_backups", minimum=1)
    days = _number(data.get("leave_in_queue_days", 10), "leave_in_queue_days", minimum=0.001)
    compact_days = _number(data.get("compact_after_days", 30), "compact_after_days", minimum=0.0)
    raw = data.get("schedd", [{"name": "local", "backend": "local"}])
    if not isinstance(raw, list) or not raw:
        raise ConfigError("schedd must be a non-empty list of [[schedd]] tables")
    schedds = tuple(_schedd(t, i) for i, t in enumerate(raw))
    names = [s.name for s in schedds]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"[[schedd]] name {n!r} is used more than once; names must be unique")
        if not n.replace("-", "").replace("_", "").replace(".", "").isalnum():
            hint = (f"; a schedd HTCondor names {n!r} is configured as name = {n.split('@')[0]!r}, "
                    f"schedd_name = {n!r}" if "@" in n else "")
            raise ConfigError(f"[[schedd]] name {n!r} may hold only letters, digits, '-', '_' and '.' "
                              f"(it is rsub's own name, used in ids like 12.0@NAME){hint}")
    unspooled = data.get("unspooled", "resubmit")
    if unspooled not in UNSPOOLED:
        raise ConfigError(f"unspooled must be one of {', '.join(map(repr, UNSPOOLED))}, not {unspooled!r}")
    raw_tokens = data.get("tokens", {})
    if not isinstance(raw_tokens, dict):
        raise ConfigError("tokens must be tables: [tokens.NAME]")
    tokens = {str(n): _token(str(n), t) for n, t in raw_tokens.items()}
    for s in schedds:
        if s.token is not None and s.token not in tokens:
            raise ConfigError(f"[[schedd]] {s.name!r} uses token {s.token!r}, but there is no [tokens.{s.token}]; "
                              f"configured: {', '.join(tokens) or 'none'}")
    if len(str(socket)) > 100:
        raise ConfigError(f"socket path {socket} is too long for a Unix socket (at most 100 characters)")
    try:
        jobsub = parse_jobsub(data.get("jobsub", {}))
    except JobsubConfigError as e:
        raise ConfigError(str(e)) from None
    try:
        policy = parse_policy(data.get("policy", {}))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Config(socket=socket, state_dir=state, log_level=level, log_file=log_file, log_max_bytes=max_bytes,
                  log_backups=backups, leave_in_queue_days=days, compact_after_days=compact_days,
                  schedds=schedds, tokens=tokens, unspooled=unspooled,
                  notify=_notify(data.get("notify", {})), jobsub=jobsub, policy=policy, source=source)
