"""What the embedded scheduler looks up on every query and tick, kept current as ads change.

A 100,000-job queue must not be walked attribute by attribute: the index keeps
every spelling each attribute name has in the queue (ClassAd names are
case-insensitive, dicts are not), which jobs are idle or running, and how many
procs each cluster still has in the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rsubd.backends.local.ads import Ad, Expr
from rsubd.backends.local.fastpath import MISSING
from rsubd.backends.schedd import JobStatus

Key = tuple[int, int]
IDLE, RUNNING = int(JobStatus.IDLE), int(JobStatus.RUNNING)


class QueueIndex:
    def __init__(self) -> None:
        self.spellings: dict[str, tuple[str, ...]] = {}
        self._known: set[str] = set()
        self.idle: set[Key] = set()
        self.running: set[Key] = set()
        self.cluster_size: dict[int, int] = {}

    def learn(self, names: Iterable[str]) -> None:
        """Note the attribute names an ad now has."""
        for name in names:
            if name not in self._known:
                self._known.add(name)
                lower = name.lower()
                self.spellings[lower] = (*self.spellings.get(lower, ()), name)

    def add(self, key: Key, status: int) -> None:
        """A proc entered the queue."""
        self.cluster_size[key[0]] = self.cluster_size.get(key[0], 0) + 1
        self.status(key, status)

    def status(self, key: Key, status: int) -> None:
        if status == IDLE:
            self.idle.add(key)
            self.running.discard(key)
        elif status == RUNNING:
            self.running.add(key)
            self.idle.discard(key)
        else:
            self.idle.discard(key)
            self.running.discard(key)

    def remove(self, key: Key) -> bool:
        """A proc left the queue; True when its cluster has no proc left."""
        self.idle.discard(key)
        self.running.discard(key)
        left = self.cluster_size.get(key[0], 1) - 1
        if left > 0:
            self.cluster_size[key[0]] = left
            return False
        self.cluster_size.pop(key[0], None)
        return True

    def getter(self, proc: Mapping[str, Any], cluster: Mapping[str, Any]) -> Callable[[str], Any]:
        """Lookup by lower-case name in a proc ad overlaid on its cluster ad."""
        spellings = self.spellings

        def get(name: str) -> Any:
            names = spellings.get(name, ())
            for spelled in names:
                if spelled in proc:
                    return proc[spelled]
            for spelled in names:
                if spelled in cluster:
                    return cluster[spelled]
            return MISSING

        return get

    def projector(self, projection: Iterable[str]) -> Callable[[Mapping[str, Any], Mapping[str, Any],
                                                                 Callable[[str], Any]], Ad]:
        """A function making projected ads as `ads.project` does, without merging whole ads."""
        plan = [names for name in projection if (names := self.spellings.get(name.lower()))]

        def project(proc: Mapping[str, Any], cluster: Mapping[str, Any], evaluate: Callable[[str], Any]) -> Ad:
            out: Ad = {}
            for names in plan:
                for layer in (proc, cluster):
                    spelled = next((n for n in names if n in layer), None) if len(names) > 1 else names[0]
                    if spelled is not None and spelled in layer:
                        value = layer[spelled]
                        out[spelled] = evaluate(spelled) if type(value) is Expr else value
                        break
            return out

        return project
