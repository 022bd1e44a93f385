"""The HTCondor worker process: the one place `htcondor2` is imported, and its call protocol.

Every binding call runs in a worker process, one per schedd: the bindings hold
the GIL for a whole call, and `submit`, `edit` and `history` have no timeout of
their own, so a schedd that accepts a connection and never answers would
otherwise freeze rsubd. The daemon side (`WorkerHost`) sends one operation at
a time over a pipe and waits at most the operation's wall-clock limit; past it,
the worker is killed and replaced and the call fails with a timeout.

The protocol: the worker sends ("ready",) or ("error", kind, message) once it has
loaded the bindings; then, for each (op, args) it receives, ("ok", value) or
("error", kind, message), where kind is an `ErrorKind` value.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from rsubd.backends.condor.errors import classify, explain
from rsubd.backends.schedd import (
    Action,
    ActResult,
    ErrorKind,
    JobAd,
    JobSpec,
    ScheddError,
    SubmitRequest,
    SubmitResult,
)
from rsubd.tokens.manager import Credential

log = structlog.get_logger("rsubd.backends.condor.client")
TRANSFER_OPS = ("spool", "retrieve")


@dataclass(frozen=True)
class CondorSettings:
    """How a worker finds its schedd and which HTCondor settings it runs with."""

    name: str  # rsub's name for the schedd, in logs and messages
    schedd_name: str | None = None  # its Name in the pool, looked up in the collector; None: `name`
    pool: str | None = None
    address: str | None = None  # a sinful string "<host:port>", bypassing the collector
    condor_config: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    call_timeout: float = 60.0
    transfer_timeout: float = 600.0


# -- the worker process ------------------------------------------------------------


def _ad(classad: Any) -> JobAd:
    # Imported here, as the bindings are: the worker sets its HTCondor environment before any of HTCondor's
    # libraries load.
    from rsubd.backends.classads import plain_ad

    return plain_ad(classad)


class _Worker:
    """Lives in the worker process; holds the located Schedd and the SubmitResults to spool."""

    def __init__(self, settings: CondorSettings, env: Mapping[str, str]) -> None:
        if settings.condor_config:
            os.environ["CONDOR_CONFIG"] = settings.condor_config
        for key, value in settings.params.items():
            os.environ[f"_condor_{key}"] = str(value)
        # The token profile's settings (SEC_TOKEN_DIRECTORY, SCITOKENS_FILE); set before the bindings load,
        # and a new worker is started for each new token, since the bindings cache their security session.
        os.environ.update(env)
        import htcondor2

        self.h = htcondor2
        self.settings = settings
        self._schedd: Any = None
        self._pending: dict[int, Any] = {}

    def schedd(self) -> Any:
        if self._schedd is None:
            import classad2

            s = self.settings
            lookup = s.name if s.schedd_name is None else s.schedd_name
            if s.address:
                ad = classad2.ClassAd({"MyAddress": s.address, "Name": lookup, "MyType": "Scheduler",
                                       "CondorVersion": "$CondorVersion: 25.0.0 2025-01-01 $"})
            else:
                collector = self.h.Collector(s.pool)
                # An empty name means the pool's local schedd (the contract suite's default).
                ad = collector.locate(self.h.DaemonType.Schedd, lookup) if lookup else collector.locate(
                    self.h.DaemonType.Schedd)
                if ad is None:
                    raise ScheddError(ErrorKind.UNKNOWN_SCHEDD,
                                      f"the collector {s.pool or '(default)'} knows no schedd named {lookup!r}")
            self._schedd = self.h.Schedd(ad)
        return self._schedd

    def call(self, op: str, args: tuple[Any, ...]) -> Any:
        return getattr(self, f"op_{op}")(*args)

    def op_submit(self, request: SubmitRequest) -> SubmitResult:
        os.chdir(request.cwd)
        result = self.schedd().submit(self.h.Submit(request.text), spool=True)
        self._pending[result.cluster()] = result
        return SubmitResult(cluster=result.cluster(), first_proc=result.first_proc(), num_procs=result.num_procs())

    def op_spool(self, result: SubmitResult) -> None:
        pending = self._pending.pop(result.cluster, None)
        if pending is None:
            raise ScheddError(ErrorKind.INVALID,
                              f"cluster {result.cluster} was not submitted by this worker; it cannot be spooled")
        self.schedd().spool(pending)

    def op_query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        return [_ad(a) for a in self.schedd().query(constraint, list(projection))]

    def op_retrieve(self, jobs: JobSpec) -> None:
        self.schedd().retrieve(jobs if isinstance(jobs, str) else list(jobs))

    def op_edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        return int(self.schedd().edit(jobs if isinstance(jobs, str) else list(jobs), attr, value))

    def op_act(self, action: Action, jobs: JobSpec, reason: str | None) -> ActResult:
        kind = {Action.HOLD: self.h.JobAction.Hold, Action.RELEASE: self.h.JobAction.Release,
                Action.REMOVE: self.h.JobAction.Remove}[action]
        spec = jobs if isinstance(jobs, str) else list(jobs)
        # A plain-string reason is silently dropped by the bindings; a (text, subcode) tuple is kept.
        ad = self.schedd().act(kind, spec, (reason, 0) if reason else None)

        def get(k: str) -> int:
            return int(ad.get(k) or 0)

        return ActResult(success=get("TotalSuccess"), not_found=get("TotalNotFound"),
                         already_done=get("TotalAlreadyDone"), bad_status=get("TotalBadStatus"),
                         error=get("TotalError"), permission_denied=get("TotalPermissionDenied"))

    def op_slot_ads(self, projection: Sequence[str]) -> list[JobAd]:
        """One projected query of the pool's slot ads at the collector (`rsub why`)."""
        collector = self.h.Collector(self.settings.pool)
        ads = collector.query(self.h.AdType.Startd, projection=list(projection))
        return [_slot_ad(a) for a in ads]

    def op_match_ad(self, cluster: int, proc: int) -> JobAd | None:
        """The job's whole ad, each expression as its text (Requirements must stay one to be matched)."""
        import classad2

        from rsubd.backends.classads import plain

        ads = self.schedd().query(f"ClusterId == {int(cluster)} && ProcId == {int(proc)}")
        if not ads:
            return None
        out: JobAd = {}
        for key in ads[0]:
            value = ads[0][key]  # a literal's value, or an ExprTree: indexing does not evaluate
            out[key] = {"__expr__": str(value)} if isinstance(value, classad2.ExprTree) else plain(value)
        return out

    def op_history(self, constraint: str, projection: Sequence[str], match: int | None,
                   since: int | str | None) -> list[JobAd]:
        ads = self.schedd().history(constraint, list(projection), match=-1 if match is None else match, since=since)
        return [_ad(a) for a in ads]


def _slot_ad(classad: Any) -> JobAd:
    """A startd ad as plain data; START and Requirements as their expression's text, to evaluate against a job."""
    out = _ad(classad)
    for name in ("START", "Requirements"):
        if name in classad:
            out[name] = {"__expr__": str(classad.lookup(name))}
    return out


def worker_main(conn: multiprocessing.connection.Connection, settings: CondorSettings,
                env: Mapping[str, str] | None = None) -> None:
    """The worker's loop: one request in, one reply out, until the pipe closes."""
    try:
        worker = _Worker(settings, env or {})
    except Exception as e:  # noqa: BLE001 - any failure to load the bindings is reported to the daemon
        conn.send(("error", ErrorKind.OTHER.value, f"cannot load the HTCondor bindings: {e}"))
        return
    conn.send(("ready",))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        started = time.monotonic()
        try:
            conn.send(("ok", worker.call(op, args)))
        except ScheddError as e:
            conn.send(("error", e.kind.value, e.message))
        except worker.h.HTCondorException as e:
            kind, text = explain(str(e), time.monotonic() - started)
            conn.send(("error", kind.value, text))
        except ValueError as e:
            conn.send(("error", classify(str(e), is_value_error=True).value, str(e)))
        except Exception as e:  # noqa: BLE001 - the worker outlives one bad call; the daemon gets the error
            conn.send(("error", ErrorKind.OTHER.value, f"{type(e).__name__}: {e}"))


# -- the daemon side -------------------------------------------------------------------


class WorkerHost:
    """The daemon side of one worker process: started on first use, calls under a wall-clock limit, replaced
    when a call overruns, the worker dies or the token changes."""

    def __init__(self, settings: CondorSettings, credential: Callable[[], Credential] | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self._credential = credential
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._generation: int | None = None
        self._unspooled: set[int] = set()  # clusters whose SubmitResult lives in the current worker
        self.restarts = 0

    def _start(self) -> multiprocessing.connection.Connection:
        cred = self._credential() if self._credential else None
        parent, child = self._ctx.Pipe()
        self._generation = cred.generation if cred else None
        self._proc = self._ctx.Process(target=worker_main, args=(child, self.settings, dict(cred.env) if cred else {}),
                                       name=f"rsubd-condor-{self.name}", daemon=True)
        self._proc.start()
        child.close()
        if not parent.poll(60):
            self._kill()
            raise ScheddError(ErrorKind.TIMEOUT, "the HTCondor worker did not start within 60 s")
        first = parent.recv()
        if first[0] != "ready":
            self._kill()
            raise ScheddError(ErrorKind(first[1]), first[2])
        self._conn = parent
        return parent

    def _kill(self) -> None:
        self._unspooled.clear()  # their SubmitResults die with the worker
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = None
        self._conn = None

    def _call(self, op: str, *args: Any) -> Any:
        limit = self.settings.transfer_timeout if op in TRANSFER_OPS else self.settings.call_timeout
        with self._lock:
            self._renew_for_token()
            conn = self._conn if self._conn is not None and self._proc.is_alive() else self._start()
            try:
                conn.send((op, args))
                if not conn.poll(limit):
                    raise TimeoutError
                reply = conn.recv()
            except TimeoutError:
                self._kill()
                self.restarts += 1
                log.warning("condor.timeout", schedd=self.name, op=op, limit=limit)
                raise ScheddError(ErrorKind.TIMEOUT, f"{op} on schedd {self.name} took longer than {limit:g} s; "
                                  "the call was cut off and the worker replaced") from None
            except (EOFError, OSError, BrokenPipeError) as e:
                self._kill()
                self.restarts += 1
                raise ScheddError(ErrorKind.OTHER,
                                  f"the HTCondor worker for {self.name} died during {op}: {e}") from None
        if reply[0] == "ok":
            return reply[1]
        raise ScheddError(ErrorKind(reply[1]), reply[2])

    def _renew_for_token(self) -> None:
        """Replace the worker when the token changed, so the next call authenticates with the new one."""
        if self._credential is None or self._conn is None:
            return
        generation = self._credential().generation
        # A cluster submitted but not yet spooled can be spooled only by the worker that submitted it.
        if generation != self._generation and not self._unspooled:
            log.info("condor.worker_renewed", schedd=self.name, reason="token changed", generation=generation)
            self._kill()

    def close(self) -> None:
        with self._lock:
            self._kill()
