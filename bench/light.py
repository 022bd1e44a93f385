"""What a bench's fresh process needs and nothing more (the standard library only): the jobs' files.

`python -m bench.submit --direct` measures what a process that submits straight to
the backend pays to start, so it must not import rsubd's ledger, poller or logging.
"""

from __future__ import annotations

from pathlib import Path

JOB_SH = "#!/bin/sh\necho \"hello $1\"\n"


def description(procs: int) -> str:
    return (f"executable = job.sh\narguments = $(Process)\noutput = out.$(Process)\n"
            f"error = err.$(Process)\nqueue {procs}\n")


def workdir(root: Path) -> Path:
    """The directory jobs are submitted from, with their executable."""
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.sh").write_text(JOB_SH)
    (work / "job.sh").chmod(0o755)
    return work
