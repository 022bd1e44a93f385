"""The staging directory of a remote DAG and the scheduler-universe job that runs the access point's DAGMan.

The staging directory holds the flat copy of everything the DAG needs (rewritten .dag
and .sub files, copies of the executables, scripts and inputs) and a manifest of it.
It is the DAGMan job's initialdir: the schedd spools from it, and the one retrieve of
the DAGMan job writes into it; rsubd then moves each new file home (services/dagretrieve.py).
Copies, never links: a retrieve rewriting a changed input must not write through to the user's file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsubd.dag.discover import Plan

MANIFEST = ".rsub-dag.json"
DEFAULT_DAGMAN = "/usr/bin/condor_dagman"
# DAGMan warns when the submit file's version is newer than its own; rsub claims an old one.
CSD_VERSION = "$CondorVersion: 23.0.0 2023-09-29 BuildID: rsub $"
QUEUE_UPDATE_INTERVAL = 5  # seconds: DAG_* attributes otherwise go stale for 300 s


@dataclass(frozen=True)
class Staged:
    directory: Path
    description: str
    manifest: dict[str, Any]


def dagman_arguments(dag: str, dagman: str, *, max_jobs: int | None = None) -> str:
    """DAGMan's arguments, relative paths only: it runs in the spool directory."""
    words = ["-f", "-l", ".", "-Lockfile", f"{dag}.lock", "-AutoRescue", "1", "-DoRescueFrom", "0", "-Dag", dag,
             "-Suppress_notification", "-CsdVersion", f"'{CSD_VERSION}'", "-Dagman", dagman]
    if max_jobs is not None:
        words += ["-MaxJobs", str(max_jobs)]
    return '"' + " ".join(words) + '"'


def description(dag: str, dagman: str, inputs: list[str], *, max_jobs: int | None = None,
                extra: list[tuple[str, str]] | None = None) -> str:
    """The scheduler-universe description of the DAGMan job (README "DAGs"; stage 2 of the DAG probe)."""
    environment = (f"_CONDOR_DAGMAN_LOG={dag}.dagman.out _CONDOR_MAX_DAGMAN_LOG=0 "
                   f"_CONDOR_DAGMAN_QUEUE_UPDATE_INTERVAL={QUEUE_UPDATE_INTERVAL}")
    lines = [
        ("universe", "scheduler"),
        ("executable", dagman),
        ("transfer_executable", "false"),
        ("arguments", dagman_arguments(dag, dagman, max_jobs=max_jobs)),
        ("environment", f'"{environment}"'),
        ("output", f"{dag}.lib.out"),
        ("error", f"{dag}.lib.err"),
        ("log", f"{dag}.dagman.log"),
        ("remove_kill_sig", "SIGUSR1"),
        ("My.OtherJobRemoveRequirements", '"DAGManJobId =?= $(cluster)"'),
        ("My.IsDaemonCore", "True"),
        ("on_exit_remove", "(ExitSignal =?= 11 || (ExitCode =!= UNDEFINED && ExitCode >=0 && ExitCode <= 2))"),
        # Hold/release (or an access point restart) would otherwise leave DAGMan idle for 300 s.
        ("My.DisableCoolDown", "true"),
        ("My.RsubDag", "true"),
        ("transfer_input_files", ",".join(inputs)),
        *(extra or []),
    ]
    return "".join(f"{k} = {v}\n" for k, v in lines) + "queue\n"


def write(plan: Plan, directory: Path, *, dagman: str, max_jobs: int | None = None, submitted_at: float,
          extra_files: dict[str, Path] | None = None) -> Staged:
    """Make the staging directory: the flat copies, the rewritten texts, the manifest; and the description."""
    directory.mkdir(parents=True, mode=0o700)
    files = {**plan.flat.files, **(extra_files or {})}
    for flat, source in files.items():
        target = directory / flat
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copy2(source, target)
    for flat, text in plan.flat.texts.items():
        (directory / flat).write_text(text)
    staged = {}
    for flat in [*files, *plan.flat.texts]:
        st = (directory / flat).stat()
        staged[flat] = [st.st_size, st.st_mtime_ns]
    max_jobs = max_jobs if max_jobs is not None else None
    manifest: dict[str, Any] = {
        "version": 1, "dag_dir": str(plan.dag_dir), "dag_name": plan.dag_name, "submitted_at": submitted_at,
        "staged": staged, "homes": plan.homes(),
        "nodes": [{"name": n.name, "home": n.home, "submit_file": n.submit_file, "retries": n.retries,
                   "parents": list(n.parents)} for n in plan.nodes],
    }
    tmp = directory / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, directory / MANIFEST)
    text = description(plan.dag_name, dagman, sorted(staged), max_jobs=max_jobs)
    return Staged(directory, text, manifest)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a staging directory, or None when `directory` is not one."""
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == 1 else None
