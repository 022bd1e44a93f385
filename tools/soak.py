"""Soak harness: a real rsubd under a mixed random workload for N minutes, audited for poll stalls.

    .venv/bin/python tools/soak.py --minutes 10 --seed 7 [--workdir DIR] [--json] [--quiet]

One rsubd on the embedded scheduler (`poll_interval = 1`, a `faults_file`) runs
under real `rsub` command lines driven by `random.Random(seed)`: bursts of
submits (each cluster from its own directory, every output byte known in
advance), `rsub wait` on many ids (some in the background), `rsub poke`,
holds then releases, removes, reads (`q`, `status`, `history`), a few schedd
faults written to the faults file and cleared again, and a few restarts of
rsubd (`rsub daemon stop`, or SIGKILL). An auditor thread reads
`rsub daemon status --json` every 5 s and checks that every schedd with jobs in
flight was polled within its bound. At the end the faults are cleared, every
job is given a bounded time to reach a final state, and every job not removed
by the workload must be `retrieved` with its output byte for byte. The report
(a summary, or JSON with `--json`) is on stdout, progress on stderr; the exit
status is 0 only if stalls, lost and stuck are all 0 (2 if rsubd would not
start). docs/soak.md explains every figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests` (the repository) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rsub.wire.vocabulary import ACTIVE_STATES as ACTIVE
from rsub.wire.vocabulary import FINAL_STATES as FINAL
from tests.support.daemon import BIN, Rsubd, StartFailure, short_root

CONFIG = """\
log_level = "info"

[[schedd]]
name = "local"
backend = "local"
poll_interval = 1
faults_file = "{faults}"
"""
AUDIT_EVERY = 5.0  # seconds between two audits
SLACK = 5.0  # seconds a poll may be late past its bound before the auditor calls it a stall
MARGIN = 1.0  # seconds of measurement error (whole-second timestamps in the fallback, request latency)
GRACE = 5.0  # seconds after a restart during which the auditor does not check
POLL_DURATION_LIMIT = 30.0  # seconds one poll may run (plus any injected slowness) before it is a stall
BACKOFF_WINDOW = 30.0  # seconds after a fault during which a backoff up to backoff_max is expected
MAX_IN_FLIGHT = 24  # no new submit burst while this many jobs are active or being submitted
START_TIMEOUT = 20.0  # seconds rsubd may take to answer after it is started
STOP_TIMEOUT = 30.0  # seconds a graceful stop may take before SIGKILL
SUBMIT_CLIENT_TIMEOUT = 150.0  # a submit client retries for up to 120 s while rsubd is away
SLEEPS = ("0", "0", "0.1", "0.2", "0.4", "0.7", "1.2", "2")
STALL_LOG_LINES = {
    "max_instances_reached": re.compile(r"maximum number of running instances reached"),
    "poll_stalled": re.compile(r"poll\.stalled"),
    "poll_crashed": re.compile(r"poll\.crashed"),
    "tracebacks": re.compile(r"^Traceback ", re.M),
}
DESCRIPTION = """\
executable = /bin/sh
arguments = "-c 'echo {token} $(Process) ; echo {token} err $(Process) >&2 ; \
echo {token} res $(Process) > res.txt ; sleep {sleep}'"
output = out_$(Process).txt
error = err_$(Process).txt
transfer_output_files = res.txt
transfer_output_remaps = "res.txt = res_$(Process).txt"
queue {procs}
"""


@dataclass
class Cluster:
    """One `rsub submit` of the workload: its directory, the token its jobs echo, and what the client said."""

    index: int
    directory: Path
    token: str
    procs: int
    outcome: str = "pending"  # pending | ok | failed
    cluster: int | None = None
    message: str = ""
    removed: set[int] = field(default_factory=set)  # procs the workload removed (all of them for a cluster rm)

    def expected(self, proc: int) -> dict[Path, bytes]:
        """Each output file of one job and the exact bytes it must hold."""
        d, t = self.directory, self.token
        return {d / f"out_{proc}.txt": f"{t} {proc}\n".encode(),
                d / f"err_{proc}.txt": f"{t} err {proc}\n".encode(),
                d / f"res_{proc}.txt": f"{t} res {proc}\n".encode()}

    def job_ids(self) -> list[str]:
        return [f"{self.cluster}.{p}@local" for p in range(self.procs)]


@dataclass
class Background:
    """An rsub client running on its own (submit or wait), its output in files, killed at its deadline."""

    kind: str
    proc: subprocess.Popen[bytes]
    deadline: float
    out: Path
    err: Path
    cluster: Cluster | None = None


@dataclass
class Fault:
    plan: dict[str, Any]
    seconds: float

    def label(self) -> str:
        p = self.plan
        ops = ",".join(p.get("ops", ())) or "all"
        extra = f" {p['seconds']} s" if "seconds" in p else f" p={p['probability']}" if "probability" in p else ""
        return f"{p['mode']} {ops}{extra} for {self.seconds:.1f} s"

    def slowness(self) -> float:
        """How much longer than usual one poll may take while this fault is in force."""
        if self.plan["mode"] in ("slow", "hang"):
            # Each call a poll makes (query, history, retrieve, edit, recovery's) may be slowed.
            return float(self.plan["seconds"]) * (1 if self.plan.get("ops") == ["query"] else 6)
        return 0.0


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return float(text) if isinstance(text, (int, float)) else None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Soak:
    def __init__(self, root: Path, runtime: Path, minutes: float, seed: int, drain: float, quiet: bool) -> None:
        self.root = root
        self.minutes = minutes
        self.seed = seed
        self.drain = drain
        self.quiet = quiet
        # Two streams: the plan (when to restart and how, which faults) depends on the seed alone; the
        # workload's choices are seeded too, but how many are drawn depends on timing.
        self.plan = random.Random(f"soak-plan-{seed}")
        self.rng = random.Random(f"soak-workload-{seed}")
        self.work = root / "work"
        self.clients = root / "clients"
        self.work.mkdir(parents=True, exist_ok=True)
        self.clients.mkdir(parents=True, exist_ok=True)
        self.faults_file = root / "faults.json"
        self.rsubd = Rsubd(root, CONFIG.format(faults=self.faults_file), runtime=runtime)
        self.log = self.rsubd.log
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.generation = 0
        self.up_since: float | None = None  # wall time rsubd last answered after a start; None while down
        self.runs = 0
        self.restarts: Counter[str] = Counter()
        self.clusters: list[Cluster] = []
        self.background: list[Background] = []
        self.to_release: dict[str, float] = {}  # job id -> when to release it
        self.fault: Fault | None = None
        self.fault_until = 0.0
        self.faults: list[str] = []
        self.last_fault_wall: float | None = None  # wall time a fault was last in force
        self.commands: Counter[str] = Counter()
        self.command_failures: Counter[str] = Counter()
        self.problems: list[str] = []
        # The auditor's figures.
        self.audits = 0
        self.audits_skipped = 0
        self.violations: list[dict[str, Any]] = []
        self.stall_episodes = 0
        self.in_stall: dict[str, bool] = {}
        self.max_gap: dict[str, float] = {}
        self.last_errors: dict[str, int] = {}
        self.counters: dict[int, dict[str, int]] = {}  # rsubd pid -> its latest polls and stalls (reset at restart)
        self.in_flight = 0
        self.rss_start: int | None = None
        self.rss_end: int | None = None
        self.rss_max = 0
        self.used_fallback = False
        self.used_liveness_fields = False
        self._stop_audit = threading.Event()

    # -- output -----------------------------------------------------------------

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", file=sys.stderr, flush=True)

    def problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < 200:
                self.problems.append(text)

    # -- rsub commands ------------------------------------------------------------

    def rsub(self, *args: str, cwd: Path | None = None, timeout: float = 30.0,
             ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        """One rsub command line; a failure is counted, never raised."""
        name = args[0] if args[0] != "daemon" else f"daemon {args[1]}"
        with self.lock:
            self.commands[name] += 1
        try:
            result = self.rsubd.rsub(*args, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(list(args), 124, "", f"timed out after {timeout:g} s")
        except OSError as e:
            result = subprocess.CompletedProcess(list(args), 127, "", str(e))
        if result.returncode not in ok:
            with self.lock:
                self.command_failures[f"{name} exit {result.returncode}"] += 1
            if result.returncode not in (3, 6, 7):  # rsubd away, a wait timing out, the schedd refusing: expected
                self.problem(f"rsub {' '.join(args)[:120]}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
        return result

    def json_of(self, *args: str, timeout: float = 30.0) -> Any:
        result = self.rsub(*args, "--json", timeout=timeout)
        if result.returncode != 0:
            return None
        try:
            return json.loads(result.stdout)
        except ValueError:
            self.problem(f"rsub {' '.join(args)} --json: unreadable output {result.stdout[:200]!r}")
            return None

    def spawn(self, kind: str, args: list[str], cwd: Path | None, timeout: float,
              cluster: Cluster | None = None) -> None:
        n = len(list(self.clients.iterdir()))
        out, err = self.clients / f"{n:05d}-{kind}.out", self.clients / f"{n:05d}-{kind}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([str(BIN / "rsub"), *args], env=self.rsubd.env, cwd=cwd, stdout=o, stderr=e)
        with self.lock:
            self.commands[kind] += 1
        self.background.append(Background(kind, proc, time.monotonic() + timeout, out, err, cluster))

    def reap(self, force: bool = False) -> None:
        """Collect background clients that finished; kill those past their deadline (or all, with force)."""
        for b in list(self.background):
            code = b.proc.poll()
            if code is None:
                if not force and time.monotonic() < b.deadline:
                    continue
                b.proc.kill()
                b.proc.wait()
                code = 124
            self.background.remove(b)
            out = b.out.read_text(errors="replace")
            err = b.err.read_text(errors="replace")
            expected = (0, 6) if b.kind == "wait" else (0,)  # a wait may time out: that is its answer
            if code not in expected:
                with self.lock:
                    self.command_failures[f"{b.kind} exit {code}"] += 1
                if code not in (3, 7):
                    self.problem(f"background {b.kind} ({b.out.name}): exit {code}: {err.strip()[-300:]}")
            if b.cluster is not None:
                self.submitted(b.cluster, code, out, err)

    def submitted(self, c: Cluster, code: int, out: str, err: str) -> None:
        with self.lock:
            self.in_flight -= c.procs
        if code == 0:
            try:
                c.cluster = int(json.loads(out)["cluster"])
                c.outcome = "ok"
                return
            except (ValueError, KeyError, TypeError):
                c.message = f"exit 0 but unreadable output {out[:200]!r}"
        else:
            c.message = f"exit {code}: {err.strip()[-300:]}"
        c.outcome = "failed"
        self.say(f"submit {c.directory.name}: {c.message[:160]}")

    # -- rsubd ----------------------------------------------------------------------

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        try:
            daemon = self.rsubd.start(timeout=START_TIMEOUT, note=f"soak: rsubd run {self.runs}")
        except StartFailure as e:
            raise StartFailure(f"rsubd run {self.runs} did not start: {e}") from None
        with self.lock:
            self.generation += 1
            self.up_since = time.time()
            self.in_stall.clear()
            self.last_errors.clear()  # counters start again from 0
        rss = rss_kb(daemon.pid)
        if self.rss_start is None:
            self.rss_start = rss
        self.rss_max = max(self.rss_max, rss or 0)
        return daemon

    def stop(self, how: str) -> None:
        """Stop rsubd: "graceful" (rsub daemon stop) or "kill" (SIGKILL). Counters are read first."""
        proc = self.rsubd.proc
        if proc is None or proc.poll() is not None:
            return
        self.snapshot()
        with self.lock:
            self.generation += 1
            self.up_since = None
        if how == "graceful":
            self.rsub("daemon", "stop", timeout=15)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.problem(f"rsubd run {self.runs} did not stop within {STOP_TIMEOUT:g} s of rsub daemon stop")
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                self.problem(f"rsubd run {self.runs} exited {proc.returncode} on rsub daemon stop")
        else:
            proc.kill()
            proc.wait()

    def restart(self, how: str, pause: float) -> None:
        self.say(f"restart: {'rsub daemon stop' if how == 'graceful' else 'SIGKILL'}")
        self.stop(how)
        time.sleep(pause)
        daemon = self.start()
        self.restarts[how] += 1
        self.say(f"restart: rsubd run {self.runs} answering (pid {daemon.pid})")

    def snapshot(self) -> dict[str, Any] | None:
        """`rsub daemon status --json`, folding its counters into the per-process record."""
        status: dict[str, Any] | None = self.json_of("daemon", "status", timeout=15)
        if status is not None:
            self.fold(status)
        return status

    def fold(self, status: dict[str, Any]) -> None:
        pid = status.get("pid")
        if not isinstance(pid, int):
            return
        schedds = status.get("schedds", {}).values()
        with self.lock:
            self.counters[pid] = {"polls": sum(int(s.get("polls") or 0) for s in schedds),
                                  "stalls": sum(int(s.get("stalls") or 0) for s in schedds)}
        rss = rss_kb(pid)
        if rss:
            self.rss_max = max(self.rss_max, rss)

    # -- the auditor ----------------------------------------------------------------------

    def auditor(self) -> None:
        while not self._stop_audit.wait(AUDIT_EVERY):
            try:
                self.audit_once()
            except Exception as e:  # noqa: BLE001 - the auditor must keep going; what broke is reported
                self.problem(f"auditor: {type(e).__name__}: {e}")

    def audit_once(self) -> None:
        with self.lock:
            generation, up_since = self.generation, self.up_since
        if up_since is None or time.time() - up_since < GRACE:
            with self.lock:
                self.audits_skipped += 1
            return
        status = self.json_of("daemon", "status", timeout=15)
        now = time.time()
        with self.lock:
            if self.generation != generation or self.up_since is None:  # restarted meanwhile: not this run's view
                self.audits_skipped += 1
                return
        if status is None:
            self.violation("rsubd", {"gap": None, "allowed": None, "why": "rsub daemon status did not answer"})
            return
        self.fold(status)
        fallback = None
        for name, s in status.get("schedds", {}).items():
            if not isinstance(s, dict):
                continue
            active = sum(n for st, n in (s.get("jobs") or {}).items() if st in ACTIVE)
            if "seconds_since_poll_ended" not in s and active and fallback is None:
                fallback = self.earliest_active(now)
            self.check(name, s, active, now, up_since, fallback or {})
        with self.lock:
            self.audits += 1
            self.in_stall["rsubd"] = False

    def earliest_active(self, now: float) -> dict[str, float]:
        """Per schedd, when its oldest job still in flight was submitted (the old status has no idle polls)."""
        states = [a for st in ACTIVE for a in ("--state", st)]
        data = self.json_of("status", *states, "--limit", "100000", timeout=15) or {}
        out: dict[str, float] = {}
        for job in data.get("jobs", []):
            at = parse_time(job.get("submitted_at"))
            if at is not None:
                out[job["schedd"]] = min(out.get(job["schedd"], now), at)
        return out

    def allowance(self, name: str, s: dict[str, Any], now: float) -> tuple[float, float]:
        """(longest delay the schedule may take now, extra time one poll may take now)."""
        jitter = float(s.get("jitter") or 0.1)
        in_force = float(s.get("interval_in_force") or s.get("poll_interval") or 1.0)
        delay = in_force * (1 + jitter)
        errors = int(s.get("errors") or 0)
        with self.lock:
            fault, last_fault = self.fault, self.last_fault_wall
        grew = errors > self.last_errors.get(name, errors)
        self.last_errors[name] = errors
        recent_fault = fault is not None or (last_fault is not None and now - last_fault < BACKOFF_WINDOW)
        if s.get("backing_off") or grew or recent_fault:
            # A backoff started since the last audit, or one that a submit's success reset while its
            # long delay was already scheduled: either may stretch the gap up to the backoff cap.
            delay = max(delay, float(s.get("backoff_max") or delay))
        slowness = fault.slowness() if fault is not None else 0.0
        if recent_fault:
            slowness = max(slowness, 18.0)  # a slow or hang fault cleared mid-poll: its calls may still be waiting
        return delay, slowness

    def check(self, name: str, s: dict[str, Any], active: int, now: float, up_since: float,
              fallback: dict[str, float]) -> None:
        if not active:
            with self.lock:
                self.in_stall[name] = False
            return
        since_up = now - up_since
        delay, slowness = self.allowance(name, s, now)
        allowed = delay + SLACK + MARGIN
        duration = None
        if "seconds_since_poll_ended" in s:
            self.used_liveness_fields = True
            since_end, since_start = s.get("seconds_since_poll_ended"), s.get("seconds_since_poll_started")
            polling = bool(s.get("polling"))
            if polling and since_start is not None:
                duration = float(since_start)
                # The gap is from the last poll's end to this one's start.
                gap = (float(since_end) if since_end is not None else since_up) - duration
            else:
                gap = float(since_end) if since_end is not None else since_up
        else:
            self.used_fallback = True
            started = parse_time(s.get("last_poll_at"))
            # last_poll_at is when the last poll that had jobs to look at started (whole seconds).
            gap = since_up if started is None else now - started - float(s.get("last_poll_duration") or 0.0)
            # Polls with nothing tracked leave no trace in the old status: the gap runs at most from
            # when the oldest job in flight was submitted.
            oldest = fallback.get(name)
            if oldest is not None:
                gap = min(gap, now - oldest)
        gap = min(gap, since_up)
        with self.lock:
            self.max_gap[name] = max(self.max_gap.get(name, 0.0), round(gap, 2))
        why = None
        if gap > allowed:
            why = f"no poll for {gap:.1f} s with {active} job(s) in flight (allowed {allowed:.1f} s)"
        elif duration is not None and duration > POLL_DURATION_LIMIT + slowness:
            why = f"a poll has run for {duration:.1f} s (allowed {POLL_DURATION_LIMIT + slowness:.1f} s)"
        if why is None:
            with self.lock:
                self.in_stall[name] = False
            return
        keep = ("polling", "last_poll_at", "last_poll_started_at", "last_poll_ended_at", "seconds_since_poll_started",
                "seconds_since_poll_ended", "next_poll_at", "next_poll_in", "poll_bound", "stalls", "schedule_alive",
                "interval_in_force", "backing_off", "consecutive_errors", "last_outcome", "last_error", "polls")
        self.violation(name, {"gap": round(gap, 2), "allowed": round(allowed, 2), "why": why,
                              "active": active, **{k: s[k] for k in keep if k in s}})

    def violation(self, name: str, details: dict[str, Any]) -> None:
        with self.lock:
            record = {"at": round(time.monotonic() - self.t0, 1), "schedd": name, "rsubd_run": self.runs, **details}
            first = not self.in_stall.get(name)
            if first:
                self.stall_episodes += 1
            self.in_stall[name] = True
            record["episode"] = self.stall_episodes
            if len(self.violations) < 200:
                self.violations.append(record)
            repeats = sum(1 for v in self.violations if v["episode"] == self.stall_episodes)
        if first or repeats % 6 == 0:
            self.say(f"AUDIT: stall {record['episode']} on {name}: {details['why']}")

    # -- the workload -------------------------------------------------------------------

    def write_cluster(self) -> Cluster:
        index = len(self.clusters)
        directory = self.work / f"c{index:04d}"
        directory.mkdir()
        token = f"soak{self.seed}-{index}-{self.rng.getrandbits(40):010x}"
        procs = self.rng.randint(1, 4)
        (directory / "job.sub").write_text(DESCRIPTION.format(token=token, procs=procs,
                                                              sleep=self.rng.choice(SLEEPS)))
        c = Cluster(index, directory, token, procs)
        self.clusters.append(c)
        return c

    def active_jobs(self) -> int:
        status = self.json_of("daemon", "status", timeout=15)
        if status is None:
            return 0
        self.fold(status)
        return sum(n for s in status.get("schedds", {}).values() for st, n in (s.get("jobs") or {}).items()
                   if st in ACTIVE)

    def ok_clusters(self) -> list[Cluster]:
        return [c for c in self.clusters if c.outcome == "ok"]

    def submit_burst(self) -> None:
        with self.lock:
            in_flight = self.in_flight
        if self.active_jobs() + in_flight >= MAX_IN_FLIGHT:
            return
        for _ in range(self.rng.randint(1, 4)):
            c = self.write_cluster()
            with self.lock:
                self.in_flight += c.procs
            self.spawn("submit", ["submit", "--json", "job.sub"], c.directory, SUBMIT_CLIENT_TIMEOUT, cluster=c)

    def some_ids(self, most: int) -> list[str]:
        clusters = self.ok_clusters()[-30:]
        if not clusters:
            return []
        ids = []
        for c in self.rng.sample(clusters, min(len(clusters), self.rng.randint(1, most))):
            if self.rng.random() < 0.5:
                ids.append(str(c.cluster))
            else:
                ids.extend(self.rng.sample(c.job_ids(), self.rng.randint(1, c.procs)))
        return ids

    def wait_background(self) -> None:
        ids = self.some_ids(20)
        if ids:
            timeout = round(self.rng.uniform(3, 25), 1)
            self.spawn("wait", ["wait", "--timeout", str(timeout), *ids], None, timeout + 45)

    def wait_foreground(self) -> None:
        ids = self.some_ids(6)
        if ids:
            timeout = round(self.rng.uniform(0.5, 4), 1)
            self.rsub("wait", "--timeout", str(timeout), *ids, timeout=timeout + 30, ok=(0, 6))

    def hold(self) -> None:
        clusters = self.ok_clusters()[-8:]
        if not clusters:
            return
        c = self.rng.choice(clusters)
        job = self.rng.choice(c.job_ids())
        data = self.json_of("status", job, timeout=15)
        states = {j["id"]: j["state"] for j in (data or {}).get("jobs", [])}
        if states.get(job) not in ("idle", "running"):
            return
        # Whatever the answer, the hold may have happened: release it later in any case.
        self.to_release[job] = time.monotonic() + self.rng.uniform(0.5, 4.0)
        self.rsub("hold", "--reason", "soak", job)

    def release_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for job, due in list(self.to_release.items()):
            if everything or due <= now:
                result = self.rsub("release", job, ok=(0, 4))
                if result.returncode in (0, 4):
                    del self.to_release[job]

    def remove(self) -> None:
        clusters = [c for c in self.ok_clusters()[-10:] if len(c.removed) < c.procs]
        if not clusters:
            return
        c = self.rng.choice(clusters)
        if self.rng.random() < 0.5:
            target, procs = str(c.cluster), set(range(c.procs))
        else:
            proc = self.rng.randrange(c.procs)
            target, procs = f"{c.cluster}.{proc}", {proc}
        c.removed |= procs  # before the call: whatever the client hears, the remove may have happened
        for p in procs:
            self.to_release.pop(f"{c.cluster}.{p}@local", None)
        self.say(f"rm {target}")
        self.rsub("rm", "--reason", "soak", target)

    def read(self) -> None:
        what = self.rng.choice((("q",), ("status", "--limit", "200"), ("history", "--limit", "50")))
        self.json_of(*what, timeout=30)

    def draw_fault(self) -> Fault:
        r = self.plan
        plan: dict[str, Any] = r.choice([
            {"mode": "fail", "ops": ["query"]},
            {"mode": "refuse"},
            {"mode": "slow", "seconds": round(r.uniform(0.5, 2.0), 1), "ops": ["query"]},
            {"mode": "hang", "seconds": round(r.uniform(1.0, 3.0), 1), "ops": ["query"]},
            {"mode": "random", "probability": 0.3},
            {"mode": "fail", "ops": ["retrieve"], "kind": "transfer_failed"},
        ])
        return Fault(plan, round(r.uniform(3.0, 8.0), 1))

    def inject(self, fault: Fault, now: float) -> None:
        self.write_faults(fault.plan)
        with self.lock:
            self.fault = fault
            self.last_fault_wall = time.time()
        self.fault_until = now + fault.seconds
        self.faults.append(fault.label())
        self.say(f"fault: {fault.label()}")

    def clear_fault(self) -> None:
        self.write_faults({})
        with self.lock:
            had, self.fault = self.fault, None
            if had is not None:
                self.last_fault_wall = time.time()
        if had is not None:
            self.say("fault: cleared")

    def write_faults(self, plan: dict[str, Any]) -> None:
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        tmp.replace(self.faults_file)  # atomic: rsubd never reads half a plan

    def workload(self) -> None:
        duration = self.minutes * 60.0
        r, p = self.rng, self.plan
        n_restarts = max(1, round(self.minutes * 1.5))
        n_faults = max(1, round(self.minutes * 2))
        # The plan, drawn up front: (when, how, pause before the start) and (when, fault).
        restarts = sorted((self.t0 + p.uniform(0.15, 0.8) * duration, p.choice(("graceful", "kill")),
                           round(p.uniform(0.2, 1.5), 2)) for _ in range(n_restarts))
        faults = sorted(((self.t0 + p.uniform(0.1, 0.75) * duration, self.draw_fault()) for _ in range(n_faults)),
                        key=lambda f: f[0])
        actions = [(self.submit_burst, 3.0), (self.wait_background, 2.0), (self.wait_foreground, 0.5),
                   (lambda: self.rsub("poke"), 1.5), (self.hold, 1.2), (self.remove, 0.3), (self.read, 1.0)]
        end = self.t0 + duration
        while time.monotonic() < end:
            now = time.monotonic()
            self.reap()
            if self.fault is not None and now >= self.fault_until:
                self.clear_fault()
            if faults and now >= faults[0][0] and self.fault is None:
                self.inject(faults.pop(0)[1], now)
            if restarts and now >= restarts[0][0]:
                _, how, pause = restarts.pop(0)
                self.restart(how, pause)
                continue
            self.release_due()
            action = r.choices([a for a, _ in actions], weights=[w for _, w in actions])[0]
            action()
            time.sleep(r.uniform(0.1, 0.8))
        # What was due and did not happen yet (a long foreground call, a late fault) still happens once.
        for _, how, pause in restarts:
            self.restart(how, pause)
        if faults and self.fault is None:
            self.inject(faults[0][1], time.monotonic())
            time.sleep(min(self.fault_until - time.monotonic(), 3.0))

    # -- the end ------------------------------------------------------------------------

    def final(self) -> list[dict[str, Any]]:
        """Stop injecting, let every job finish (bounded), and return every job in the ledger."""
        self.clear_fault()
        deadline = time.monotonic() + self.drain
        if self.rsubd.proc is None or self.rsubd.proc.poll() is not None:
            self.problem("rsubd was not running at the end of the workload; starting it")
            self.start()
        while self.background and time.monotonic() < deadline:
            self.reap()
            self.release_due()
            time.sleep(0.2)
        self.reap(force=True)
        self.release_due(everything=True)
        self.say("final: clients done; waiting for every job to be final")
        ids = [str(c.cluster) for c in self.ok_clusters()]
        if ids:
            left = max(1.0, deadline - time.monotonic())
            self.rsub("wait", "--timeout", str(round(min(left, 60.0), 1)), *ids, timeout=min(left, 60.0) + 30,
                      ok=(0, 6))
        jobs: list[dict[str, Any]] = []
        last_poke = 0.0
        while True:
            data = self.json_of("status", "--limit", "100000", timeout=30)
            if data is not None:
                jobs = data.get("jobs", [])
            open_jobs = [j for j in jobs if j.get("state") not in FINAL]
            if data is not None and not open_jobs:
                break
            if time.monotonic() >= deadline:
                self.say(f"final: {len(open_jobs)} job(s) not final after the drain")
                break
            for j in open_jobs:  # a hold the workload made and could not undo
                if j.get("state") == "held":
                    self.rsub("release", j["id"], ok=(0, 4))
            if time.monotonic() - last_poke > 5:
                self.rsub("poke")
                last_poke = time.monotonic()
            time.sleep(1.0)
        self.say(f"final: drained after {self.drain - max(0.0, deadline - time.monotonic()):.1f} s")
        self.snapshot()
        self.rss_end = rss_kb(self.rsubd.proc.pid if self.rsubd.proc else None)
        return jobs

    def verify(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        by_id = {j["id"]: j for j in jobs}
        counts: Counter[str] = Counter()
        ours = set()
        for c in self.clusters:
            if c.outcome != "ok":
                continue
            counts["clusters_submitted"] += 1
            for p, job in enumerate(c.job_ids()):
                ours.add(job)
                counts["jobs_submitted"] += 1
                j = by_id.get(job)
                state = j.get("state") if j else None
                if j is None:
                    counts["lost"] += 1
                    self.problem(f"lost: {job} ({c.directory.name}) is not in the ledger")
                elif state == "retrieved":
                    bad = [str(path.name) for path, want in c.expected(p).items()
                           if not path.is_file() or path.read_bytes() != want]
                    if bad:
                        counts["lost"] += 1
                        self.problem(f"lost: {job} ({c.directory.name}) retrieved but output missing or wrong: {bad}")
                    else:
                        counts["retrieved"] += 1
                elif state == "removed" and p in c.removed:
                    counts["removed"] += 1
                elif state in FINAL:
                    counts["lost"] += 1
                    why = j.get("error") or j.get("remove_reason") or j.get("hold_reason")
                    self.problem(f"lost: {job} ({c.directory.name}) ended {state}" + (f": {why}" if why else "")
                                 + (" without rsub rm" if state == "removed" else ""))
                else:
                    counts["stuck"] += 1
                    self.problem(f"stuck: {job} ({c.directory.name}) still {state} at the end")
        for j in jobs:  # jobs of submits whose client failed or was cut off: none may be left in flight
            if j["id"] not in ours and j.get("state") not in FINAL:
                counts["stuck"] += 1
                self.problem(f"stuck: {j['id']} (a submit the workload was not told of) still {j.get('state')}")
        counts["submits_failed"] = sum(1 for c in self.clusters if c.outcome != "ok")
        return counts

    def log_findings(self) -> dict[str, int]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {}
        return {name: len(pattern.findall(text)) for name, pattern in STALL_LOG_LINES.items()}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.write_faults({})
        daemon = self.start()
        self.say(f"rsubd answering (pid {daemon.pid}); workload for {self.minutes:g} min, seed {self.seed},"
                 f" in {self.root}")
        auditor = threading.Thread(target=self.auditor, name="auditor", daemon=True)
        auditor.start()
        jobs: list[dict[str, Any]] = []
        try:
            self.workload()
            jobs = self.final()
        finally:
            self._stop_audit.set()
            auditor.join(timeout=30)
            self.reap(force=True)
            try:
                self.stop("graceful")
            finally:
                if self.rsubd.proc is not None and self.rsubd.proc.poll() is None:
                    self.rsubd.proc.kill()
                    self.rsubd.proc.wait()
                self.rsubd.kill_leftover_jobs()
        counts = self.verify(jobs)
        rsubd_stalls = sum(c["stalls"] for c in self.counters.values())
        stalls = self.stall_episodes + rsubd_stalls
        report: dict[str, Any] = {
            "minutes": self.minutes,
            "seed": self.seed,
            "seconds": round(time.monotonic() - started, 1),
            "polls": sum(c["polls"] for c in self.counters.values()),
            "stalls": stalls,
            "stalls_auditor": self.stall_episodes,
            "stalls_rsubd": rsubd_stalls,
            "audits": self.audits,
            "audits_skipped": self.audits_skipped,
            "audit_violations": len(self.violations),
            "audit_fields": "liveness" if self.used_liveness_fields else "last_poll_at" if self.used_fallback else None,
            "longest_poll_gap": self.max_gap,
            "clusters_submitted": counts["clusters_submitted"],
            "jobs_submitted": counts["jobs_submitted"],
            "retrieved": counts["retrieved"],
            "removed": counts["removed"],
            "lost": counts["lost"],
            "stuck": counts["stuck"],
            "submits_failed": counts["submits_failed"],
            "restarts": sum(self.restarts.values()),
            "restarts_graceful": self.restarts["graceful"],
            "restarts_killed": self.restarts["kill"],
            "rsubd_runs": self.runs,
            "faults": len(self.faults),
            "fault_plans": self.faults,
            "rss_start_kb": self.rss_start,
            "rss_end_kb": self.rss_end,
            "rss_max_kb": self.rss_max or None,
            "commands": dict(sorted(self.commands.items())),
            "command_failures": dict(sorted(self.command_failures.items())),
            "log": self.log_findings(),
            "violations": self.violations,
            "problems": self.problems,
        }
        report["ok"] = stalls == 0 and counts["lost"] == 0 and counts["stuck"] == 0
        return report


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.1f} MB"


def summary(r: dict[str, Any]) -> str:
    gaps = ", ".join(f"{n} {g:.1f} s" for n, g in r["longest_poll_gap"].items()) or "none measured"
    lines = [
        f"rsub soak: {r['minutes']:g} min, seed {r['seed']}: {'PASS' if r['ok'] else 'FAIL'} ({r['seconds']} s)",
        f"  polls     {r['polls']} over {r['rsubd_runs']} rsubd run(s)",
        f"  stalls    {r['stalls']} (auditor {r['stalls_auditor']} in {r['audits']} audits, "
        f"{r['audit_violations']} violating; rsubd's own {r['stalls_rsubd']}); longest gap: {gaps}",
        f"  jobs      {r['jobs_submitted']} submitted in {r['clusters_submitted']} clusters "
        f"({r['submits_failed']} submits failed): {r['retrieved']} retrieved, {r['removed']} removed, "
        f"{r['lost']} lost, {r['stuck']} stuck",
        f"  restarts  {r['restarts']} ({r['restarts_graceful']} rsub daemon stop, {r['restarts_killed']} SIGKILL)",
        f"  faults    {r['faults']}: {'; '.join(r['fault_plans']) or '-'}",
        f"  rsubd RSS {mb(r['rss_start_kb'])} at start, {mb(r['rss_end_kb'])} at end, {mb(r['rss_max_kb'])} at most",
        "  commands  " + ", ".join(f"{k} {v}" for k, v in r["commands"].items()),
    ]
    if r["command_failures"]:
        lines.append("  failed    " + ", ".join(f"{k}: {v}" for k, v in r["command_failures"].items()))
    if any(r["log"].values()):
        lines.append("  rsubd log " + ", ".join(f"{k} {v}" for k, v in r["log"].items() if v))
    episodes: dict[int, list[dict[str, Any]]] = {}
    for v in r["violations"]:
        episodes.setdefault(v["episode"], []).append(v)
    for n, vs in sorted(episodes.items()):
        first, last = vs[0], vs[-1]
        later = f"; {len(vs)} audits, to {last['at']} s: {last['why']}" if len(vs) > 1 else ""
        lines.append(f"  stall {n}: {first['schedd']}, rsubd run {first['rsubd_run']}, from {first['at']} s: "
                     f"{first['why']}{later}")
    for p in r["problems"][:20]:
        lines.append(f"  problem: {p}")
    if len(r["problems"]) > 20:
        lines.append(f"  ... and {len(r['problems']) - 20} more problems (--json lists them)")
    if r.get("workdir"):
        lines.append(f"  state, work and rsubd.log kept in {r['workdir']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the workload runs (10)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the workload's choices (random if unset)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep rsubd's state, the submit directories and rsubd.log here "
                             "(an empty or new directory)")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds the end may wait for every job to be final (120)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be more than 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    short_runtime = None
    if args.workdir is not None:
        root = args.workdir.resolve()
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            parser.error(f"--workdir {root} must be a new or empty directory")
        root.mkdir(parents=True, exist_ok=True)
        runtime = root / "run"
        if len(str(runtime / "rsub" / "rsubd.sock")) > 100:  # Unix socket paths stop at about 108 bytes
            short_runtime = runtime = short_root("rsub-soak-run-")
    else:
        root = short_root("rsub-soak-")
        runtime = root / "run"
    # A SIGTERM (a CI timeout, a person) still runs the clean-up: rsubd stopped, job processes killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soak = Soak(root, runtime, args.minutes, seed, args.drain, args.quiet)
    try:
        report = soak.run()
    except StartFailure as e:
        print(f"soak: {e}", file=sys.stderr)
        print(f"soak: rsubd's log and state are in {root}", file=sys.stderr)
        return 2
    finally:
        if short_runtime is not None:
            shutil.rmtree(short_runtime, ignore_errors=True)
    if args.workdir is not None or not report["ok"]:
        report["workdir"] = str(root)  # kept: asked for, or there is something to look at
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
