"""The contract suite runs once per backend: the embedded scheduler always, a real pool if configured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, Schedd

from .contract_kit import JobKit

CONDOR_CONFIG_ENV = "RSUB_TEST_CONDOR_CONFIG"


@pytest.fixture(scope="session", params=["local", "htcondor"])
def schedd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Schedd]:
    """One schedd per backend for the whole run, shared as a real pool is; tests tag their own jobs."""
    if request.param == "local":
        local = LocalSchedd(
            "contract-local", tmp_path_factory.mktemp("local-schedd"), slots=4, autostart=True
        )
        try:
            yield local
        finally:
            # Nothing may outlive the run: the starters live in sessions of their own.
            local.act(
                Action.REMOVE, "JobStatus =!= 3 && JobStatus =!= 4", "contract suite finished"
            )
            local.close()
        return
    config = os.environ.get(CONDOR_CONFIG_ENV)
    if not config:
        pytest.skip(f"{CONDOR_CONFIG_ENV} not set: no real pool to test against")
    from rsubd.backends.condor.client import CondorSchedd, CondorSettings

    # RSUB_TEST_SCHEDD_NAME picks a schedd by its Name (default: the pool's local schedd);
    # RSUB_TEST_POOL names the collector (default: the one condor_config names).
    condor = CondorSchedd(CondorSettings(
        name=os.environ.get("RSUB_TEST_SCHEDD_NAME", ""), pool=os.environ.get("RSUB_TEST_POOL"),
        condor_config=config, call_timeout=60, transfer_timeout=300,
    ))
    try:
        yield condor
    finally:
        condor.close()


@pytest.fixture
def kit(schedd: Schedd, tmp_path: Path) -> Iterator[JobKit]:
    """Job building and polling for one test, with its own RsubInstance tag; cleans up after it."""
    jobs = JobKit(schedd, tmp_path)
    try:
        yield jobs
    finally:
        jobs.cleanup()
