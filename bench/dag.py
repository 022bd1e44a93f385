"""The embedded DAGMan's speed: the reference diamond, a 20-node chain and a 50-node fan-out, really run.

Unlike the other benchmarks this one runs jobs (the embedded scheduler in real mode, 2 slots):
each node is a /bin/sh script that exits at once, so the figures are DAGMan's and the
scheduler's own cost per hop (a tick of 0.2 s, a starter process per node).

- diamond: the reference A -> (B, C) -> D with C failing once (RETRY C 2), spool() to JobStatus 4.
  A real HTCondor 25 pool took 46.5-55.3 s (5 s DAGMan cycles). Target: under 5 s.
- chain: 20 nodes one after the other; `per_hop` is the wall time over 20. Target: under 0.75 s.
- fanout: one node, 48 in parallel, one last node (2 slots). Reported, no target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, SubmitRequest

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "dag"
DIAMOND_TARGET = 5.0
HOP_TARGET = 0.75
NODE_SUB = "executable = node.sh\narguments = $(JOB)\noutput = $(JOB).out\nqueue\n"


def dagman_job(where: Path, files: list[str]) -> str:
    return f"""universe = scheduler
executable = /usr/bin/condor_dagman
transfer_executable = false
initialdir = {where}
arguments = "-f -l . -Lockfile x.dag.lock -AutoRescue 1 -DoRescueFrom 0 -Dag x.dag"
environment = "_CONDOR_DAGMAN_LOG=x.dag.dagman.out _CONDOR_DAGMAN_QUEUE_UPDATE_INTERVAL=5"
output = x.dag.lib.out
error = x.dag.lib.err
My.OtherJobRemoveRequirements = "DAGManJobId =?= $(cluster)"
on_exit_remove = (ExitSignal =?= 11 || (ExitCode =!= UNDEFINED && ExitCode >=0 && ExitCode <= 2))
leave_in_queue = JobStatus == 4
transfer_input_files = {",".join(files)}
queue
"""


def run(schedd: LocalSchedd, where: Path, files: list[str]) -> tuple[float, dict[str, Any]]:
    """Submit, spool and wait for the DAGMan job to complete; seconds from spool() to JobStatus 4."""
    result = schedd.submit(SubmitRequest(text=dagman_job(where, files), cwd=str(where)))
    schedd.spool(result)
    started = time.perf_counter()
    while True:
        ads = schedd.query(f"ClusterId == {result.cluster}", ["JobStatus", "ExitCode", "DAG_NodesDone"])
        if ads and ads[0]["JobStatus"] == 4:
            return time.perf_counter() - started, dict(ads[0])
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"DAG {result.cluster} did not finish: {ads!r}")
        time.sleep(0.02)


def write_dag(where: Path, nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    where.mkdir(parents=True)
    (where / "node.sub").write_text(NODE_SUB, encoding="utf-8")
    (where / "node.sh").write_text("#!/bin/sh\necho $1\n", encoding="utf-8")
    (where / "node.sh").chmod(0o755)
    (where / "x.dag").write_text("".join(f"JOB {n} node.sub\n" for n in nodes)
                                 + "".join(f"PARENT {p} CHILD {c}\n" for p, c in edges), encoding="utf-8")
    return ["x.dag", "node.sub", "node.sh"]


def diamond(where: Path) -> list[str]:
    shutil.copytree(DATA, where)
    for script in ("node.sh", "flaky.sh"):
        (where / script).chmod(0o755)
    for node in "ABCD":
        (where / f"input_{node}.txt").write_text(f"input {node}\n", encoding="utf-8")
    (where / "x.dag").write_text((DATA / "probe.dag").read_text(encoding="utf-8"), encoding="utf-8")
    return ["x.dag", "node.sub", "flaky.sub", "node.sh", "flaky.sh", *(f"input_{n}.txt" for n in "ABCD")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="ignored (the shared dataset cache of `python -m bench`)")
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsub-bench-dag-") as tmp:
        root = Path(tmp)
        schedd = LocalSchedd("bench-dag", root / "schedd", slots=2)
        try:
            d_seconds, d_ad = run(schedd, root / "diamond", diamond(root / "diamond"))
            chain = [f"N{i}" for i in range(20)]
            c_seconds, c_ad = run(schedd, root / "chain",
                                  write_dag(root / "chain", chain, list(itertools.pairwise(chain))))
            middle = [f"M{i}" for i in range(48)]
            f_seconds, f_ad = run(schedd, root / "fanout", write_dag(
                root / "fanout", ["S", *middle, "E"], [("S", m) for m in middle] + [(m, "E") for m in middle]))
        finally:
            schedd.act(Action.REMOVE, "JobStatus =!= 3 && JobStatus =!= 4", "bench finished")
            schedd.close()
    ok = d_ad["ExitCode"] == 0 and c_ad["DAG_NodesDone"] == 20 and f_ad["DAG_NodesDone"] == 50
    result = {
        "diamond": {"seconds": round(d_seconds, 2), "target": DIAMOND_TARGET, "real_pool_seconds": "46.5-55.3"},
        "chain": {"nodes": 20, "seconds": round(c_seconds, 2), "per_hop": round(c_seconds / 20, 3),
                  "target_per_hop": HOP_TARGET},
        "fanout": {"nodes": 50, "slots": 2, "seconds": round(f_seconds, 2)},
        "meets_target": ok and d_seconds < DIAMOND_TARGET and c_seconds / 20 < HOP_TARGET,
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
