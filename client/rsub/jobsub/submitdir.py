"""Writing a jobsub-style job out: its per-submit directory (materialize), tarballs of directories, progress."""

from __future__ import annotations

import datetime
import re
import shutil
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Self

from rsub.jobsub.plan import BuildError, Plan
from rsub.jobsub.render import SUBMIT_FILE, tar_path, wrapper
from rsub.wire import paths
from rsub.wire.vocabulary import WRAPPER

PROGRESS_THRESHOLD = 50 * 1024**2  # bytes of input above which a terminal shows spooling progress


# -- writing it out --------------------------------------------------------------


def submit_dir(script_name: str, now: datetime.datetime | None = None) -> Path:
    """A fresh per-submit directory's path (not created): <state>/jobs/<UTC time>-<script>-<id>."""
    now = now or datetime.datetime.now(datetime.UTC)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", script_name)[:64] or "job"
    return paths.state_dir() / "jobs" / f"{now:%Y%m%dT%H%M%SZ}-{name}-{uuid.uuid4().hex[:8]}"


def _tar_directory(source: Path, dest: Path) -> None:
    """Tar up a directory's contents (not the directory itself), as jobsub's tardir:// does."""
    tmp = dest.with_name(f".{dest.name}.partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    tmp.replace(dest)


def make_private(directory: Path) -> None:
    """A new per-submit directory (0700) under rsub's private jobs directory; BuildError saying why not."""
    try:
        for parent in (directory.parent.parent, directory.parent):
            paths.ensure_private_dir(parent)
        directory.mkdir(mode=0o700)
    except OSError as e:
        raise BuildError(f"cannot create {directory}: {e.strerror or e}") from None


def materialize(plan: Plan, directory: Path, description: str, *, job_token: bool = False) -> None:
    """Create the per-submit directory with the wrapper, the tarballs made from directories, and job.sub."""
    make_private(directory)
    try:
        for tar in plan.tars:
            if tar.from_directory:
                try:
                    _tar_directory(tar.source, directory / tar.name)
                except (OSError, tarfile.TarError) as e:
                    raise BuildError(f"--tar {tar.source}: cannot tar it up: {e}") from None
        exe = directory / WRAPPER
        exe.write_text(wrapper(plan, job_token=job_token), encoding="utf-8")
        exe.chmod(0o755)
        (directory / SUBMIT_FILE).write_text(description, encoding="utf-8")
    except BaseException as e:
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, OSError):
            raise BuildError(f"cannot write {directory}: {e.strerror or e}") from None
        raise


def input_bytes(plan: Plan, directory: Path) -> int:
    """How much the schedd is sent: the script, the -f files and the tarballs."""
    files = [plan.script, *plan.inputs, *(tar_path(plan, t, directory) for t in plan.tars)]
    total = 0
    for path in files:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


# -- progress --------------------------------------------------------------------


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """While a large submit is in flight, "spooling 1.2 GB ... 12 s" on a terminal; nothing otherwise."""

    def __init__(self, total: int, stream: IO[str], *, threshold: int = PROGRESS_THRESHOLD,
                 interval: float = 1.0) -> None:
        self.total = total
        self.stream = stream
        self.interval = interval
        self.enabled = total > threshold and stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0

    def _show(self, elapsed: float) -> None:
        text = f"\rspooling {human_size(self.total)} ... {elapsed:.0f} s"
        self._width = max(self._width, len(text))
        self.stream.write(text)
        self.stream.flush()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            self._show(time.monotonic() - started)
            if self._done.wait(self.interval):
                return

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="rsub-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
