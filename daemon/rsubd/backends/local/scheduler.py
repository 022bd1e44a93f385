"""The embedded local scheduler: a schedd in a library, running jobs on this machine.

It implements `rsubd.backends.schedd.Schedd` with the behaviour recorded from a real
HTCondor 25 schedd: a spooled submit is held (code 16) until about a second after `spool`, jobs go
Idle, Running, Completed, stay in the queue while `LeaveJobInQueue` is true,
then move to history. Each job runs under a starter process in a session of its
own, and the queue lives in SQLite, so jobs and their state survive a restart
of the daemon that embeds the scheduler.

With `execute="fake"` (or RSUB_LOCAL_EXECUTE=fake in the environment, for a
whole rsubd) nothing runs: no starter, no sandbox, no file is staged. Jobs stay
idle until `fake_advance` moves them, so benchmarks and tests can hold 100,000
jobs and choose which of them change state. Everything else (queue, history,
constraints, retrieve, edit, act) behaves as in the real mode.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import classad2

from rsubd import submitdesc
from rsubd.backends.classads import quiet_classad_library
from rsubd.backends.local import events, jobads, transfer
from rsubd.backends.local.ads import Constraint, evaluate, getter, project, since_constraint, to_classad
from rsubd.backends.local.queue import Key
from rsubd.backends.local.scheduniverse import DEFAULT_DAGMAN, SchedulerUniverse
from rsubd.backends.schedd import (
    AdValue,
    ErrorKind,
    HoldCode,
    JobAd,
    JobSpec,
    JobStatus,
    ScheddError,
    SubmitRequest,
    SubmitResult,
)

TICK_SECONDS = 0.2
IDLE_TICK_SECONDS = 30.0  # an empty queue has nothing to tick for (an idle rsubd stays asleep); a submit wakes it
# A schedd's submission limits and their defaults (HTCondor's MAX_JOBS_PER_SUBMISSION, MAX_JOBS_PER_OWNER),
# and what condor_submit prints when a submit would pass one.
MAX_JOBS_PER_SUBMISSION = 20_000
MAX_JOBS_PER_OWNER = 100_000
LIMIT_REFUSAL = "Failed to create proc: Number of submitted jobs would exceed {knob}"
SPOOL_RELEASE_SECONDS = 1.0  # a real schedd releases spooled jobs about 1.0 s after spool() returns
EXECUTE_ENV = "RSUB_LOCAL_EXECUTE"
RELEASE_ENV = "RSUB_LOCAL_SPOOL_RELEASE"  # seconds, for drills and tests: a slower schedd's release
EXECUTE_MODES = ("real", "fake")


class LocalSchedd(SchedulerUniverse):
    """A schedd with its queue under `root`, running at most `slots` jobs at once.

    `dagman` is the access point's condor_dagman path: a scheduler-universe job whose executable it
    is (not transferred) runs the embedded DAGMan.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        slots: int | None = None,
        autostart: bool = True,
        clock: Callable[[], float] = time.time,
        execute: str | None = None,
        release_delay: float | None = None,
        dagman: str = DEFAULT_DAGMAN,
        max_jobs_per_submission: int = MAX_JOBS_PER_SUBMISSION,
        max_jobs_per_owner: int = MAX_JOBS_PER_OWNER,
    ) -> None:
        quiet_classad_library()  # each constraint check makes ClassAds: without this the process only grows
        self.max_jobs_per_submission, self.max_jobs_per_owner = max_jobs_per_submission, max_jobs_per_owner
        self._wake = threading.Event()
        mode = execute or os.environ.get(EXECUTE_ENV) or "real"
        if mode not in EXECUTE_MODES:
            raise ValueError(f"execute must be one of {', '.join(EXECUTE_MODES)}, not {mode!r}")
        if release_delay is None:  # fake mode serves benchmarks that move jobs themselves
            release_delay = float(os.environ.get(RELEASE_ENV, SPOOL_RELEASE_SECONDS)) if mode == "real" else 0.0
        super().__init__(name, root, slots=slots, clock=clock, execute=mode, release_delay=release_delay,
                         dagman=dagman)
        if autostart:
            self.start()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"local-schedd-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_SECONDS if self._procs else IDLE_TICK_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad job; the error is in the ad
                import traceback

                traceback.print_exc()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._shutdown_scheduler_universe()
            self._save()
            self._store.close()

    # -- the Schedd boundary (edit and act are in `actions`) -----------------

    def submit(self, request: SubmitRequest) -> SubmitResult:
        try:
            desc = submitdesc.parse(request.text, cwd=request.cwd)
        except submitdesc.SubmitError as e:
            raise ScheddError(ErrorKind.REJECTED, f"Failed to create job ad, errmsg=Submit:-1:{e}") from None
        cluster = self._store.next_cluster()
        expanded = submitdesc.expand(desc, cluster=cluster)
        # As a schedd refuses the first proc past a limit, and the whole submit with it (the cluster id is
        # spent, as there): rsub's jobs are all one owner's.
        if len(expanded) > self.max_jobs_per_submission:
            raise ScheddError(ErrorKind.REJECTED, LIMIT_REFUSAL.format(knob="MAX_JOBS_PER_SUBMISSION"))
        if len(self._procs) + len(expanded) > self.max_jobs_per_owner:
            raise ScheddError(ErrorKind.REJECTED, LIMIT_REFUSAL.format(knob="MAX_JOBS_PER_OWNER"))
        qdate = int(self._clock())
        ads = [
            jobads.proc_ad(
                commands, cluster=cluster, proc=proc, cwd=request.cwd, owner=self._owner, qdate=qdate,
                spool_iwd=f"{self._spool}/{cluster}/{proc}/cluster{cluster}.proc{proc}.subproc0",
            )
            for proc, commands in enumerate(expanded)
        ]
        for ad in ads:
            ad["TotalSubmitProcs"] = len(ads)
        shared, procs = jobads.split_cluster(ads)
        with self._lock:
            self._add_cluster(cluster, shared, procs)
            self._unspooled.add(cluster)
            if shared.get("JobUniverse") == jobads.SCHEDULER_UNIVERSE:
                self._unslotted.update((cluster, proc) for proc in range(len(procs)))
            self._wake.set()  # an empty queue's scheduler sleeps: it has jobs to tick for now
            if self.execute == "real":
                for proc in range(len(procs)):
                    events.submitted(self.ad((cluster, proc)), qdate)
        return SubmitResult(cluster=cluster, first_proc=0, num_procs=len(ads))

    def spool(self, result: SubmitResult) -> None:
        with self._lock:
            if result.cluster not in self._unspooled:
                raise ScheddError(ErrorKind.INVALID, f"cluster {result.cluster} was not submitted by this client")
            self._unspooled.discard(result.cluster)
            keys = [(result.cluster, p) for p in result.procs if (result.cluster, p) in self._procs]
            ads = {k: self.ad(k) for k in keys}
        now = int(self._clock())
        checked: set[str] = set()
        try:
            for key, ad in ads.items():
                if self.execute == "fake":
                    transfer.check_inputs(f"{key[0]}.{key[1]}", ad, checked)  # nothing will run to need them
                else:
                    transfer.stage_in(f"{key[0]}.{key[1]}", ad, Path(ad["Iwd"]))
                    if key in self._unslotted:
                        self._staged(key, Path(ad["Iwd"]))
        except (transfer.TransferError, OSError) as e:
            with self._lock:
                for key in keys:
                    self._set(key, StageInStart=now)
                    self._remove(key, "Staging of job files failed")
                self._leave_queue(keys)
                self._save()
            message = f"DCSchedd::spoolJobFiles:7002:{e}"
            kind = ErrorKind.INPUT_MISSING if "No such file" in str(e) else ErrorKind.TRANSFER
            raise ScheddError(kind, message) from None
        with self._lock:
            # Held with code 16 a little longer: the next tick (or query) after the delay releases them.
            due = self._clock() + self.release_delay
            for key in keys:
                self._set(key, StageInStart=now)
                self._releasing[key] = due
            if self.release_delay <= 0:
                self._release_spooled()
            self._save()

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        with self._lock:
            self._refresh()
            keys = [k for k in self._select(constraint or "true") if k in self._procs]
            server_time = int(self._clock())
            out = []
            projector = self._index.projector(projection)
            for key in keys:
                if projection:

                    def evaluate_in(name: str, key: Key = key) -> AdValue:
                        return evaluate(self._classad(key), name)

                    ad = projector(self._procs[key], self._clusters.get(key[0], {}), evaluate_in)
                else:
                    ad = project(self.ad(key), None, projection)
                ad["ServerTime"] = server_time
                out.append(ad)
            return out

    def retrieve(self, jobs: JobSpec) -> None:
        with self._lock:
            self._refresh()
            todo = [(k, self.ad(k)) for k in self._select(jobs) if k in self._procs]
        errors: list[str] = []
        done: list[Key] = []
        start = int(self._clock())
        dirs: set[Path] = set()  # where files were renamed into place: each fsynced once, below
        for key, ad in todo:
            status = ad.get("JobStatus")
            if key in self._unslotted and self.execute == "real":
                # A scheduler-universe job's spool is live: new or changed files come back in any state.
                try:
                    self._retrieve_changed(key, ad)
                except transfer.TransferError as e:
                    errors.append(f"DCSchedd::receiveJobSandbox:7003:{e}")
                    continue
                except OSError as e:
                    errors.append(f"DCSchedd::receiveJobSandbox:7003:writing to {e.filename}: (errno {e.errno}) "
                                  f"{e.strerror}")
                    continue
                if status in (JobStatus.COMPLETED, JobStatus.REMOVED):
                    done.append(key)
                continue
            held_output = status == JobStatus.HELD and ad.get("HoldReasonCode") == HoldCode.TRANSFER_OUTPUT_ERROR
            if status != JobStatus.COMPLETED and not held_output:
                continue  # a real schedd returns quietly for jobs with nothing spooled yet
            try:
                transfer.retrieve(f"{key[0]}.{key[1]}", ad, Path(ad["Iwd"]), dirs)
                if status == JobStatus.COMPLETED:
                    done.append(key)
            except transfer.TransferError as e:
                errors.append(f"DCSchedd::receiveJobSandbox:7003:{e}")
            except OSError as e:
                errors.append(
                    f"DCSchedd::receiveJobSandbox:7003:writing to {e.filename}: (errno {e.errno}) {e.strerror}")
        try:
            # Every file is fsynced already; its rename is durable once its directory is: one fsync per
            # directory for the whole batch, before any job is reported home (StageOutFinish, below).
            transfer.sync_dirs(dirs)
        except OSError as e:
            raise ScheddError(ErrorKind.TRANSFER, f"DCSchedd::receiveJobSandbox:7003:syncing {e.filename}:"
                              f" (errno {e.errno}) {e.strerror}") from None
        with self._lock:
            for key in done:
                if key in self._procs:
                    self._set(key, StageOutStart=start, StageOutFinish=int(self._clock()))
            self._save()
        if errors:
            raise ScheddError(ErrorKind.TRANSFER, errors[0])

    def history(
        self, constraint: str, projection: Sequence[str], match: int | None = None, since: int | str | None = None
    ) -> list[JobAd]:
        wanted = Constraint(constraint or "true")
        stop = since_constraint(since)
        out: list[JobAd] = []
        for _c, _p, ad in self._store.history_newest_first():
            get = getter(ad)
            classad: classad2.ClassAd | None = None
            if stop is not None:
                verdict = stop.decide(get)
                if verdict is None:
                    classad = to_classad(ad)
                    verdict = stop.matches(classad)
                if verdict:
                    break
            verdict = wanted.decide(get)
            if verdict is None:
                classad = classad or to_classad(ad)
                verdict = wanted.matches(classad)
            if verdict:
                out.append(project(ad, classad, projection))
                if match is not None and len(out) >= match:
                    break
        return out
