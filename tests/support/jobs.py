"""Job files for the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_job(directory: Path, name: str, script: str) -> Path:
    """An executable /bin/sh script `name` in `directory`, its body dedented."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path
