"""Job files for the tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.daemon import Rsubd


def write_job(directory: Path, name: str, script: str) -> Path:
    """An executable /bin/sh script `name` in `directory`, its body dedented."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path


def submit_shell(rsubd: Rsubd, workdir: Path, body: str, queue: str) -> int:
    """`rsub submit` a cluster running `sh -c BODY` (output out.$(Process)) with `queue`; its cluster id."""
    (workdir / "job.sub").write_text(f"executable = /bin/sh\narguments = \"-c '{body}'\"\n"
                                     f"transfer_executable = false\noutput = out.$(Process)\n{queue}\n")
    result = rsubd.rsub("submit", "--json", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    cluster: int = json.loads(result.stdout)["cluster"]
    return cluster
