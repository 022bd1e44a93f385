"""Telling the user when it matters: a command (no shell) and, if asked, a desktop notification.

The poller reports each job whose state changed once the ledger holds the change;
`Notifier.jobs_changed` runs the configured command for the states the user
asked about (default: completed, held, retrieved, failed), with the job's id,
state and exit code as arguments and as RSUB_* environment variables. A cluster
with many jobs changing at once gets one call for all of them (RSUB_COUNT), not
ten thousand processes. A job's own description can say `My.RsubNotify = "none"`
to stay quiet, or name its own command line there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from rsubd import submitdesc

log = structlog.get_logger("rsubd.services.notify")
# "done": a whole cluster is final (one call, with its summary); "released", "resubmitted": the hold policy acted.
EVENTS = ("completed", "held", "retrieved", "failed", "removed", "running", "done", "released", "resubmitted")
DEFAULT_EVENTS = ("completed", "held", "retrieved", "failed", "done", "released", "resubmitted")
PER_JOB_LIMIT = 5  # more jobs of one cluster changing to one state in one poll get one call
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class NotifyConfig:
    command: tuple[str, ...] | None = None
    on: tuple[str, ...] = DEFAULT_EVENTS
    desktop: bool = False


@dataclass(frozen=True)
class Change:
    """A job's new state, as the poller recorded it."""

    schedd: str
    cluster: int
    proc: int
    state: str
    exit_code: int | None = None
    hold_reason: str | None = None
    iwd: str | None = None


@dataclass
class Notifier:
    config: NotifyConfig
    per_cluster: Callable[[str, int], str | None] = lambda schedd, cluster: None  # the job's own setting
    spawn: Callable[[Sequence[str], dict[str, str]], Any] | None = None
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jobs_changed(self, changes: Sequence[Change]) -> int:
        """Run the notifications these changes call for; returns how many commands were started."""
        groups: dict[tuple[str, int, str], list[Change]] = {}
        for c in changes:
            if c.state in self.config.on:
                groups.setdefault((c.schedd, c.cluster, c.state), []).append(c)
        started = 0
        for (schedd, cluster, _state), jobs in groups.items():
            own = self.per_cluster(schedd, cluster)
            if own is not None and own.strip().lower() == "none":
                continue
            command = tuple(shlex.split(own)) if own else self.config.command
            batches = [[j] for j in jobs] if len(jobs) <= PER_JOB_LIMIT else [jobs]
            for batch in batches:
                if command:
                    started += self._run(command, batch)
                if self.config.desktop:
                    started += self._desktop(batch)
        return started

    def cluster_done(self, schedd: str, cluster: int, summary: dict[str, Any], text: str) -> int:
        """One call for a cluster whose jobs are all final: state `done`, its summary in RSUB_SUMMARY."""
        own = self.per_cluster(schedd, cluster)
        if "done" not in self.config.on or (own is not None and own.strip().lower() == "none"):
            return 0
        command = tuple(shlex.split(own)) if own else self.config.command
        job = f"{cluster}@{schedd}"
        env = {"RSUB_JOB_ID": job, "RSUB_CLUSTER": str(cluster), "RSUB_PROC": "", "RSUB_SCHEDD": schedd,
               "RSUB_STATE": "done", "RSUB_COUNT": str(summary["jobs"]), "RSUB_EXIT_CODE": "", "RSUB_HOLD_REASON": "",
               "RSUB_IWD": "", "RSUB_SUMMARY": text}
        started = self._start([*command, job, "done", ""], env) if command else 0
        if self.config.desktop and os.environ.get("DBUS_SESSION_BUS_ADDRESS") and (tool := shutil.which("notify-send")):
            started += self._start([tool, "--app-name=rsub", f"cluster {job} done", text], env)
        return started

    def _env(self, jobs: list[Change]) -> dict[str, str]:
        first = jobs[0]
        one = len(jobs) == 1
        job = f"{first.cluster}.{first.proc if one else '*'}@{first.schedd}"
        env = {"RSUB_JOB_ID": job, "RSUB_CLUSTER": str(first.cluster), "RSUB_PROC": str(first.proc) if one else "",
               "RSUB_SCHEDD": first.schedd, "RSUB_STATE": first.state, "RSUB_COUNT": str(len(jobs)),
               "RSUB_EXIT_CODE": "" if first.exit_code is None or not one else str(first.exit_code),
               "RSUB_HOLD_REASON": (first.hold_reason or "") if one else "", "RSUB_IWD": first.iwd or ""}
        return env

    def _run(self, command: tuple[str, ...], jobs: list[Change]) -> int:
        env = self._env(jobs)
        argv = [*command, env["RSUB_JOB_ID"], env["RSUB_STATE"], env["RSUB_EXIT_CODE"]]
        return self._start(argv, env)

    def _desktop(self, jobs: list[Change]) -> int:
        if not (os.environ.get("DBUS_SESSION_BUS_ADDRESS") or os.environ.get("DISPLAY")
                or os.environ.get("WAYLAND_DISPLAY")):
            return 0
        tool = shutil.which("notify-send")
        if tool is None:
            return 0
        env = self._env(jobs)
        body = f"exit {env['RSUB_EXIT_CODE']}" if env["RSUB_EXIT_CODE"] else env["RSUB_HOLD_REASON"] or env["RSUB_IWD"]
        count = f" ({len(jobs)} jobs)" if len(jobs) > 1 else ""
        return self._start([tool, "--app-name=rsub", f"{env['RSUB_JOB_ID']} {env['RSUB_STATE']}{count}", body], env)

    def _start(self, argv: list[str], extra: dict[str, str]) -> int:
        env = {**os.environ, **extra}
        for key in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "BEARER_TOKEN"):
            env.pop(key, None)
        try:
            if self.spawn is not None:
                self.spawn(argv, env)
            else:
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
                threading.Thread(target=_reap, args=(proc, argv[0]), daemon=True, name="notify-reaper").start()
        except OSError as e:
            log.warning("notify.failed", command=argv[0], error=e.strerror)
            return 0
        with self._lock:
            self.sent += 1
        log.info("notify.sent", command=argv[0], job=extra.get("RSUB_JOB_ID"), state=extra.get("RSUB_STATE"))
        return 1


def _reap(proc: subprocess.Popen[bytes], name: str) -> None:
    """Wait for a notify command; one that outstays its welcome is stopped."""
    try:
        code = proc.wait(COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        log.warning("notify.timeout", command=name, timeout=COMMAND_TIMEOUT)
        return
    if code:
        log.warning("notify.command_failed", command=name, status=code)


def cluster_setting(description: str | None) -> str | None:
    """A cluster's own `My.RsubNotify` (or `+RsubNotify`), from its submitted description."""
    if not description or "rsubnotify" not in description.lower():
        return None
    try:
        desc = submitdesc.parse(description, cwd="/")
    except submitdesc.SubmitError:
        return None
    value = desc.get("My.RsubNotify") or desc.get("+RsubNotify")
    return value.strip().strip('"') if value else None


class ClusterSettings:
    """Each cluster's own notify setting, read from its description once; the most recent `size` kept.

    A notification comes when a cluster's jobs change, so the clusters asked about are the few in
    flight: a bound keeps a daemon that runs for months from holding one entry per cluster it ever saw.
    """

    def __init__(self, descriptions: Callable[[str, list[int]], Mapping[int, tuple[str, str]]], *,
                 size: int = 4096) -> None:
        self._descriptions = descriptions
        self._size = size
        self._kept: dict[tuple[str, int], str | None] = {}
        self._lock = threading.Lock()

    def __call__(self, schedd: str, cluster: int) -> str | None:
        key = (schedd, cluster)
        with self._lock:
            if key in self._kept:
                self._kept[key] = self._kept.pop(key)  # the most recent last
                return self._kept[key]
        described = self._descriptions(schedd, [cluster]).get(cluster)
        setting = cluster_setting(described[0] if described else None)
        with self._lock:
            self._kept[key] = setting
            while len(self._kept) > self._size:
                del self._kept[next(iter(self._kept))]
        return setting
