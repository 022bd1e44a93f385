"""The kill harness's workload: submit directories whose every output byte is known in advance.

Each submission is a directory of its own holding two input files, a job script
and a submit description of 1-5 procs. The job writes stdout, stderr and one
output file (remapped per proc), each derived from its inputs, its cluster and
its proc, so `expected_outputs` can say byte for byte what rsub must bring home.
The cluster is part of the content on purpose: output fetched from any other
cluster of the same submit (a duplicate, or a cluster rsub replaced) is wrong.
"""

from __future__ import annotations

import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """#!/bin/sh
# args: CLUSTER PROC SLEEP
sleep "$3"
cat in_a.txt in_b.txt
echo "cluster $1 proc $2"
echo "stderr of proc $2 in cluster $1" >&2
{ echo "result $2"; cat in_b.txt in_a.txt; } > result.txt
"""

DESCRIPTION = """executable = job.sh
arguments = $(Cluster) $(Process) {sleep}
transfer_input_files = in_a.txt, in_b.txt
output = out_$(Process).txt
error = err_$(Process).txt
transfer_output_files = result.txt
transfer_output_remaps = "result.txt = result_$(Process).txt"
queue {procs}
"""
OUTPUT_PATTERNS = ("out_{proc}.txt", "err_{proc}.txt", "result_{proc}.txt")
SLEEPS = ("0", "0", "0.1", "0.3", "0.6", "1.2")  # long enough, now and then, to be held while running


@dataclass
class Submission:
    """One `rsub submit`: its directory, its client process and what the client said."""

    index: int
    directory: Path
    procs: int
    run: int  # the run it was launched in
    client: subprocess.Popen[str] | None = None
    outcome: str = "pending"  # pending | ok | not_sent | failed
    cluster: int | None = None
    message: str = ""
    rm_attempted: bool = False

    def reap(self) -> bool:
        """Read the client's verdict once it has exited; True if it just finished."""
        if self.client is None or self.outcome != "pending" or self.client.poll() is None:
            return False
        out, err = self.client.communicate()
        code = self.client.returncode
        self.client = None
        if code == 0:
            try:
                self.cluster = int(json.loads(out)["cluster"])
                self.outcome = "ok"
            except (ValueError, KeyError, TypeError):
                self.outcome, self.message = "failed", f"exit 0 but unreadable output: {out[:200]!r}"
        elif code == 3 and "went away during the submit" not in err:
            # Never reached rsubd (it was down): nothing may exist for this directory.
            self.outcome, self.message = "not_sent", err.strip()[-300:]
        else:
            self.outcome, self.message = "failed", f"exit {code}: {err.strip()[-500:]}"
        return True


def write_submission(directory: Path, rng: random.Random, procs: int) -> None:
    directory.mkdir(parents=True)
    (directory / "in_a.txt").write_bytes(rng.randbytes(rng.randint(1, 300)))
    (directory / "in_b.txt").write_bytes(f"{directory.name} {rng.random()}\n".encode())
    script = directory / "job.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    (directory / "job.sub").write_text(DESCRIPTION.format(sleep=rng.choice(SLEEPS), procs=procs))


def expected_outputs(directory: Path, cluster: int, proc: int) -> dict[Path, bytes]:
    """Each output file of one job and the exact bytes it must hold."""
    a = (directory / "in_a.txt").read_bytes()
    b = (directory / "in_b.txt").read_bytes()
    return {
        directory / f"out_{proc}.txt": a + b + f"cluster {cluster} proc {proc}\n".encode(),
        directory / f"err_{proc}.txt": f"stderr of proc {proc} in cluster {cluster}\n".encode(),
        directory / f"result_{proc}.txt": f"result {proc}\n".encode() + b + a,
    }


def check_outputs(directory: Path, cluster: int, proc: int) -> tuple[list[str], list[str]]:
    """(missing files, files with wrong content) for one job."""
    missing, wrong = [], []
    for path, want in expected_outputs(directory, cluster, proc).items():
        try:
            got = path.read_bytes()
        except FileNotFoundError:
            missing.append(str(path))
            continue
        if got != want:
            wrong.append(str(path))
    return missing, wrong
