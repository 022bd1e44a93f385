"""What the commands print: tables (aligned and coloured on a terminal), jobsub's columns, notes, JSON."""

from __future__ import annotations

import os
import sys

from rsub.wire.protocol import TABLE_COLUMNS
from rsub.wire.vocabulary import STATES

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any


def emit_json(data: Any) -> None:
    import json  # here: a table view needs none of it

    print(json.dumps(data, indent=2))


# -- tables: aligned and coloured on a terminal, tab-separated and plain otherwise ----------------

EXIT_NONZERO = "exit!=0"  # a job done (or done but for its output) that exited non-zero or was killed

# SGR colours of the job states (and so of their jobsub letters).
STATE_COLOURS = {"running": "32", "held": "33", "failed": "31", "removed": "2", "completed": "36",
                 "retrieved": "32;2", "spooling": "34", "submitting": "34", EXIT_NONZERO: "31"}


def on_terminal() -> bool:
    return sys.stdout.isatty()


def use_colour() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    return on_terminal() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def one_line(row: list[str]) -> list[str]:
    """The cells with their runs of whitespace made one space (a hold reason may hold tabs or newlines)."""
    try:
        line = " ".join(row)
    except TypeError:  # a cell that is not text
        line = ""
    # Every whitespace character but the space is unprintable: a printable line with no double, leading or
    # trailing space has nothing to change (the common case, 1,000 rows of `rsub q` checked in 1 ms, not 4).
    if line and line.isprintable() and "  " not in line and line[0] != " " and line[-1] != " ":
        return row
    return [" ".join(str(c).split()) for c in row]


def render_table(rows: list[list[str]], header: list[str], *, tty: bool, colour: bool = False,
                 colour_column: int | None = None, row_states: list[str] | None = None) -> list[str]:
    """The lines of a table: on a terminal, aligned columns (the state column coloured if `colour`);
    otherwise a header and one line per row, the columns separated by tabs, for cut, awk and sort."""
    rows = [one_line(r) for r in rows]
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
    lines = render_table(rows, header, tty=tty, colour=tty and use_colour(), colour_column=colour_column,
                         row_states=row_states)
    sys.stdout.write("\n".join(lines) + "\n")  # one write: 1,000 print() calls cost `rsub q` a few ms


def run_time_text(seconds: float | None) -> str:
    """jobsub_q's RUN_TIME: D+HH:MM:SS, or - when rsub never saw the job run."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    return f"{days}+{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


_SUBMITTED: dict[str, str] = {}  # a cluster's jobs share their submit time: format it once


def utc_seconds(iso_time: str) -> int | None:
    """The epoch seconds of a time as rsubd prints it (2026-12-01T09:00:00Z), without importing datetime."""
    digits = iso_time[:4] + iso_time[5:7] + iso_time[8:10] + iso_time[11:13] + iso_time[14:16] + iso_time[17:19]
    if len(iso_time) != 20 or iso_time[4::3] != "--T::Z" or not (digits.isascii() and digits.isdigit()):
        return None
    y, m, d = int(iso_time[:4]), int(iso_time[5:7]), int(iso_time[8:10])
    hh, mm, ss = int(iso_time[11:13]), int(iso_time[14:16]), int(iso_time[17:19])
    if not (1 <= m <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 60):
        return None
    y -= m <= 2  # days from the civil date (H. Hinnant's algorithm), so that no calendar module is needed
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


def submitted_text(iso_time: str | None) -> str:
    """jobsub_q's SUBMITTED: MM/DD HH:MM in local time."""
    if not iso_time:
        return "-"
    if iso_time not in _SUBMITTED:
        seconds = utc_seconds(iso_time)
        if seconds is None:  # not rsubd's own format: let datetime read it
            import datetime

            text = datetime.datetime.fromisoformat(iso_time).astimezone().strftime("%m/%d %H:%M")
        else:
            import time

            text = time.strftime("%m/%d %H:%M", time.localtime(seconds))
        _SUBMITTED[iso_time] = text
    return _SUBMITTED[iso_time]


# jobsub_q's columns, then the exit code (last, so that `cut -f5` is still the status letter).
JOBSUB_HEADER = ["JOBID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "PRI", "SIZE", "CMD", "EXIT"]


def jobsub_row(job: dict[str, Any]) -> list[str]:
    js = job.get("jobsub") or {}
    return [job["id"], js.get("owner") or "-", submitted_text(job.get("submitted_at")),
            run_time_text(js.get("run_time")), js.get("status") or "?", str(js.get("priority", 0)),
            str(js.get("size") or "-"), js.get("command") or "-", exit_text(job) or "-"]


def exited_badly(job: dict[str, Any]) -> bool:
    """A job retrieved or completed whose exit code is not 0, or that a signal killed."""
    return job["state"] in ("retrieved", "completed") and (
        job.get("exit_signal") is not None or job.get("exit_code") not in (None, 0))


def shown_state(job: dict[str, Any]) -> str:
    """The state a view colours and counts a job by: a retrieved job that exited non-zero is not green."""
    return EXIT_NONZERO if job["state"] == "retrieved" and exited_badly(job) else job["state"]


# The per-cluster summary: condor_q's batch view's words and order (DONE RUN IDLE HOLD), then the rest.
CLUSTER_WORDS = {"retrieved": "done", "running": "run", "idle": "idle", "held": "held", "submitting": "spooling",
                 "spooling": "spooling", "completed": "completed", "removed": "removed", "failed": "failed",
                 EXIT_NONZERO: EXIT_NONZERO}
BIG_CLUSTER = 10  # a cluster of more jobs than this in a view gets its own summary line on a terminal
FOOTER_ORDER = (*STATES, EXIT_NONZERO)  # the global count: in the order jobs go through the states


def count_text(counts: dict[str, int], order: tuple[str, ...] | list[str], words: dict[str, str] | None = None) -> str:
    """`3 running, 2 retrieved, 1 exit!=0`: the counts by shown state in `order`, named by `words`."""
    merged: dict[str, int] = {}
    for k in sorted(counts, key=lambda k: order.index(k) if k in order else len(order)):
        word = (words or {}).get(k, k)
        merged[word] = merged.get(word, 0) + counts[k]
    return ", ".join(f"{n:,} {word}" for word, n in merged.items())


def summary_lines(jobs: list[dict[str, Any]], *, big: int = BIG_CLUSTER) -> list[str]:
    """The closing lines on a terminal: one per cluster of more than `big` jobs, then the count of all by state."""
    counts: dict[str, int] = {}
    clusters: dict[str, dict[str, int]] = {}
    for j in jobs:
        state = shown_state(j)
        counts[state] = counts.get(state, 0) + 1
        per = clusters.setdefault(f"{j['cluster']}@{j['schedd']}", {})
        per[state] = per.get(state, 0) + 1
    lines = [""]
    lines += [f"{name}: {count_text(per, list(CLUSTER_WORDS), CLUSTER_WORDS)}" for name, per in clusters.items()
              if sum(per.values()) > big]
    lines.append(f"{len(jobs):,} job{'' if len(jobs) == 1 else 's'}; {count_text(counts, FOOTER_ORDER)}")
    return lines


def table_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """Jobs as an rsubd from before `rows` sends them (brief dicts, "jobsub" inside), as protocol.TABLE_COLUMNS."""
    rows = []
    for j in jobs:
        js = j.get("jobsub") or {}
        more = {k: j[k] for k in ("replaces", "replaced_by", "dag") if j.get(k)} or None
        rows.append([j["id"], j["cluster"], j["schedd"], j["state"], j.get("submitted_at"), j.get("exit_code"),
                     j.get("exit_signal"), js.get("owner"), js.get("status"), js.get("run_time"), js.get("command"),
                     js.get("priority", 0), js.get("size"), more])
    return rows


def table_jobs(columns: list[str] | tuple[str, ...], rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The rows as flat dicts ("more" merged in), for what reads a few jobs' fields: the summary, the DAG lines."""
    jobs = []
    for r in rows:
        job = dict(zip(columns, r, strict=False))
        job.update(job.pop("more", None) or {})
        jobs.append(job)
    return jobs


def show_jobsub(jobs: list[dict[str, Any]]) -> None:
    """jobsub_q's columns, and on a terminal a summary per big cluster and the count of jobs by state."""
    show_table(TABLE_COLUMNS, table_rows(jobs))


def show_table(columns: list[str] | tuple[str, ...], rows: list[list[Any]]) -> None:
    """show_jobsub of a `rows` reply: jobsub_row's cells read straight from the lists, no dict built per job."""
    tty = on_terminal()
    if not rows and tty:
        print("no jobs")
        return
    at = {name: i for i, name in enumerate(columns)}
    jid, owner, when, run, letter, pri, size, cmd = (at[c] for c in ("id", "owner", "submitted_at", "run_time",
                                                                      "status", "priority", "size", "command"))
    state, code, signal = at["state"], at["exit_code"], at["exit_signal"]
    cells, states = [], []
    for r in rows:
        exit_cell = "-" if r[code] is None and r[signal] is None else \
            f"sig {r[signal]}" if r[signal] is not None else str(r[code])
        cells.append([r[jid], r[owner] or "-", submitted_text(r[when]), run_time_text(r[run]), r[letter] or "?",
                      str(r[pri]), str(r[size] or "-"), r[cmd] or "-", exit_cell])
        bad = r[state] == "retrieved" and (r[signal] is not None or r[code] not in (None, 0))
        states.append(EXIT_NONZERO if bad else r[state])
    table(cells, JOBSUB_HEADER, states, colour_column=4)
    if tty:
        jobs = table_jobs(columns, rows)
        print("\n".join(summary_lines(jobs)))
        runs = [text for j in jobs if (text := lineage_text(j))]
        if runs:
            print("resubmitted: " + ", ".join(runs[:10]) + (f" and {len(runs) - 10:,} more" if len(runs) > 10 else ""))


def lineage_text(job: dict[str, Any]) -> str:
    """`12.17 -> 30.0`: the job rsub resubmit ran again for this one, or the one this one was run again for."""
    me = job["id"].split("@")[0]
    parts = [f"{job['replaces']} -> {me}"] if job.get("replaces") else []
    if job.get("replaced_by"):
        parts.append(f"{me} -> {job['replaced_by']}")
    return "; ".join(parts)


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def note(job: dict[str, Any]) -> str:
    """The NOTE column: the lineage (if any), what to know about the job, and the hold policy's releases."""
    parts = [lineage_text(job), state_note(job)]
    if job.get("auto_releases"):
        parts.append(f"released automatically, {ordinal(job['auto_releases'])} time")
    return "; ".join(p for p in parts if p)


def state_note(job: dict[str, Any]) -> str:
    if job.get("dag") and job["state"] not in ("retrieved", "removed", "failed"):
        from rsub.dagview import progress

        return f"DAG {progress(job['dag'])}"
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
        exited = f"exit code {job['exit_code']}; " if exited_badly(job) else ""
        return f"{exited}output in {job.get('retrieved_to') or job['iwd']}"
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
          ["JOB", "STATE", "EXIT", "SUBMITTED", "NOTE"], [shown_state(j) for j in jobs], colour_column=1)
    if on_terminal():
        print("\n".join(summary_lines(jobs)))
