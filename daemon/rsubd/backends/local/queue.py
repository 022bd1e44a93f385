"""The embedded scheduler's queue: job ads in memory over the SQLite store, their index, and history.

`JobQueue` holds the state every part of the scheduler shares, and the few
primitives that keep it consistent (`_set` for every change of a queued ad,
`_save`, `_leave_queue`). The scheduler's work on it is in `execution`
(starting and reaping jobs) and `actions` (edit, hold, release, remove).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import classad2

from rsub.wire.paths import ensure_private_dir
from rsubd.backends.local import events
from rsubd.backends.local.ads import Ad, Constraint, to_classad
from rsubd.backends.local.index import QueueIndex
from rsubd.backends.local.jobads import SCHEDULER_UNIVERSE
from rsubd.backends.local.store import QueueStore
from rsubd.backends.schedd import ErrorKind, JobSpec, JobStatus, ScheddError

Key = tuple[int, int]


class JobQueue:
    """The queue of one embedded schedd under `root`, with `slots` jobs at most running at once."""

    def __init__(self, name: str, root: Path, *, slots: int | None, clock: Callable[[], float], execute: str,
                 release_delay: float = 0.0) -> None:
        self.execute = execute
        self.release_delay = release_delay
        self.name = name
        self.root = root
        self.slots = slots or max(1, os.cpu_count() or 1)
        self._clock = clock
        self._owner = getpass.getuser()
        self._spool = root / "spool"
        self._execute = root / "execute"
        for private in (root, self._spool, self._execute):  # users' inputs and outputs: mode 0700, as the README says
            ensure_private_dir(private)
        self._store = QueueStore(root / "queue.db")
        self._lock = threading.RLock()
        self._clusters, self._procs = self._store.load()
        # Scheduler-universe jobs: run by the scheduler itself (DAGMan), outside the slots.
        self._unslotted: set[Key] = {
            k for k, proc in self._procs.items()
            if proc.get("JobUniverse", self._clusters.get(k[0], {}).get("JobUniverse")) == SCHEDULER_UNIVERSE}
        self._index = QueueIndex()
        for cluster_ad in self._clusters.values():
            self._index.learn(cluster_ad)
        for key, proc_ad in self._procs.items():
            self._index.learn(proc_ad)
            self._index.add(key, self._status(key))
        self._cache: dict[Key, classad2.ClassAd] = {}
        self._collected: list[Path] = []  # sandboxes whose output is in the spool, to clear after the save
        self._starters: dict[Key, subprocess.Popen[bytes]] = {}
        # Starters this process did not start (they outlived a restart), found by command line once: (pid, start time).
        self._adopted: dict[Key, tuple[int, int]] = {}
        self._unspooled: set[int] = set()
        self._unmatched: set[Key] = set()  # idle jobs no slot can run (execution.py); an edit may change that
        self._slot_ads: tuple[float, list[Ad]] | None = None
        # Spooled and not yet released (a real schedd takes about a second): due time by job. A job
        # stopped in between (StageInStart set, still held 16) is released at the first tick.
        self._releasing: dict[Key, float] = {
            k: 0.0 for k in self._procs
            if self._status(k) == JobStatus.HELD and self.ad(k).get("HoldReasonCode") == 16
            and self.ad(k).get("StageInStart") is not None}
        self._dirty: set[Key] = set()
        self._leave_check: set[Key] = set(self._procs)
        self._last_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- ads ---------------------------------------------------------------

    def ad(self, key: Key) -> Ad:
        """The full ad of a queued job: its cluster's attributes overlaid by its own."""
        return {**self._clusters.get(key[0], {}), **self._procs[key]}

    def _classad(self, key: Key) -> classad2.ClassAd:
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = to_classad(self.ad(key))
        return cached

    def _set(self, key: Key, **attrs: Any) -> None:
        # The one place a queued proc's attributes change: the index must hear of every change.
        logged = "JobStatus" in attrs and self.execute == "real"  # fake mode writes no files
        old = self._status(key) if logged else 0
        self._procs[key].update(attrs)
        self._index.learn(attrs)
        if "JobStatus" in attrs:
            self._index.status(key, int(attrs["JobStatus"]))
        self._cache.pop(key, None)
        self._dirty.add(key)
        if logged and old != attrs["JobStatus"]:
            events.changed(self.ad(key), old, self._clock())

    def _status(self, key: Key) -> int:
        # On the scheduler's hot path: read the one attribute without merging the whole ad.
        proc = self._procs[key]
        status = proc["JobStatus"] if "JobStatus" in proc else self._clusters.get(key[0], {}).get("JobStatus", 0)
        return int(status)

    def _add_cluster(self, cluster: int, shared: Ad, procs: list[Ad]) -> None:
        """A new cluster in the store, the queue and its index (under the caller's lock)."""
        self._store.add_cluster(cluster, shared, dict(enumerate(procs)))
        self._clusters[cluster] = shared
        self._index.learn(shared)
        for proc, ad in enumerate(procs):
            self._procs[(cluster, proc)] = ad
            self._index.learn(ad)
            self._index.add((cluster, proc), self._status((cluster, proc)))

    def _save(self) -> None:
        self._store.save_jobs({k: self._procs[k] for k in self._dirty if k in self._procs})
        self._dirty.clear()

    def _jobdir(self, key: Key) -> Path:
        return self._spool / str(key[0]) / str(key[1])

    def _select(self, spec: JobSpec) -> list[Key]:
        if isinstance(spec, str):
            text = spec.strip()
            head, dot, tail = text.partition(".")
            if head.isdigit() and dot and tail.isdigit():
                # A job id, as htcondor2 reads "c.p": a missing job is reported (not found), not skipped.
                return [(int(head), int(tail))]
            if head.isdigit() and not dot:
                return [k for k in self._procs if k[0] == int(head)]
            constraint = Constraint(text)
            if constraint.fast is None:
                return [k for k in list(self._procs) if constraint.matches(self._classad(k))]
            return [k for k in list(self._procs) if self._matches(constraint, k)]
        keys = []
        for item in spec:
            c, _, p = item.partition(".")
            if not c.isdigit() or not p.isdigit():
                raise ScheddError(ErrorKind.INVALID, f"The job_spec string must be a clusterID[.procID]: {item!r}")
            keys.append((int(c), int(p)))
        return keys

    def _matches(self, constraint: Constraint, key: Key) -> bool:
        verdict = constraint.decide(self._index.getter(self._procs[key], self._clusters.get(key[0], {})))
        return constraint.matches(self._classad(key)) if verdict is None else verdict

    def _sandbox(self, key: Key) -> Path:
        return self._execute / f"dir_{key[0]}_{key[1]}"

    def _leave_queue(self, keys: Iterable[Key]) -> None:
        """Move to history every job among `keys` that is finished and not kept by LeaveJobInQueue."""
        leaving = []
        for key in dict.fromkeys(keys):  # a job named twice leaves once
            if self._status(key) not in (JobStatus.COMPLETED, JobStatus.REMOVED):
                continue
            kept = self._classad(key)
            if "LeaveJobInQueue" in kept and kept.eval("LeaveJobInQueue") is True:  # a removed job too, as on a schedd
                continue
            leaving.append(key)
        if not leaving:
            return
        self._save()
        entries = [(c, p, self.ad((c, p))) for c, p in leaving]
        empty = []
        for key in leaving:
            self._unslotted.discard(key)
            del self._procs[key]
            self._cache.pop(key, None)
            if self._index.remove(key):
                empty.append(key[0])
            if self.execute == "real":
                shutil.rmtree(self._jobdir(key), ignore_errors=True)
        for c in empty:
            self._clusters.pop(c, None)
        self._store.to_history(entries, empty)

