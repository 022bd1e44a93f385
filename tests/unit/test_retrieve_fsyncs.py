"""The embedded scheduler's retrieve: each file fsynced, each directory once per batch, before it reports home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import JobStatus, SubmitRequest


def test_a_batch_fsyncs_each_file_and_each_directory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    (work / "job.sh").write_text("#!/bin/sh\n")
    schedd = LocalSchedd("local", tmp_path / "q", execute="fake", autostart=False)
    try:
        made = schedd.submit(SubmitRequest(
            text="executable = job.sh\noutput = out.$(Process)\nerror = logs/err.$(Process)\n"
                 "leave_in_queue = true\nqueue 20\n",
            cwd=str(work)))
        schedd.spool(made)
        ids = [f"{made.cluster}.{p}" for p in made.procs]
        schedd.fake_advance(ids, JobStatus.COMPLETED)
        for key in sorted(schedd._procs):
            spool = Path(str(schedd.ad(key)["Iwd"]))
            spool.mkdir(parents=True, exist_ok=True)
            (spool / "_condor_stdout").write_text(f"out {key[1]}\n")
            (spool / "_condor_stderr").write_text(f"err {key[1]}\n")
        synced: list[str] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
        schedd.retrieve(ids)
        dirs = sorted(p for p in synced if os.path.isdir(p))
        assert dirs == sorted({str(work), str(work / "logs")})  # once each, not once per file
        assert len(synced) - len(dirs) == 40  # every file's content
        assert all((work / f"out.{p}").read_text() == f"out {p}\n" for p in made.procs)
        assert all((work / "logs" / f"err.{p}").exists() for p in made.procs)
        assert all(schedd.ad(k).get("StageOutFinish") for k in schedd._procs)  # reported home after the syncs
    finally:
        schedd.close()
