"""What the commands print: tables (aligned and coloured on a terminal), jobsub's columns, notes, JSON."""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# -- tables: aligned and coloured on a terminal, tab-separated and plain otherwise ----------------

# SGR colours of the job states (and so of their jobsub letters).
STATE_COLOURS = {"running": "32", "held": "33", "failed": "31", "removed": "2", "completed": "36",
                 "retrieved": "32;2", "spooling": "34", "submitting": "34"}


def on_terminal() -> bool:
    return sys.stdout.isatty()


def use_colour() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    return on_terminal() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def render_table(rows: list[list[str]], header: list[str], *, tty: bool, colour: bool = False,
                 colour_column: int | None = None, row_states: list[str] | None = None) -> list[str]:
    """The lines of a table: on a terminal, aligned columns (the state column coloured if `colour`);
    otherwise a header and one line per row, the columns separated by tabs, for cut, awk and sort."""
    rows = [[" ".join(str(c).split()) for c in r] for r in rows]  # a hold reason may hold tabs or newlines
    if not tty:
        return ["\t".join(header), *("\t".join(r) for r in rows)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, r in enumerate([header, *rows]):
        cells = list(r)
        pads = [" " * (w - len(c)) for c, w in zip(cells, widths, strict=False)]
        code = STATE_COLOURS.get(row_states[n - 1], "") if colour and n and row_states else ""
        if code and colour_column is not None:
            cells[colour_column] = f"\033[{code}m{cells[colour_column]}\033[0m"
        line = "  ".join(c + p for c, p in zip(cells, pads, strict=False)).rstrip()
        lines.append(f"\033[1m{line}\033[0m" if colour and n == 0 else line)
    return lines


def table(rows: list[list[str]], header: list[str], row_states: list[str] | None = None,
          colour_column: int | None = None) -> None:
    tty = on_terminal()
    for line in render_table(rows, header, tty=tty, colour=tty and use_colour(), colour_column=colour_column,
                             row_states=row_states):
        print(line)


def run_time_text(seconds: float | None) -> str:
    """jobsub_q's RUN_TIME: D+HH:MM:SS, or - when rsub never saw the job run."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    return f"{days}+{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


_SUBMITTED: dict[str, str] = {}  # a cluster's jobs share their submit time: format it once


def submitted_text(iso_time: str | None) -> str:
    """jobsub_q's SUBMITTED: MM/DD HH:MM in local time."""
    if not iso_time:
        return "-"
    if iso_time not in _SUBMITTED:
        import datetime

        _SUBMITTED[iso_time] = datetime.datetime.fromisoformat(iso_time).astimezone().strftime("%m/%d %H:%M")
    return _SUBMITTED[iso_time]


JOBSUB_HEADER = ["JOBID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "PRI", "SIZE", "CMD"]


def jobsub_row(job: dict[str, Any]) -> list[str]:
    js = job.get("jobsub") or {}
    return [job["id"], js.get("owner") or "-", submitted_text(job.get("submitted_at")),
            run_time_text(js.get("run_time")), js.get("status") or "?", str(js.get("priority", 0)),
            str(js.get("size") or "-"), js.get("command") or "-"]


def show_jobsub(jobs: list[dict[str, Any]]) -> None:
    """jobsub_q's columns, and on a terminal its closing count of jobs by state."""
    tty = on_terminal()
    if not jobs and tty:
        print("no jobs")
        return
    table([jobsub_row(j) for j in jobs], JOBSUB_HEADER, [j["state"] for j in jobs], colour_column=4)
    if tty:
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["state"]] = counts.get(j["state"], 0) + 1
        print(f"\n{len(jobs)} jobs; " + ", ".join(f"{n} {state}" for state, n in counts.items()))


def note(job: dict[str, Any]) -> str:
    if job.get("attention"):
        return f"NEEDS ATTENTION: {job['attention']}"
    if job["state"] in ("held", "spooling") and job.get("hold_reason"):
        hint = f" [{job['hold_hint']}]" if job.get("hold_hint") else ""
        return f"held (code {job.get('hold_code')}): {job['hold_reason']}{hint}"
    if job.get("exit_signal") is not None and job["state"] in ("retrieved", "completed"):
        return f"killed by signal {job['exit_signal']}; output in {job['iwd']}"
    if job.get("error"):
        return str(job["error"])
    if job["state"] == "removed":
        return f"removed: {job.get('remove_reason') or ''}"
    if job["state"] in ("retrieved", "completed"):
        return f"output in {job.get('retrieved_to') or job['iwd']}"
    return ""


def exit_text(job: dict[str, Any]) -> str:
    if job.get("exit_signal") is not None:
        return f"sig {job['exit_signal']}"
    return "" if job.get("exit_code") is None else str(job["exit_code"])


def show_jobs(jobs: list[dict[str, Any]]) -> None:
    if not jobs and on_terminal():
        print("no jobs")
        return
    table([[j["id"], j["state"], exit_text(j), (j["submitted_at"] or "")[:19], note(j)] for j in jobs],
          ["JOB", "STATE", "EXIT", "SUBMITTED", "NOTE"], [j["state"] for j in jobs], colour_column=1)
