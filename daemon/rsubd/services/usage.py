"""What jobs really used: one job's figures, and a cluster's summary set against what it requested.

The figures are the ledger's (ledger.schema.USAGE_FIELDS), recorded from the last ad a poll
saw of each job, in HTCondor's units: seconds, MemoryUsage in MB, ResidentSetSize, DiskUsage
and RequestDisk in KiB, RequestMemory in MB.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from rsub.wire.vocabulary import FINAL_STATES, iso


def usage_view(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `usage` object of a job in `rsub status --json`; None when no poll recorded any."""
    if all(row.get(k) is None for k in ("wall_time", "memory_mb", "request_memory", "job_starts")):
        return None
    return {
        "wall_seconds": row.get("wall_time"), "user_cpu_seconds": row.get("user_cpu"),
        "sys_cpu_seconds": row.get("sys_cpu"), "memory_mb": row.get("memory_mb"),
        "resident_set_kb": row.get("rss_kb"), "disk_kb": row.get("disk_kb"), "job_starts": row.get("job_starts"),
        "shadow_starts": row.get("shadow_starts"), "request_memory_mb": row.get("request_memory"),
        "request_disk_kb": row.get("request_disk"), "request_cpus": row.get("request_cpus"),
        "run_started_at": iso(row.get("run_start")),
    }


def wall_seconds(row: Mapping[str, Any], now: float) -> float | None:
    """Run time from the schedd's RemoteWallClockTime (and the current run's start while running), or None."""
    wall = row.get("wall_time")
    if wall is None:
        return None
    start = row.get("run_start")
    if row["state"] == "running" and start:
        return round(float(wall) + max(0.0, now - float(start)), 3)
    if wall > 0 or row["state"] in ("completed", "retrieved"):
        return round(float(wall), 3)
    return None


def would_do(used: float, floor: int = 1) -> int:
    """A request that fits `used` with a fifth to spare, rounded up to a power of two (MB or KiB), at least `floor`."""
    need = max(1.0, used * 1.2)
    size = floor
    while size < need:
        size *= 2
    return size


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "jobs": len(values)}


def _advice(what: str, unit: str, requested: Any, used: float | None, floor: int) -> str | None:
    if used is None or not isinstance(requested, (int, float)):
        return None
    if used > requested:
        return f"{what} {requested:g} {unit}, max used {used:g} {unit}: raise it to {would_do(used, floor)}"
    fit = would_do(used, floor)
    if fit < requested:
        return f"{what} {requested:g} {unit}, max used {used:g} {unit}: {fit} would do"
    return f"{what} {requested:g} {unit}, max used {used:g} {unit}: about right"


def cluster_summary(rows: Iterable[Mapping[str, Any]], replaced: Mapping[tuple[int, int], str]) -> dict[str, Any]:
    """Jobs by state and exit code, and wall time, CPU, memory and disk (median, max) against the requests."""
    states: dict[str, int] = {}
    exits: dict[str, int] = {}
    wall: list[float] = []
    memory: list[float] = []
    disk: list[float] = []
    cpu: list[float] = []
    requests: dict[str, Any] = {}
    jobs = 0
    for r in rows:
        jobs += 1
        states[r["state"]] = states.get(r["state"], 0) + 1
        if r["exit_signal"] is not None:
            exits[f"signal {r['exit_signal']}"] = exits.get(f"signal {r['exit_signal']}", 0) + 1
        elif r["exit_code"] is not None:
            exits[str(r["exit_code"])] = exits.get(str(r["exit_code"]), 0) + 1
        for key, column in (("memory", "request_memory"), ("disk", "request_disk"), ("cpus", "request_cpus")):
            if r.get(column) is not None:
                requests.setdefault(key, r[column])
        if r["state"] not in (*FINAL_STATES, "completed", "held") or r.get("wall_time") is None:
            continue  # a run not over yet says nothing of what the job needs
        if r["wall_time"] > 0:
            wall.append(float(r["wall_time"]))
            cpu.append(float(r.get("user_cpu") or 0) + float(r.get("sys_cpu") or 0))
        if r.get("memory_mb") is not None:
            memory.append(float(r["memory_mb"]))
        if r.get("disk_kb") is not None:
            disk.append(float(r["disk_kb"]))
    mem, dsk = _spread(memory), _spread(disk)
    # Floors: below 128 MB of memory or 1 MB of disk a smaller request saves nothing worth saying.
    advice = [a for a in (_advice("request_memory", "MB", requests.get("memory"), mem["max"] if mem else None, 128),
                          _advice("request_disk", "KB", requests.get("disk"), dsk["max"] if dsk else None, 1024)) if a]
    return {
        "jobs": jobs, "states": states, "exit_codes": exits, "replaced": len(replaced),
        "wall_seconds": _spread(wall), "cpu_seconds": _spread(cpu), "memory_mb": mem, "disk_kb": dsk,
        "request_memory_mb": requests.get("memory"), "request_disk_kb": requests.get("disk"),
        "request_cpus": requests.get("cpus"), "advice": advice,
    }
