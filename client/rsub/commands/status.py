"""`rsub q`, `rsub status` and `rsub history`: the views of the ledger, and their filters."""

from __future__ import annotations

import argparse
import sys

from rsub.connection import Failure, call
from rsub.views import emit_json, show_jobs, show_jobsub, show_table, table_jobs
from rsub.wire.vocabulary import EXIT_USAGE, JSON_VERSION, STATES

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """An age such as 90s, 45m, 2h, 3d, 1w or 1d12h, in seconds (argparse's type for --since and --older-than)."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if not parts or re.sub(r"\s+", "", text.lower()) != "".join(n + u for n, u in parts):
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (use a number and a unit: 90s, 45m, 2h, 3d, 1w, 1d12h)")
    return sum(float(n) * _AGE_UNITS[u] for n, u in parts)


def cluster_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"not a cluster id: {text!r}")
    return int(text)


def limit_number(text: str) -> int:
    """--limit: a number of jobs, 0 for all."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text!r} (0 for all)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, not {value}")
    return value


def truncation_note(result: dict[str, Any], limit: int) -> str | None:
    """What a page cut short says on stderr; None when it holds every job that matched."""
    if not result.get("truncated"):
        return None
    shown, total = len(result["rows"] if "rows" in result else result["jobs"]), result["total"]
    how = "--limit 0 for all" if limit else "the most rsubd sends at once; narrow with --state, --cluster or --since"
    return f"rsub: showing {shown:,} of {total:,} ({how})"


def filter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of q, status and history, as the request's fields."""
    states = [*(args.state or []), *(getattr(args, "state_flags", None) or [])]
    fields = {"states": states, "schedd": args.schedd, "clusters": args.cluster or [],
              "since": args.since, "older_than": args.older_than}
    # Sent only when given, so an older rsubd still answers the common case.
    for key in ("group", "user"):
        if getattr(args, key, None) is not None:
            fields[key] = getattr(args, key)
    return fields


def submit_lines(submits: list[dict[str, Any]]) -> list[str]:
    """Submits that made no job (cut off, interrupted, refused), after the jobs: the job table cannot show them."""
    if not submits:
        return []
    lines = ["", f"{len(submits)} submit(s) with no jobs:"]
    for s in submits:
        what = s["submit_file"] or f"a description on stdin in {s['submit_dir']}"
        lines.append(f"  {s['created_at']}  {s['state']:<11}  {what}, schedd {s['schedd']}")
        if s.get("note"):
            lines.append(f"      {s['note']}")
    return lines


def add_jobid(parser: argparse.ArgumentParser) -> None:
    """jobsub's -J/--jobid: another way to give a job id (12.0@schedd), as the jobsub commands take it."""
    parser.add_argument("-J", "--jobid", dest="jobids", action="append", default=[], metavar="ID",
                        help="a job id, as jobsub's -J takes it: 12.0@SCHEDD (repeatable)")


def cmd_status(args: argparse.Namespace, *, view: str = "status") -> int:
    """`rsub status` (rsub's own columns), `rsub q` (active jobs) and `rsub history` (final ones), jobsub's columns."""
    from rsub import dagview

    split = [dagview.split_node(i) for i in [*args.ids, *getattr(args, "jobids", [])]]
    only = {node for _, node in split if node}
    nodes = bool(getattr(args, "nodes", False) or only)
    fields = {"ids": [i for i, _ in split], "limit": args.limit, **filter_fields(args)}
    if nodes:
        fields["nodes"] = True
    if getattr(args, "summary", False):
        return cmd_summary(args, fields["ids"])
    if view != "status" and not args.json:
        # The table needs a third of each job's fields, and as lists under one header: a tenth of the bytes.
        fields["rows"] = fields["brief"] = True
    result = ask(args, view, fields)
    cut = truncation_note(result, args.limit)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        if cut:
            print(cut, file=sys.stderr)
        return 0
    if view == "status" and (args.long or (len(fields["ids"]) == 1 and "." in fields["ids"][0].split("@")[0])):
        from rsub.jobview import show_long

        show_long(result["jobs"])  # one job (rsub status 12.0), or --long: every field and what it used
    elif view == "status":
        show_jobs(result["jobs"])
    elif "rows" in result:
        show_table(result["columns"], result["rows"])
    else:
        show_jobsub(result["jobs"])
    if "rows" in result:  # the DAGs' lines below the table: only their rows are made dicts
        more = result["columns"].index("more")
        dags = table_jobs(result["columns"], [r for r in result["rows"] if r[more] and "dag" in r[more]])
    else:
        dags = result["jobs"]
    dagview.show(dags, nodes=nodes, only=only or None, summary=view != "status")
    if cut:
        print(cut, file=sys.stderr)
    for line in submit_lines(result.get("submits") or []):
        print(line)
    for name, info in result.get("schedds", {}).items():
        if info.get("last_error"):
            print(f"warning: schedd {name} is not answering ({info['last_error']}); "
                  f"this view is {info['stale_seconds']} s old", file=sys.stderr)
    return 0


def ask(args: argparse.Namespace, view: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The status or history request of a view; to an rsubd from before `rows`, the same without it (brief dicts)."""
    kind, extra = ("history", {}) if view == "history" else ("status", {"active": view == "q"})
    try:
        return call(args, kind, **extra, **fields)
    except Failure as e:
        if not (fields.get("rows") and e.exit_code == EXIT_USAGE and "unknown field 'rows'" in e.message):
            raise
    return call(args, kind, **extra, **{k: v for k, v in fields.items() if k != "rows"})


def cmd_summary(args: argparse.Namespace, ids: list[str]) -> int:
    """`rsub status 12 --summary`: each cluster's jobs by state and exit code, and their usage against the requests."""
    if not ids:
        raise Failure(EXIT_USAGE, "--summary needs the clusters to summarise: rsub status 12 --summary")
    result = call(args, "summary", ids=ids)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    from rsub.jobview import show_summary

    show_summary(result)
    return 0


VIEWS = {
    "q": ("jobs still active, in jobsub_q's columns",
          "rsub q\nrsub q --state held --schedd fnal\nrsub q -G dune --user $USER --run\nrsub q --since 2h --json"),
    "status": ("jobs, all or by id, with their exit codes and what to do about them",
               "rsub status 12\nrsub status 12.0\nrsub status 12 --summary\n"
               "rsub status --state failed --older-than 3d\nrsub status 12.0@local --json"),
    "history": ("jobs that are done (retrieved, removed or failed), newest first, in jobsub's columns",
                "rsub history\nrsub history --state removed --since 1d\nrsub history --cluster 12 --json"),
}


def add_parser(name: str, add: AddParser) -> None:
    text, examples = VIEWS[name]
    s = add(name, text, examples)
    s.add_argument("ids", nargs="*", metavar="ID", help="CLUSTER, CLUSTER.PROC, optionally @SCHEDD; a DAG's node"
                   " as CLUSTER@SCHEDD:NODE")
    s.add_argument("--nodes", action="store_true", help="a DAG's nodes too, each with its attempts and exit codes")
    s.add_argument("--json", action="store_true", help=f"print JSON (shape version {JSON_VERSION})")
    s.add_argument("--limit", type=limit_number, default=1000,
                   help="at most this many jobs, the newest (default 1000; 0: all); a cut is said on stderr")
    s.add_argument("--state", action="append", choices=STATES, metavar="STATE",
                   help=f"only jobs in this state (repeatable): {', '.join(STATES)}")
    s.add_argument("--schedd", help="only jobs on this schedd")
    s.add_argument("--cluster", action="append", type=cluster_number, metavar="CLUSTER",
                   help="only jobs of this cluster (repeatable)")
    s.add_argument("--since", type=parse_age, metavar="AGE",
                   help="only jobs submitted at most AGE ago (90s, 45m, 2h, 3d, 1w)")
    s.add_argument("--older-than", type=parse_age, metavar="AGE", help="only jobs submitted at least AGE ago")
    s.add_argument("-G", "--group", help="only jobs submitted with -G GROUP (their [jobsub] group attribute)")
    s.add_argument("--user", help="only jobs of this user (every job rsubd submits is its own user's)")
    add_jobid(s)
    if name == "status":
        s.add_argument("--summary", action="store_true", help="per cluster: jobs by state and exit code, wall time "
                       "and memory (median, max) against the request")
        s.add_argument("-l", "--long", action="store_true",
                       help="every field of each job and what it used (the default for one CLUSTER.PROC)")
    if name == "q":  # jobsub_q's state shortcuts, the same as --state
        for flag, state in (("--hold", "held"), ("--run", "running"), ("--idle", "idle")):
            s.add_argument(flag, dest="state_flags", action="append_const", const=state,
                           help=f"only {state} jobs (as --state {state})")
    s.set_defaults(func=lambda a, view=name: cmd_status(a, view=view))
