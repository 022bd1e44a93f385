"""End-to-end fixtures: a real rsubd process on a short temporary socket, driven by real rsub commands."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Rsubd, short_root


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: Unix socket paths are limited to about 108 bytes."""
    path = short_root("rsub-e2e-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rsubd(short_tmp: Path) -> Iterator[Rsubd]:
    daemon = Rsubd(short_tmp)
    daemon.start()
    yield daemon
    daemon.stop()
    daemon.kill_leftover_jobs()


@pytest.fixture
def workdir(short_tmp: Path) -> Path:
    path = short_tmp / "work"
    path.mkdir()
    return path
