"""`rsub status 12.0` (one job, long form) and `rsub status 12 --summary` (a cluster against its requests)."""

from __future__ import annotations

from rsub.views import exit_text, run_time_text, state_note

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any


def size_mb(kib: float | None) -> str:
    if kib is None:
        return "-"
    return f"{kib / 1024:,.1f} MB" if kib >= 1024 else f"{kib:,.0f} KB"


def seconds_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.2f} s"


def long_lines(job: dict[str, Any]) -> list[str]:
    """One job, a field a line, as condor_q -l would name them in words."""
    u = job.get("usage") or {}
    js = job.get("jobsub") or {}
    lines = [f"job            {job['id']}", f"state          {job['state']}"]
    if exit_text(job):
        lines.append(f"exit           {exit_text(job)}")
    if state_note(job):
        lines.append(f"note           {state_note(job)}")
    if job.get("replaces"):
        lines.append(f"replaces       {job['replaces']} -> {job['id'].split('@')[0]}")
    if job.get("replaced_by"):
        lines.append(f"replaced by    {job['id'].split('@')[0]} -> {job['replaced_by']}")
    if job.get("auto_releases"):
        lines.append(f"released       {job['auto_releases']} time(s) automatically by the hold policy")
    lines += [f"submitted      {job.get('submitted_at') or '-'}", f"completed      {job.get('completed_at') or '-'}",
              f"retrieved      {job.get('retrieved_at') or '-'}", f"directory      {job.get('iwd') or '-'}",
              f"run time       {run_time_text(js.get('run_time'))}"]
    if u:
        starts = u.get("job_starts")
        lines += [f"wall clock     {seconds_text(u.get('wall_seconds'))}",
                  f"cpu            {seconds_text(u.get('user_cpu_seconds'))} user, "
                  f"{seconds_text(u.get('sys_cpu_seconds'))} system",
                  f"memory         {'-' if u.get('memory_mb') is None else str(u['memory_mb']) + ' MB'} used "
                  f"(peak resident {size_mb(u.get('resident_set_kb'))}) of request_memory "
                  f"{u.get('request_memory_mb') if u.get('request_memory_mb') is not None else '-'} MB",
                  f"disk           {size_mb(u.get('disk_kb'))} used of request_disk "
                  f"{size_mb(u.get('request_disk_kb'))}",
                  f"cpus requested {u.get('request_cpus') if u.get('request_cpus') is not None else '-'}",
                  f"starts         {'-' if starts is None else starts} (shadow starts: "
                  f"{u.get('shadow_starts') if u.get('shadow_starts') is not None else '-'})"]
    return lines


def _spread(spread: dict[str, Any] | None, unit: str) -> str:
    if not spread:
        return "-"
    return f"median {spread['median']:,g} {unit}, max {spread['max']:,g} {unit} ({spread['jobs']:,} jobs)"


def summary_lines(s: dict[str, Any]) -> list[str]:
    """A cluster's summary: jobs by state and exit code, then usage against the requests, then advice."""
    states = ", ".join(f"{n:,} {state}" for state, n in sorted(s["states"].items(), key=lambda kv: -kv[1]))
    exits = ", ".join(f"{code}: {n:,}" for code, n in sorted(s["exit_codes"].items()))
    lines = [f"cluster {s['id']}: {s['jobs']:,} job(s); {states or 'none'}"]
    if exits:
        lines.append(f"  exit codes   {exits}")
    if s.get("replaced"):
        lines.append(f"  resubmitted  {s['replaced']:,} of them (rsub status shows where each went)")
    lines += [f"  wall time    {_spread(s.get('wall_seconds'), 's')}",
              f"  cpu time     {_spread(s.get('cpu_seconds'), 's')}",
              f"  memory       {_spread(s.get('memory_mb'), 'MB')}",
              f"  disk         {_spread(s.get('disk_kb'), 'KB')}"]
    lines += [f"  {a}" for a in s.get("advice") or []]
    return lines


def show_long(jobs: list[dict[str, Any]]) -> None:
    for n, job in enumerate(jobs):
        if n:
            print()
        print("\n".join(long_lines(job)))


def show_summary(result: dict[str, Any]) -> None:
    for n, s in enumerate(result["clusters"]):
        if n:
            print()
        print("\n".join(summary_lines(s)))
