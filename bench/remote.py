"""The embedded scheduler in a process of its own, so a bench can measure the daemon alone.

`RemoteSchedd` implements the Schedd boundary by sending each call over a pipe
to a LocalSchedd (fake execution) in a child process, and the answer comes back
pickled: the same path a real pool's answers take through rsubd's HTCondor
worker process. Unpickling the answer is the daemon's cost; building it is the
schedd's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsubd.backends.schedd import Action, ActResult, JobAd, JobSpec, SubmitRequest, SubmitResult


def _serve(conn: multiprocessing.connection.Connection, state: str) -> None:
    from bench.common import change_some, open_schedd, quiet

    quiet()
    schedd = open_schedd(Path(state))
    while True:
        message = conn.recv()
        if message is None:
            schedd.close()
            conn.send((True, None, 0.0))
            return
        op, args, kwargs = message
        cpu = time.process_time()
        try:
            if op == "change_some":
                keys = sorted(schedd._procs)  # the bench's own view of the queue, not the boundary's
                value = change_some(schedd, keys, *args, **kwargs)
            else:
                value = getattr(schedd, op)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller, as the boundary's
            conn.send((False, e, time.process_time() - cpu))
        else:
            conn.send((True, value, time.process_time() - cpu))


class RemoteSchedd:
    name = "local"

    def __init__(self, state: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, str(state)), daemon=True)
        self._process.start()
        child.close()
        self.schedd_cpu = 0.0  # CPU seconds the schedd process spent answering
        self.wait = 0.0  # wall seconds this process waited for answers, unpickling included
        self.calls: dict[str, int] = {}

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        self._conn.send((op, args, kwargs))
        ok, value, cpu = self._conn.recv()
        self.wait += time.perf_counter() - started
        self.schedd_cpu += cpu
        self.calls[op] = self.calls.get(op, 0) + 1
        if not ok:
            raise value
        return value

    def submit(self, request: SubmitRequest) -> SubmitResult:
        result: SubmitResult = self._call("submit", request)
        return result

    def spool(self, result: SubmitResult) -> None:
        self._call("spool", result)

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        ads: list[JobAd] = self._call("query", constraint, list(projection))
        return ads

    def retrieve(self, jobs: JobSpec) -> None:
        self._call("retrieve", jobs)

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        count: int = self._call("edit", jobs, attr, value)
        return count

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        tally: ActResult = self._call("act", action, jobs, reason)
        return tally

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None,
                since: int | str | None = None) -> list[JobAd]:
        ads: list[JobAd] = self._call("history", constraint, list(projection), match, since)
        return ads

    def change_some(self, fraction: float) -> dict[str, int]:
        counts: dict[str, int] = self._call("change_some", fraction)
        return counts

    def reset(self) -> None:
        self.schedd_cpu = self.wait = 0.0
        self.calls = {}

    def close(self) -> None:
        self._conn.send(None)
        self._conn.recv()
        self._process.join(timeout=30)
