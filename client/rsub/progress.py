"""How `rsub wait` and `rsub watch` show jobs: a cluster's progress line, a change, the final summary."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

BAR = 10


def counts(summary: dict[str, Any]) -> dict[str, int]:
    states: dict[str, int] = summary.get("states", {})
    return {
        "done": int(summary.get("done", 0)),
        "total": int(summary.get("total", 0)),
        "run": states.get("running", 0),
        "idle": states.get("idle", 0) + states.get("spooling", 0) + states.get("submitting", 0),
        "held": states.get("held", 0),
        "completed": states.get("completed", 0),
        "exit_nonzero": int(summary.get("exit_nonzero", 0)),
        "attention": int(summary.get("needs_attention", 0)),
    }


def bar(done: int, total: int, width: int = BAR) -> str:
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def cluster_line(summary: dict[str, Any], width: int = BAR) -> str:
    """`12@fnal  [######....]  612/1000 done  30 run  350 idle  8 held`, and what else is worth a word."""
    c = counts(summary)
    parts = [f"{summary['id']}  {bar(c['done'], c['total'], width)}  {c['done']}/{c['total']} done"]
    for key, label in (("run", "run"), ("idle", "idle"), ("held", "held"), ("completed", "coming home")):
        if c[key] or key in ("run", "idle"):
            parts.append(f"{c[key]} {label}")
    if c["exit_nonzero"]:
        parts.append(f"{c['exit_nonzero']} exit!=0")
    if summary.get("dag"):
        from rsub.dagview import progress

        parts.append(f"DAG {progress(summary['dag'])}")
    if c["attention"]:
        parts.append(f"{c['attention']} NEED ATTENTION")
    return "  ".join(parts)


def exit_word(job: dict[str, Any]) -> str:
    if job.get("exit_signal") is not None:
        return f"killed by signal {job['exit_signal']}"
    if job.get("exit_code") is not None:
        return f"exit {job['exit_code']}"
    return ""


def change_line(job: dict[str, Any]) -> str:
    """One job's state as `rsub wait` prints it: `12.3@local: retrieved (exit 3; output in /w)`."""
    state = job["state"]
    notes: list[str] = []
    if job.get("needs_attention"):
        notes.append(f"NEEDS ATTENTION: {job.get('attention') or 'its output cannot be retrieved'}")
    elif state == "held" and job.get("hold_reason"):
        code = f"code {job['hold_code']}: " if job.get("hold_code") is not None else ""
        hint = f" [{job['hold_hint']}]" if job.get("hold_hint") else ""
        notes.append(f"{code}{job['hold_reason']}{hint}")
    elif state in ("retrieved", "completed"):
        if exit_word(job):
            notes.append(exit_word(job))
        if state == "retrieved" and (job.get("retrieved_to") or job.get("iwd")):
            notes.append(f"output in {job.get('retrieved_to') or job['iwd']}")
    elif state == "removed" and job.get("remove_reason"):
        notes.append(str(job["remove_reason"]))
    elif state == "failed" and job.get("error"):
        notes.append(str(job["error"]))
    return f"{job['id']}: {state}" + (f" ({'; '.join(notes)})" if notes else "")


def _ids(jobs: list[dict[str, Any]], limit: int = 5) -> str:
    shown = ", ".join(f"{j['id'].split('@')[0]}" + (f" {exit_word(j)}" if exit_word(j) else "") for j in jobs[:limit])
    return shown + (f", and {len(jobs) - limit} more" if len(jobs) > limit else "")


def summary_lines(outcome: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The final summary of a wait: how many ended how, which ones, where the output is."""
    total = sum(len(v) for v in outcome.values())
    ok, bad = outcome["ok"], outcome["nonzero"]
    lines = [f"{total} job(s): {len(ok) + len(bad)} retrieved ({len(ok)} exit 0, {len(bad)} exit != 0),"
             f" {len(outcome['removed'])} removed, {len(outcome['failed'])} failed"
             + (f", {len(outcome['attention'])} need attention" if outcome["attention"] else "")
             + (f", {len(outcome['active'])} not finished" if outcome["active"] else "")]
    if bad:
        lines.append(f"  exit != 0: {_ids(bad)}")
    if outcome["removed"]:
        lines.append(f"  removed: {_ids(outcome['removed'])}")
    if outcome["failed"]:
        lines.append(f"  failed: {_ids(outcome['failed'])}")
    if outcome["attention"]:
        lines.append(f"  need attention: {_ids(outcome['attention'])} (fix what stops them, then 'rsub retrieve ID')")
    homes = sorted({str(j.get("retrieved_to") or j.get("iwd")) for j in ok + bad
                    if j.get("retrieved_to") or j.get("iwd")})
    if homes:
        lines.append("  output in " + ", ".join(homes[:3]) + (f" and {len(homes) - 3} more" if len(homes) > 3 else ""))
    return lines
