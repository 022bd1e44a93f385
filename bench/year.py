"""A year of one user's work in the ledger: 1,000,000 jobs in 10,000 clusters over 3 schedds, mostly final.

The dataset (an rsubd state directory, built once per cache):

- 900,000 final jobs in 9,000 clusters of 100, 3,000 per schedd (`local`, `s2`,
  `s3`), submitted over the 365 days before the build, oldest first: 96%
  retrieved and marked, 3% removed, 1% failed, each with the events a real life
  leaves (submitted, idle, running, completed, retrieved: four per job and one
  per cluster). Written straight into the ledger with SQL, as rsubd would have
  left them; the schedds no longer know them, as a real schedd would not.
- then 100,000 active jobs in 1,000 clusters on `local` (bench.common.build:
  submitted, spooled and polled through the embedded scheduler in fake mode, so
  ledger and queue agree), the newest clusters, numbered after the final ones.

`python -m bench.year` prints what such a ledger costs: bytes on disk per job,
the ledger's open (migrations check) and rsubd's start-up to its first answer,
`rsub q`, `rsub status ID`, `rsub history --limit 1000` against the venv's own
`python -c pass`, a poll of `local` (100,000 tracked, 10% changed: CPU and
peak RSS, as bench.poll_cost measures it), and compaction: the whole year
compacted at 30 days on a copy (time, bytes after, history unchanged).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import build, copy, description, emit, open_schedd, quiet, workdir

SCHEDDS = ("local", "s2", "s3")
FINAL_CLUSTERS, PROCS, ACTIVE_JOBS, ACTIVE_CLUSTERS = 9000, 100, 100_000, 1000
YEAR = 365 * 86400.0
TARGETS = {"q_vs_venv_python": 2.0, "q_page_not_kept_vs_venv_python": 2.0, "status_vs_venv_python": 2.0,
           "history_vs_venv_python": 3.0,
           "rsubd_start_seconds": 2.0, "poll_daemon_cpu_seconds": 0.5, "poll_daemon_peak_rss_mb": 250.0}


def _final_rows(ledger_db: Path, work: Path, clusters: int, procs: int, seed: int = 7) -> int:
    """The year's final clusters, written with SQL into a ledger that has its schema. Returns the jobs written."""
    import sqlite3

    rng = random.Random(seed)
    conn = sqlite3.connect(ledger_db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    now = time.time()
    start = now - YEAR
    text = description(procs)
    per_schedd = clusters // len(SCHEDDS)
    written = 0
    conn.execute("BEGIN")
    for n in range(clusters):
        schedd, cluster = SCHEDDS[n % len(SCHEDDS)], n // len(SCHEDDS) + 1
        submitted = start + (YEAR - 86400) * n / clusters
        cur = conn.execute(
            "INSERT INTO clusters (request_id, schedd, cluster, tag, state, description, submitted_description,"
            " submit_dir, submit_file, num_procs, created_at, submitted_at)"
            " VALUES (?, ?, ?, ?, 'submitted', ?, ?, ?, 'job.sub', ?, ?, ?)",
            (uuid.uuid4().hex, schedd, cluster, uuid.uuid4().hex, text, text, str(work), procs, submitted, submitted))
        row = cur.lastrowid
        jobs, events = [], [(submitted, schedd, cluster, None, None, "spooling", f"{procs} job(s) submitted")]
        for proc in range(procs):
            idle = submitted + 2
            run = idle + rng.uniform(10, 3600)
            done = run + rng.uniform(60, 20000)
            fate = rng.random()
            if fate < 0.03:
                state, status, exit_code, retrieved, marked = "removed", 3, None, None, None
                events += [(idle, schedd, cluster, proc, "spooling", "idle", None),
                           (done, schedd, cluster, proc, "idle", "removed", "removed by the user")]
            elif fate < 0.04:
                state, status, exit_code, retrieved, marked = "failed", 4, 0, None, None
                events += [(idle, schedd, cluster, proc, "spooling", "idle", None),
                           (run, schedd, cluster, proc, "idle", "running", None),
                           (done, schedd, cluster, proc, "running", "completed", None),
                           (done + 60, schedd, cluster, proc, "completed", "failed", "output lost")]
            else:
                state, status, exit_code = "retrieved", 4, 0 if fate > 0.06 else 1
                retrieved, marked = done + 60, done + 120
                events += [(idle, schedd, cluster, proc, "spooling", "idle", None),
                           (run, schedd, cluster, proc, "idle", "running", None),
                           (done, schedd, cluster, proc, "running", "completed", None),
                           (retrieved, schedd, cluster, proc, "completed", "retrieved", None)]
            jobs.append((schedd, cluster, proc, row, state, status, exit_code,
                         "removed by the user" if state == "removed" else None,
                         "output lost" if state == "failed" else None, str(work), submitted,
                         done if status == 4 else None, retrieved, marked, marked or done))
        conn.executemany(
            "INSERT INTO jobs (schedd, cluster, proc, cluster_row, state, job_status, exit_code, remove_reason, error,"
            " iwd, submitted_at, completed_at, retrieved_at, marked_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", jobs)
        conn.executemany("INSERT INTO events (at, schedd, cluster, proc, from_state, to_state, detail)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", events)
        written += procs
    conn.execute("COMMIT")
    conn.close()
    assert per_schedd * len(SCHEDDS) == clusters
    return written


def build_year(state: Path, *, final_clusters: int = FINAL_CLUSTERS, procs: int = PROCS,
               active_jobs: int = ACTIVE_JOBS, active_clusters: int = ACTIVE_CLUSTERS) -> dict[str, Any]:
    """The dataset in `state` (see the module's doc); sizes may be made smaller for a quick check."""
    from rsubd.ledger.store import Ledger

    quiet()
    started = time.perf_counter()
    state.mkdir(parents=True, exist_ok=True)
    work = workdir(state.parent)
    Ledger(state / "ledger.db").close()  # the schema, by rsubd's own migrations
    written = _final_rows(state / "ledger.db", work, final_clusters, procs)
    schedd = open_schedd(state)
    try:  # the active clusters come after the final ones of `local`, as they would have
        schedd._store._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_cluster', ?)",
                                  (str(final_clusters // len(SCHEDDS) + 1),))
    finally:
        schedd.close()
    build(state, active_jobs, active_clusters)
    return {"final_jobs": written, "active_jobs": active_jobs, "build_seconds": round(time.perf_counter() - started, 1)}


def year_dataset(cache: Path, **sizes: int) -> Path:
    name = "year" + "".join(f"-{k}{v}" for k, v in sorted(sizes.items()))
    state = cache / name / "state"
    if not (state / "ready").exists():
        shutil.rmtree(state.parent, ignore_errors=True)
        state.mkdir(parents=True)
        (state / "ready").write_text(json.dumps(build_year(state, **sizes)))
    return state


def ledger_size(state: Path) -> dict[str, Any]:
    import sqlite3

    conn = sqlite3.connect(state / "ledger.db")
    jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    size = sum(p.stat().st_size for p in state.glob("ledger.db*"))
    return {"jobs": jobs, "events": events, "ledger_bytes": size, "bytes_per_job": round(size / max(jobs, 1))}


def open_figures(state: Path) -> dict[str, Any]:
    """The ledger's open (integrity and ownership checks, migrations check) and the scans rsubd makes at start."""
    from rsubd.ledger.store import Ledger

    started = time.perf_counter()
    ledger = Ledger(state / "ledger.db")
    opened = time.perf_counter() - started
    t = time.perf_counter()
    unfinished = sum(len(ledger.unfinished_submits(s)) for s in SCHEDDS)
    recovery = time.perf_counter() - t
    t = time.perf_counter()
    tracked = {s: len(ledger.tracked(s)) for s in SCHEDDS}
    first_load = time.perf_counter() - t
    ledger.close()
    return {"ledger_open_seconds": round(opened, 3), "recovery_scan_seconds": round(recovery, 4),
            "unfinished_submits": unfinished, "tracked_load_seconds": round(first_load, 3), "tracked": tracked}


def first_open(state: Path) -> dict[str, Any]:
    """Open the dataset once with this rsubd's ledger: a dataset built by an older one gets its migrations now."""
    import sqlite3

    from rsubd.ledger.store import Ledger

    conn = sqlite3.connect(state / "ledger.db")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    started = time.perf_counter()
    Ledger(state / "ledger.db").close()
    return {"schema_before": version, "seconds": round(time.perf_counter() - started, 2)}


def compaction_figures(template: Path) -> dict[str, Any]:
    """Compact a copy of the year as rsubd's polls would (30 days), all of it: time, size after, history after."""
    import sqlite3

    from rsub.wire.vocabulary import FINAL_STATES
    from rsubd.ledger import compaction
    from rsubd.ledger.store import Ledger

    with tempfile.TemporaryDirectory(prefix="rsub-bench-") as tmp:
        state = Path(tmp) / "state"
        copy(template, state)
        ledger = Ledger(state / "ledger.db")
        before_page = ledger.job_page(states=list(FINAL_STATES), newest_first=True, limit=1000)
        now = time.time()
        started, cpu = time.perf_counter(), time.process_time()
        done, batches = 0, 0
        for schedd in SCHEDDS:
            while True:
                n = compaction.compact(ledger, schedd, now - 30 * 86400, now=now)
                done, batches = done + n, batches + 1
                if n < compaction.BATCH:
                    break
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after_page = ledger.job_page(states=list(FINAL_STATES), newest_first=True, limit=1000)
        finals = ledger.job_count(states=list(FINAL_STATES))
        old = ledger.job_page(states=list(FINAL_STATES), newest_first=True, limit=1000, offset=int(finals * 0.8))
        ledger._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ledger.close()
        size = ledger_size(state)
        reopened = open_figures(state)  # the open reads the pages in use: fewer once compacted
        conn = sqlite3.connect(state / "ledger.db")
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
    keep = ("cluster", "proc", "state", "exit_code", "run_started_at", "finished_at")
    return {
        "compacted_jobs": done, "batches": batches, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
        "after": size, "free_bytes_for_reuse": free, "ledger_open_seconds_after": reopened["ledger_open_seconds"],
        "bytes_per_job_in_use": round((size["ledger_bytes"] - free) / max(size["jobs"], 1)),
        "history_first_page_unchanged": [{k: r[k] for k in keep} for r in before_page]
        == [{k: r[k] for k in keep} for r in after_page],
        "compacted_jobs_in_history_with_run_time": sum(1 for r in old if r["compacted_at"] and r["run_started_at"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    from bench import client, poll_cost
    from bench.daemon import Rsubd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="where the dataset is kept (default: a temporary directory)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--small", action="store_true", help="a tenth of the size, to check the bench itself")
    parser.add_argument("--client-only", action="store_true",
                        help="only the client figures (rsub q, status, history): no polls, no compaction")
    args = parser.parse_args(argv)
    sizes = ({"final_clusters": 900, "active_jobs": 10_000, "active_clusters": 100} if args.small else {})
    with tempfile.TemporaryDirectory(prefix="rsub-bench-cache-") as tmp_cache:
        template = year_dataset(args.cache or Path(tmp_cache), **sizes)
        built = json.loads((template / "ready").read_text())
        migrated = first_open(template)
        figures: dict[str, Any] = {"dataset": built, "first_open": migrated, "ledger": ledger_size(template),
                                   "open": open_figures(template)}
        active_cluster = (sizes.get("final_clusters", FINAL_CLUSTERS) // len(SCHEDDS)
                          + sizes.get("active_clusters", ACTIVE_CLUSTERS) // 2)
        with tempfile.TemporaryDirectory(prefix="rsb-", dir="/tmp") as tmp:
            root = Path(tmp)
            copy(template, root / "state")
            daemon = Rsubd(root, root / "state", schedds=SCHEDDS)
            started = time.perf_counter()
            daemon.start()
            figures["rsubd_start_seconds"] = round(time.perf_counter() - started, 2)
            try:
                daemon.wait_for_poll()
                figures["client"] = client.rounds(daemon, args.rounds, cluster=active_cluster)
            finally:
                daemon.stop()
        polls = [] if args.client_only else [poll_cost._child("measure", template, 0.10) for _ in range(3)]
        if not args.client_only:
            figures["compaction"] = compaction_figures(template)
    cpu = statistics.median(p["daemon_cpu_seconds"] for p in polls) if polls else None
    rss = statistics.median(p["daemon_peak_rss_mb"] for p in polls) if polls else None
    if polls:
        figures["poll"] = {"tracked": figures["open"]["tracked"]["local"], "daemon_cpu_seconds": cpu,
                           "daemon_peak_rss_mb": rss, "runs": [p["daemon_cpu_seconds"] for p in polls],
                           "calls": polls[0]["calls"]}
    ratios = figures["client"]["ratios"]
    # rsubd's own start-up: the ledger's open (checks, migrations check) and the recovery scan. The whole
    # time to its first answer also has the embedded scheduler loading its 100,000 jobs, which a real
    # pool's schedd does on its own machine: reported apart (rsubd_start_seconds).
    own_start = round(figures["open"]["ledger_open_seconds"] + figures["open"]["recovery_scan_seconds"], 2)
    figures["rsubd_own_start_seconds"] = own_start
    got = {"q_vs_venv_python": ratios["rsub q vs_venv_python"],
           "q_page_not_kept_vs_venv_python": ratios["rsub q, page not kept vs_venv_python"],
           "status_vs_venv_python": max(ratios["rsub status C.P vs_venv_python"],
                                        ratios["rsub status C vs_venv_python"]),
           "history_vs_venv_python": ratios["rsub history --limit 1000 vs_venv_python"],
           "rsubd_start_seconds": own_start, "poll_daemon_cpu_seconds": cpu,
           "poll_daemon_peak_rss_mb": rss}
    figures["against_targets"] = {k: {"got": got[k], "target": TARGETS[k], "met": got[k] <= TARGETS[k]}
                                  for k in TARGETS if got[k] is not None}
    emit({"bench": "year", **figures, "meets_target": all(v["met"] for v in figures["against_targets"].values())})


if __name__ == "__main__":
    main()
