"""Kill harness: a mixed workload while rsubd is SIGKILLed at every named crash point and at random.

    .venv/bin/python tools/crash_harness.py [--kills 200] [--seed N] [--keep]

One rsubd state directory serves the whole run, so the ledger and the embedded
scheduler's queue persist across kills. Each run starts rsubd with a crash plan
(a point of `rsubd.platform.crash.POINTS` at its Nth passage, `random:P`, or an external
SIGKILL after 0-2 s), drives work through real `rsub` command lines while it
lives (submits of 1-5 jobs with their own inputs, holds then releases, removes),
and restarts it once it is dead. Submit clients are subprocesses that outlive a
kill: `rsub submit` retries the same request id until rsubd answers. At the end
rsubd runs without crashes until every job is final, then `tools.crash_verify`
audits clients, ledger, schedd and files. It prints a JSON report on stdout
(progress on stderr) and exits 1 if a target is broken. docs/crash-harness.md
explains every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tools` and `tests` (the repository) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rsub.wire.vocabulary import ACTIVE_STATES, EXIT_TIMEOUT
from rsubd.platform.crash import ENV, POINTS
from tests.support.daemon import BIN, Rsubd, StartFailure, short_root
from tools.crash_verify import audit, ledger_rows, schedd_jobs
from tools.crash_workload import Submission, write_submission

CONFIG = """\
[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
early_poll_every = 0.2
"""
PLAN_DEADLINE = 6.0  # seconds a plan may take to reach its point before the harness kills rsubd itself
MAX_UNEXPECTED_IN_A_ROW = 3  # rsubd exiting by itself this often in a row ends the crash phase
CRASH_SHARE = 0.6  # of --budget, the most the crash phase may take; the final phase has the rest
FINAL_RESERVE = 20.0  # seconds of --budget (at most a tenth of it) kept for the last status, stop and audit
MAX_PENDING_CLIENTS = 4
HOLDABLE = ("spooling", "idle", "running")  # ledger states of the jobs the workload holds, then releases
# A recover.* point is met only when rsubd starts with a submit it did not finish: these leave one.
SETUP_FOR = {
    "recover.after_schedd": ("submit.after_intent", "submit.after_schedd", "submit.after_record", "submit.after_spool"),
    "recover.after_record": ("submit.after_schedd", "submit.after_record", "submit.after_spool"),
}
CRASH_LINE = re.compile(r"rsubd: crash point (\S+): killing myself")
TARGET_ZEROS = ("lost", "duplicates", "outputs_missing_or_wrong", "marked_without_output", "schedd_held_spooling",
                "schedd_retrieved_not_marked", "leftover_files", "submits_unfinished", "unexpected_exits")


@dataclass
class Plan:
    kind: str  # point | random | external | clean
    point: str = ""
    nth: int = 1
    chance: float = 0.0
    delay: float = 0.0
    setup: str = ""  # for a recover.* point: the submit point to die at first if no submit is unfinished

    @property
    def crash_at(self) -> str | None:
        if self.kind == "point":
            return f"{self.point}:{self.nth}"
        if self.kind == "random":
            return f"random:{self.chance}"
        return None

    def label(self) -> str:
        return self.crash_at or (f"external after {self.delay:.2f} s" if self.kind == "external" else "no crash")


class Harness:
    def __init__(self, root: Path, kills: int, seed: int, max_active: int, quiet: bool,
                 budget: float | None = None) -> None:
        self.root = root
        self.started = time.monotonic()
        self.budget = budget  # seconds the whole run may take, or None
        self.cut_short: list[str] = []  # what the budget or a failing rsubd cut short, and what was left
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.target = kills
        # Two streams: the plans depend on the seed alone, the workload also on timing.
        self.plans = random.Random(seed)
        self.rng = random.Random(seed + 1)
        self.max_active = max_active
        self.quiet = quiet
        self.rsubd = Rsubd(root, CONFIG)
        self.env = self.rsubd.env
        self.state = self.rsubd.state_dir
        self.ledger = self.state / "ledger.db"
        self.log = self.rsubd.log
        self.submissions: list[Submission] = []
        self.to_release: dict[tuple[int, int], float] = {}  # job -> when to release it
        self.runs = 0
        self.kills_by_point: Counter[str] = Counter()
        self.kills_random: Counter[str] = Counter()
        self.kills_external = 0
        self.kills_fallback = 0
        self.unexpected: list[str] = []
        self.unexpected_in_a_row = 0
        self.actions: Counter[str] = Counter()

    @property
    def kills(self) -> int:
        return (sum(self.kills_by_point.values()) + sum(self.kills_random.values()) + self.kills_external
                + self.kills_fallback)

    def left(self, share: float = 1.0) -> float:
        """Seconds left of `share` of the budget (infinite without one)."""
        if self.budget is None:
            return float("inf")
        return self.started + self.budget * share - time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{self.kills:4d} kills] {text}", file=sys.stderr, flush=True)

    # -- rsubd ---------------------------------------------------------------

    def start(self, plan: Plan, wait: bool = False) -> subprocess.Popen[bytes]:
        self.runs += 1
        return self.rsubd.start(wait, extra_env={ENV: plan.crash_at} if plan.crash_at else None,
                                note=f"harness run {self.runs}: {plan.label()}")

    def rsub(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        try:
            return self.rsubd.rsub(*args, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    # -- the ledger, read-only, while rsubd runs ------------------------------

    def active_jobs(self) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(ACTIVE_STATES))
        return ledger_rows(self.ledger, f"SELECT cluster, proc, state FROM jobs WHERE state IN ({marks})",
                           ACTIVE_STATES)

    def unfinished_submits(self) -> int:
        return len(ledger_rows(self.ledger, "SELECT id FROM clusters WHERE state IN ('submitting', 'spooling')"))

    # -- the workload ----------------------------------------------------------

    def reap(self) -> None:
        for s in self.submissions:
            if s.reap() and s.outcome != "ok":
                self.say(f"submit {s.directory.name}: {s.outcome} {s.message[:160]}")

    def pending(self) -> list[Submission]:
        return [s for s in self.submissions if s.outcome == "pending"]

    def launch_submit(self) -> None:
        index = len(self.submissions)
        directory = self.work / f"s{index:04d}"
        procs = self.rng.randint(1, 5)
        write_submission(directory, self.rng, procs)
        s = Submission(index=index, directory=directory, procs=procs, run=self.runs)
        s.client = subprocess.Popen([str(BIN / "rsub"), "submit", "--json", "job.sub"], cwd=directory, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.submissions.append(s)
        self.actions["submit"] += 1

    def act(self, first: bool, force_submit: bool) -> None:
        """One round of work against a live rsubd."""
        self.reap()
        active = self.active_jobs()
        if (force_submit and first) or (len(self.pending()) < MAX_PENDING_CLIENTS and len(active) < self.max_active
                                        and self.rng.random() < (0.9 if first else 0.35)):
            self.launch_submit()
        ours = {s.cluster: s for s in self.submissions if s.outcome == "ok" and not s.rm_attempted}
        if self.rng.random() < 0.2:
            # A spooling job too: its hold is kept by rsubd until the spool hold ends, and a release cancels it.
            candidates = [j for j in active if j["state"] in HOLDABLE and j["cluster"] in ours]
            if candidates:
                j = self.rng.choice(candidates)
                key = (j["cluster"], j["proc"])
                # Whatever the client hears, the hold may have happened: release it later in any case.
                self.to_release[key] = time.monotonic() + self.rng.uniform(0.2, 1.5)
                self.rsub("hold", "--reason", "crash harness", f"{key[0]}.{key[1]}")
                self.actions["hold"] += 1
        self.release_due()
        if ours and self.rng.random() < 0.04:
            s = self.rng.choice(list(ours.values()))
            s.rm_attempted = True  # before the call: a kill mid-request may still have removed it
            self.rsub("rm", "--reason", "crash harness", str(s.cluster))
            self.actions["rm"] += 1

    def release_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for key, due in list(self.to_release.items()):
            if (everything or due <= now) and self.rsub("release", f"{key[0]}.{key[1]}").returncode == 0:
                del self.to_release[key]
                self.actions["release"] += 1

    # -- one run ---------------------------------------------------------------

    def run_once(self, plan: Plan, force_submit: bool = False) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        proc = self.start(plan)
        began = time.monotonic()
        kill_at = began + (plan.delay if plan.kind == "external" else PLAN_DEADLINE)
        up = False
        first = True
        next_act = began
        killed = False
        while proc.poll() is None:
            now = time.monotonic()
            if now >= kill_at:
                proc.kill()
                killed = True
                break
            if not up:
                up = self.rsubd.ping()
                if not up:
                    time.sleep(0.03)
                continue
            if now >= next_act:
                self.act(first, force_submit)
                first = False
                next_act = now + self.rng.uniform(0.1, 0.5)
            else:
                self.reap()
                time.sleep(0.03)
        proc.wait()
        took = time.monotonic() - began
        text = self.log.read_bytes()[offset:].decode(errors="replace")
        hit = CRASH_LINE.findall(text)
        if killed and not hit:
            if plan.kind == "external":
                self.kills_external += 1
            else:
                self.kills_fallback += 1
            outcome = "killed by the harness" + ("" if plan.kind == "external" else " (point not reached)")
            self.unexpected_in_a_row = 0
        elif proc.returncode == -signal.SIGKILL and hit:
            (self.kills_random if plan.kind == "random" else self.kills_by_point)[hit[-1]] += 1
            outcome = f"died at {hit[-1]}"
            self.unexpected_in_a_row = 0
        else:
            self.unexpected_in_a_row += 1
            tail = text.strip().splitlines()[-5:]
            self.unexpected.append(f"run {self.runs} ({plan.label()}): exit {proc.returncode}: {tail}")
            outcome = f"exited {proc.returncode} unexpectedly"
        self.reap()
        self.say(f"run {self.runs}: {plan.label()}: {outcome} after {took:.1f} s; "
                 f"{len(self.submissions)} submits, {len(self.pending())} pending")

    def deck(self) -> list[Plan]:
        """One round: every point once, two random plans, two external kills, shuffled."""
        plans = []
        for point in POINTS:
            nth = self.plans.choice((1, 1, 2)) if point.startswith("recover.") else self.plans.randint(1, 3)
            setup = self.plans.choice(SETUP_FOR[point]) if point in SETUP_FOR else ""
            plans.append(Plan("point", point, nth, setup=setup))
        for _ in range(2):
            plans.append(Plan("random", chance=self.plans.choice((0.05, 0.1, 0.2, 0.3))))
            plans.append(Plan("external", delay=self.plans.uniform(0.0, 2.0)))
        self.plans.shuffle(plans)
        return plans

    def crash_phase(self) -> None:
        plans: list[Plan] = []
        while self.kills < self.target:
            if self.left(CRASH_SHARE) <= 0:
                self.cut_short.append(f"the crash phase: the budget's share ({CRASH_SHARE * self.budget:.0f} s) "
                                      f"was spent after {self.kills} of {self.target} kills")
                return
            if self.unexpected_in_a_row >= MAX_UNEXPECTED_IN_A_ROW:
                self.cut_short.append(f"the crash phase: rsubd exited by itself {self.unexpected_in_a_row} times"
                                      " in a row")
                return
            if not plans:
                plans = self.deck()
            plan = plans.pop()
            if plan.setup and not self.unfinished_submits():
                self.run_once(Plan("point", plan.setup, 1), force_submit=True)
            self.run_once(plan)

    # -- the end -----------------------------------------------------------------

    def final_phase(self) -> list[dict[str, Any]]:
        """rsubd without crashes until every job is final; returns `rsub status --json`'s jobs."""
        try:
            self.start(Plan("clean"), wait=True)
        except StartFailure as e:
            self.unexpected.append(f"the final rsubd did not start: {e}")
            return []
        t0 = time.monotonic()
        deadline = t0 + self.within(180)
        while self.pending() and time.monotonic() < deadline:
            self.reap()
            self.release_due()
            time.sleep(0.2)
        for s in self.pending():  # left as pending: counted as submits_unfinished
            if s.client is not None:
                s.client.kill()
                s.client.communicate()
                s.client = None
        self.say(f"final: submit clients done after {time.monotonic() - t0:.1f} s")
        deadline = time.monotonic() + self.within(60)
        while self.to_release and time.monotonic() < deadline:
            self.release_due(everything=True)
            time.sleep(0.2)
        if self.to_release:
            self.cut_short.append(f"releases: {sorted(self.to_release)[:10]} still to release")
        ids = [str(s.cluster) for s in self.submissions if s.outcome == "ok"]
        if ids:
            wait_for = max(1, int(self.within(300)))
            waited = self.rsub("wait", "--timeout", str(wait_for), *ids, timeout=wait_for + 30)
            if waited.returncode != 0:
                self.say(f"rsub wait: exit {waited.returncode}: {waited.stderr.strip()[-300:]}")
            if waited.returncode in (EXIT_TIMEOUT, 124):  # rsub wait's own timeout, or the harness's
                self.cut_short.append(f"rsub wait --timeout {wait_for}: exit {waited.returncode}; not final: "
                                      f"{self.not_final()}")
        self.say(f"final: every job final after {time.monotonic() - t0:.1f} s")
        # Final in rsub's eyes; now let the marks land and marked jobs leave the schedd's queue.
        marks = ", ".join("?" * len(ACTIVE_STATES))
        deadline = time.monotonic() + self.within(60)
        while time.monotonic() < deadline:
            tracked = ledger_rows(self.ledger, f"SELECT 1 FROM jobs WHERE state IN ({marks}) OR (state = 'retrieved'"
                                               " AND marked_at IS NULL)", ACTIVE_STATES)
            if not tracked and not self.leaving():
                break
            time.sleep(0.3)
        self.say(f"final: marks landed after {time.monotonic() - t0:.1f} s")
        status = self.rsub("status", "--json", "--limit", "100000")
        jobs: list[dict[str, Any]] = json.loads(status.stdout)["jobs"] if status.returncode == 0 else []
        self.rsubd.stop(timeout=30)
        return jobs

    def within(self, seconds: float) -> float:
        """`seconds`, or what the budget leaves once the audit's own time is set aside."""
        reserve = min(FINAL_RESERVE, 0.1 * self.budget) if self.budget is not None else 0.0
        return max(1.0, min(seconds, self.left() - reserve))

    def not_final(self, most: int = 10) -> list[str]:
        """The jobs rsub still tracks, each with its state in the ledger and in the schedd: why a wait timed out."""
        marks = ", ".join("?" * len(ACTIVE_STATES))
        rows = ledger_rows(self.ledger, f"SELECT cluster, proc, state FROM jobs WHERE state IN ({marks})"
                                        " ORDER BY cluster, proc", ACTIVE_STATES)
        try:
            ads = {(c, p): (where, ad) for where, c, p, ad in schedd_jobs(self.state / "local" / "local" / "queue.db")}
        except sqlite3.Error:
            ads = {}
        out = []
        for row in rows[:most]:
            where, ad = ads.get((row["cluster"], row["proc"]), ("nowhere", {}))
            out.append(f"{row['cluster']}.{row['proc']} {row['state']} (schedd: {where} JobStatus "
                       f"{ad.get('JobStatus')} {ad.get('HoldReason') or ''})".rstrip())
        return out + ([f"and {len(rows) - most} more"] if len(rows) > most else [])

    def leaving(self) -> int:
        """Jobs still queued with RETRIEVED = true: the schedd lets them go at its next pass."""
        try:
            return sum(1 for where, _c, _p, ad in schedd_jobs(self.state / "local" / "local" / "queue.db")
                       if where == "queue" and ad.get("RETRIEVED") is True)
        except sqlite3.Error:
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crash_harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver before the final check (200)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the plan and workload choices")
    parser.add_argument("--keep", action="store_true", help="keep the state, work and log directory")
    parser.add_argument("--max-active", type=int, default=16, help="no new submit while more jobs are active")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds the whole run may take: at most 60%% of it killing, the rest finishing; what "
                             "it cuts short is a broken target, named in the report (no limit)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    # A short path: rsubd's socket lives under it, and Unix socket paths stop at about 108 bytes.
    root = short_root("rsub-crash-")
    started = time.monotonic()
    h = Harness(root, args.kills, seed, args.max_active, args.quiet, args.budget)
    jobs: list[dict[str, Any]] = []
    try:
        h.crash_phase()
        jobs = h.final_phase()
    finally:
        if h.rsubd.proc is not None and h.rsubd.proc.poll() is None:  # interrupted mid-run
            h.rsubd.proc.kill()
            h.rsubd.proc.wait()
        for s in h.submissions:
            if s.client is not None and s.client.poll() is None:
                s.client.kill()
        h.rsubd.kill_leftover_jobs()
    counts, problems = audit(h.submissions, h.ledger, h.state / "local" / "local" / "queue.db", jobs, h.work)
    counts["unexpected_exits"] = len(h.unexpected)
    points_hit = set(h.kills_by_point) | set(h.kills_random)
    report: dict[str, Any] = {
        "seed": seed,
        "runs": h.runs,
        "kills": h.kills,
        "kills_by_point": dict(sorted(h.kills_by_point.items())),
        "kills_random": sum(h.kills_random.values()),
        "kills_random_by_point": dict(sorted(h.kills_random.items())),
        "kills_external": h.kills_external,
        "kills_external_point_unreached": h.kills_fallback,
        "restarts": h.runs - 1,
        "points_killed": len(points_hit),
        "points_never_killed": [p for p in POINTS if p not in points_hit],
        "actions": dict(sorted(h.actions.items())),
        **dict(sorted(counts.items())),
        "seconds": round(time.monotonic() - started, 1),
        "problems": problems + h.unexpected,
        "cut_short": h.cut_short,
    }
    broken = [k for k in TARGET_ZEROS if report.get(k)]
    if h.kills < args.kills:
        broken.append("kills")
    if h.cut_short:
        broken.append("cut_short")
    if args.kills >= 3 * len(POINTS) and report["points_never_killed"]:
        broken.append("points_never_killed")
    report["targets_broken"] = broken
    if args.keep:
        report["root"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
