"""The cycle collector is held off over a poll and back on after it, overlapping polls and errors included."""

from __future__ import annotations

import gc

import pytest

from rsubd.platform import gcpause


def test_off_inside_on_after_even_when_nested_or_failing() -> None:
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():  # another schedd's poll, overlapping
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first poll is still running
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gcpause.paused():
        raise RuntimeError("a poll that fails")
    assert gc.isenabled()


def test_left_off_if_someone_else_turned_it_off() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
