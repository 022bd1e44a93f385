"""The htcondor worker looks a schedd up by its Name in the pool (`schedd_name`), not by rsub's name for it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from rsubd.backends.condor.worker import CondorSettings, _Worker
from rsubd.backends.schedd import ErrorKind, ScheddError


class FakeBindings:
    """What `_Worker.schedd()` uses of htcondor2: a collector that knows one schedd, and Schedd(ad)."""

    def __init__(self, known: str) -> None:
        self.known = known
        self.asked: list[str | None] = []
        self.DaemonType = SimpleNamespace(Schedd="Schedd")

    def Collector(self, pool: str | None) -> Any:
        def locate(kind: str, name: str | None = None) -> dict[str, str] | None:
            self.asked.append(name)
            return {"Name": name or self.known} if name in (None, self.known) else None
        return SimpleNamespace(locate=locate)

    def Schedd(self, ad: dict[str, str]) -> dict[str, str]:
        return ad


def worker(settings: CondorSettings, bindings: FakeBindings) -> _Worker:
    w = _Worker.__new__(_Worker)  # not __init__: it imports the real bindings and sets the environment
    w.h, w.settings, w._schedd, w._pending = bindings, settings, None, {}
    return w


def test_the_collector_is_asked_for_the_pool_name() -> None:
    bindings = FakeBindings("schedd2@vm")
    located = worker(CondorSettings(name="two", schedd_name="schedd2@vm", pool="vm:9618"), bindings).schedd()
    assert bindings.asked == ["schedd2@vm"] and located == {"Name": "schedd2@vm"}


def test_without_a_pool_name_rsubs_name_is_looked_up_and_a_miss_names_it() -> None:
    bindings = FakeBindings("schedd2@vm")
    with pytest.raises(ScheddError) as e:
        worker(CondorSettings(name="two", pool="vm:9618"), bindings).schedd()
    assert bindings.asked == ["two"]
    assert e.value.kind is ErrorKind.UNKNOWN_SCHEDD and "knows no schedd named 'two'" in str(e.value)
