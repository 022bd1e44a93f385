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


def test_overlapping_polls_never_hold_the_collector_off_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    # One poll hung on a slow schedd while others come and go: past MAX_HELD the next one lets it run once.
    runs: list[int] = []
    monkeypatch.setattr(gcpause.gc, "collect", lambda *a: runs.append(1) or 0)
    now = [1000.0]
    with gcpause.paused(lambda: now[0]):
        now[0] += gcpause.MAX_HELD / 2
        with gcpause.paused(lambda: now[0]):
            pass
        assert runs == []
        now[0] += gcpause.MAX_HELD
        with gcpause.paused(lambda: now[0]):
            assert not gc.isenabled()
        assert runs == [1]
        with gcpause.paused(lambda: now[0]):  # counted again from that run
            pass
        assert runs == [1]
    assert gc.isenabled()
