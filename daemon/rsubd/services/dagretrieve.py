"""A DAG's outputs home: from the staging directory the one retrieve wrote into, each file to its node's initialdir.

The schedd writes every new or changed file of the DAGMan job's spool directory flat
into its SUBMIT_Iwd, the staging directory (dag/stage.py). Each file then moves to
where condor_submit_dag users expect it: a node's declared output (output, error, log,
transfer_output_files) to that node's initialdir, everything else (DAGMan's own files,
the rescue DAG, what nodes made without naming it) to the DAG's directory. The stale
lock file is not brought home, nor the staged inputs that came back unchanged.

No clobbering: a file already at home with the same contents stays as it is; one that
differs and was written before the DAG was submitted is an old output, replaced as a
condor_submit_dag rerun replaces it; one written since (the user's edit, or another
run's output) keeps its name, and the DAG's copy is left beside it as
`NAME.rsub-refetched-<time>` (logged). A repeat after a crash finds what it placed
already home, identical, and moves on.
"""

from __future__ import annotations

import filecmp
import fnmatch
import os
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from rsubd.dag import stage
from rsubd.services.retrieval import REFETCHED

log = structlog.get_logger("rsubd.services.dagretrieve")


def _home(name: str, manifest: dict[str, Any]) -> Path:
    for pattern, home in manifest.get("homes", []):
        if fnmatch.fnmatchcase(name, pattern):
            return Path(home)
    return Path(manifest["dag_dir"])


def _skip(path: Path, manifest: dict[str, Any]) -> bool:
    name = path.name
    dag = manifest["dag_name"]
    if name in (stage.MANIFEST, stage.MANIFEST + ".partial", f"{dag}.lock") or path.is_dir():
        return True
    if ".rsub-" in name:
        return True  # rsub's own (a per-proc event log already merged, a set-aside copy)
    staged = manifest.get("staged", {}).get(name)
    if staged is not None:
        st = path.stat()
        return bool([st.st_size, st.st_mtime_ns] == staged)  # a staged input, back unchanged (or never sent)
    return False


def place(directory: Path) -> list[str]:
    """Move a retrieved DAG's files home; returns the paths of copies left beside a user's newer file."""
    manifest = stage.read_manifest(directory)
    if manifest is None:
        return []
    submitted = float(manifest.get("submitted_at") or 0.0)
    kept: list[str] = []
    failed: list[str] = []
    stamp = int(time.time())
    for path in sorted(directory.iterdir()):
        try:
            if _skip(path, manifest):
                continue
            target = _home(path.name, manifest) / path.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(target))
            elif target.is_file() and filecmp.cmp(path, target, shallow=False):
                path.unlink()
            elif target.is_file() and target.stat().st_mtime < submitted - 1:
                os.replace(path, target) if path.stat().st_dev == target.stat().st_dev else shutil.move(
                    str(path), str(target))
            else:
                beside = target.with_name(f"{target.name}{REFETCHED}{stamp}")
                shutil.move(str(path), str(beside))
                kept.append(str(beside))
                log.warning("dag.kept_user_copy", path=str(target), refetched=str(beside))
        except OSError as e:
            log.warning("dag.place_failed", path=str(path), error=e.strerror)
            failed.append(f"{path.name}: {e.strerror or e}")
    if failed:
        # The others are home; these stay in the staging directory (which is then kept), named in the error.
        raise OSError(f"{len(failed)} file(s) could not be moved home: {'; '.join(failed[:5])}")
    return kept


def finish(directory: Path) -> None:
    """The DAG is home: its staging directory goes (the flat copies, the manifest)."""
    shutil.rmtree(directory, ignore_errors=True)
