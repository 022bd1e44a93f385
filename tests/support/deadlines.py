"""Waiting with deadlines, never bare sleeps: poll a predicate until it holds, or check that it keeps holding."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05  # seconds between two looks: short beside every deadline in the suites


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; at the deadline, fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {value!r}")
        time.sleep(POLL_INTERVAL)


def holds_for(predicate: Callable[[], T], seconds: float, what: str) -> T:
    """Check that `predicate` stays truthy for `seconds` (an observation window, not a sync)."""
    end = time.monotonic() + seconds
    while True:
        value = predicate()
        assert value, f"{what} stopped holding; last seen: {value!r}"
        if time.monotonic() >= end:
            return value
        time.sleep(POLL_INTERVAL)
