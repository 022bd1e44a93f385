"""The embedded local scheduler: a schedd in a library, running jobs on this machine.

It implements `rsubd.backends.schedd.Schedd` with the behaviour recorded from a real
HTCondor 25 schedd: a spooled submit is held (code 16) until `spool`, jobs go
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

import getpass
import heapq
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import classad2
from rsubd import submitdesc
from rsubd.backends.local import fake
from rsubd.backends.local import jobads
from rsubd.backends.local import runner
from rsubd.backends.local import transfer
from rsubd.backends.local.ads import (
    Ad,
    Constraint,
    evaluate,
    getter,
    parse_value,
    project,
    since_constraint,
    to_classad,
)
from rsubd.backends.local.index import QueueIndex
from rsubd.backends.local.store import QueueStore
from rsubd.backends.schedd import (
    Action,
    ActResult,
    ErrorKind,
    HoldCode,
    JobAd,
    JobSpec,
    JobStatus,
    ScheddError,
    SubmitRequest,
    SubmitResult,
)

Key = tuple[int, int]
IMMUTABLE = {"clusterid", "procid", "owner", "jobuniverse", "globaljobid", "qdate", "user"}
LEAVE_SWEEP_SECONDS = 30.0
EXECUTE_ENV = "RSUB_LOCAL_EXECUTE"
EXECUTE_MODES = ("real", "fake")


class LocalSchedd:
    """A schedd with its queue under `root`, running at most `slots` jobs at once."""

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        slots: int | None = None,
        tick_interval: float = 0.2,
        autostart: bool = True,
        clock: Callable[[], float] = time.time,
        execute: str | None = None,
    ) -> None:
        mode = execute or os.environ.get(EXECUTE_ENV) or "real"
        if mode not in EXECUTE_MODES:
            raise ValueError(f"execute must be one of {', '.join(EXECUTE_MODES)}, not {mode!r}")
        self.execute = mode
        self.name = name
        self.root = root
        self.slots = slots or max(1, os.cpu_count() or 1)
        self._clock = clock
        self._owner = getpass.getuser()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._spool = root / "spool"
        self._execute = root / "execute"
        self._store = QueueStore(root / "queue.db")
        self._lock = threading.RLock()
        self._clusters, self._procs = self._store.load()
        self._index = QueueIndex()
        for cluster_ad in self._clusters.values():
            self._index.learn(cluster_ad)
        for key, proc_ad in self._procs.items():
            self._index.learn(proc_ad)
            self._index.add(key, self._status(key))
        self._cache: dict[Key, classad2.ClassAd] = {}
        self._collected: list[Path] = []  # sandboxes whose output is in the spool, to clear after the save
        self._starters: dict[Key, subprocess.Popen[bytes]] = {}
        self._unspooled: set[int] = set()
        self._dirty: set[Key] = set()
        self._leave_check: set[Key] = set(self._procs)
        self._last_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if autostart:
            self.start()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"local-schedd-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick_interval()):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad job; the error is in the ad
                import traceback

                traceback.print_exc()

    def _tick_interval(self) -> float:
        return 0.2

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._save()
            self._store.close()

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
        self._procs[key].update(attrs)
        self._index.learn(attrs)
        if "JobStatus" in attrs:
            self._index.status(key, int(attrs["JobStatus"]))
        self._cache.pop(key, None)
        self._dirty.add(key)

    def _status(self, key: Key) -> int:
        # On the scheduler's hot path: read the one attribute without merging the whole ad.
        proc = self._procs[key]
        status = proc["JobStatus"] if "JobStatus" in proc else self._clusters.get(key[0], {}).get("JobStatus", 0)
        return int(status)

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

    # -- the Schedd boundary -----------------------------------------------

    def submit(self, request: SubmitRequest) -> SubmitResult:
        try:
            desc = submitdesc.parse(request.text, cwd=request.cwd)
        except submitdesc.SubmitError as e:
            raise ScheddError(ErrorKind.REJECTED, f"Failed to create job ad, errmsg=Submit:-1:{e}") from None
        cluster = self._store.next_cluster()
        qdate = int(self._clock())
        ads = [
            jobads.proc_ad(
                commands, cluster=cluster, proc=proc, cwd=request.cwd, owner=self._owner, qdate=qdate,
                spool_iwd=f"{self._spool}/{cluster}/{proc}/cluster{cluster}.proc{proc}.subproc0",
            )
            for proc, commands in enumerate(submitdesc.expand(desc, cluster=cluster))
        ]
        for ad in ads:
            ad["TotalSubmitProcs"] = len(ads)
        shared, procs = jobads.split_cluster(ads)
        with self._lock:
            self._store.add_cluster(cluster, shared, dict(enumerate(procs)))
            self._clusters[cluster] = shared
            self._index.learn(shared)
            for proc, ad in enumerate(procs):
                self._procs[(cluster, proc)] = ad
                self._index.learn(ad)
                self._index.add((cluster, proc), self._status((cluster, proc)))
            self._unspooled.add(cluster)
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
            for key in keys:
                self._set(
                    key,
                    StageInStart=now,
                    StageInFinish=int(self._clock()),
                    JobStatus=int(JobStatus.IDLE),
                    LastJobStatus=int(JobStatus.HELD),
                    EnteredCurrentStatus=int(self._clock()),
                    HoldReason=None,
                    HoldReasonCode=None,
                    LastHoldReason=jobads.SPOOL_HOLD_REASON,
                    LastHoldReasonCode=int(HoldCode.SPOOLING_INPUT),
                    ReleaseReason="Data files spooled",
                )
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
                    ad = projector(self._procs[key], self._clusters.get(key[0], {}),
                                   lambda name, key=key: evaluate(self._classad(key), name))
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
        for key, ad in todo:
            status = ad.get("JobStatus")
            held_output = status == JobStatus.HELD and ad.get("HoldReasonCode") == HoldCode.TRANSFER_OUTPUT_ERROR
            if status != JobStatus.COMPLETED and not held_output:
                continue  # a real schedd returns quietly for jobs with nothing spooled yet
            try:
                transfer.retrieve(f"{key[0]}.{key[1]}", ad, Path(ad["Iwd"]))
                if status == JobStatus.COMPLETED:
                    done.append(key)
            except transfer.TransferError as e:
                errors.append(f"DCSchedd::receiveJobSandbox:7003:{e}")
            except OSError as e:
                errors.append(f"DCSchedd::receiveJobSandbox:7003:writing to {e.filename}: (errno {e.errno}) {e.strerror}")
        with self._lock:
            for key in done:
                if key in self._procs:
                    self._set(key, StageOutStart=start, StageOutFinish=int(self._clock()))
            self._save()
        if errors:
            raise ScheddError(ErrorKind.TRANSFER, errors[0])

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        if "." in attr or not attr.replace("_", "").isalnum():
            raise ScheddError(ErrorKind.INVALID, f"Unable to commit transaction:Got invalid attribute named {attr}")
        parsed = parse_value(value)
        with self._lock:
            keys = self._select(jobs)
            for key in keys:
                if key not in self._procs:
                    raise ScheddError(
                        ErrorKind.NOT_FOUND,
                        f"Unable to commit transaction:Modifying attribute {attr} in nonexistent job {key[0]}.{key[1]}",
                    )
                if attr.lower() in IMMUTABLE:
                    raise ScheddError(
                        ErrorKind.PERMISSION,
                        f"Unable to commit transaction:Attempt to edit immutable attribute {attr} in job {key[0]}.{key[1]}",
                    )
            for key in keys:
                proc, cluster = self._procs[key], self._clusters.get(key[0], {})
                spellings = self._index.spellings.get(attr.lower(), ())
                existing = next((k for k in spellings if k in cluster or k in proc), attr)
                self._set(key, **{existing: parsed})
                self._leave_check.add(key)
            self._save()
            return len(keys)

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        text = f"{reason} (by user {self._owner})" if reason else f"Python-initiated action (by user {self._owner})"
        counts = dict.fromkeys(("success", "not_found", "already_done", "bad_status"), 0)
        with self._lock:
            self._refresh()
            keys = self._select(jobs)
            for key in keys:
                if key not in self._procs:
                    counts["not_found"] += 1
                    continue
                counts[self._act_one(action, key, text)] += 1
            if action is Action.REMOVE:
                self._leave_queue([k for k in keys if k in self._procs and self._status(k) == JobStatus.REMOVED])
            self._save()
        return ActResult(
            success=counts["success"], not_found=counts["not_found"], already_done=counts["already_done"],
            bad_status=counts["bad_status"], job_ads=len(keys) - counts["not_found"],
        )

    def _act_one(self, action: Action, key: Key, text: str) -> str:
        ad = self.ad(key)
        status = ad.get("JobStatus")
        now = int(self._clock())
        if action is Action.HOLD:
            if status == JobStatus.HELD:
                return "already_done"
            if status in (JobStatus.COMPLETED, JobStatus.REMOVED):
                return "bad_status"
            self._kill(key)
            self._set(
                key, JobStatus=int(JobStatus.HELD), LastJobStatus=status, EnteredCurrentStatus=now,
                HoldReason=text, HoldReasonCode=int(HoldCode.USER_REQUEST), HoldReasonSubCode=0,
                NumHolds=int(ad.get("NumHolds") or 0) + 1,
            )
            return "success"
        if action is Action.RELEASE:
            if status != JobStatus.HELD or ad.get("HoldReasonCode") == HoldCode.SPOOLING_INPUT:
                return "bad_status"
            self._set(
                key, JobStatus=int(JobStatus.IDLE), LastJobStatus=status, EnteredCurrentStatus=now,
                LastHoldReason=ad.get("HoldReason"), LastHoldReasonCode=ad.get("HoldReasonCode"),
                LastHoldReasonSubCode=ad.get("HoldReasonSubCode"), HoldReason=None, HoldReasonCode=None,
                HoldReasonSubCode=None, ReleaseReason=text,
            )
            return "success"
        if status == JobStatus.REMOVED:
            return "already_done"
        self._remove(key, text)
        return "success"

    def _remove(self, key: Key, reason: str) -> None:
        ad = self.ad(key)
        self._kill(key)
        extra: dict[str, Any] = {}
        if ad.get("JobStatus") == JobStatus.HELD:
            extra = {
                "LastHoldReason": ad.get("HoldReason"), "LastHoldReasonCode": ad.get("HoldReasonCode"),
                "LastHoldReasonSubCode": ad.get("HoldReasonSubCode"), "HoldReason": None, "HoldReasonCode": None,
            }
        self._set(
            key, JobStatus=int(JobStatus.REMOVED), LastJobStatus=ad.get("JobStatus"),
            EnteredCurrentStatus=int(self._clock()), RemoveReason=reason, **extra,
        )

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

    # -- the scheduler's own work ------------------------------------------

    def tick(self) -> None:
        """One pass of the schedd: reap finished jobs, start idle ones, let finished ones leave."""
        with self._lock:
            self._refresh()
            self._save()
            for sandbox in self._collected:
                shutil.rmtree(sandbox, ignore_errors=True)
            self._collected.clear()

    def _refresh(self) -> None:
        if self.execute == "real":
            was_running = list(self._index.running)
            for key in was_running:
                self._check_running(key)
            # A job whose starter vanished waits for the next tick, as a schedd's would.
            restarted = {k for k in was_running if k in self._index.idle}
            free = self.slots - len(self._index.running)
            if free > 0 and self._index.idle:
                for key in heapq.nsmallest(free, (k for k in self._index.idle if k not in restarted)):
                    self._start(key)
        now = self._clock()
        if now - self._last_sweep >= LEAVE_SWEEP_SECONDS:
            self._last_sweep = now
            self._leave_check.update(self._procs)
        if self._leave_check:
            check, self._leave_check = self._leave_check, set()
            self._leave_queue([k for k in check if k in self._procs])

    def _leave_queue(self, keys: Iterable[Key]) -> None:
        """Move to history every job among `keys` that is finished and not kept by LeaveJobInQueue."""
        leaving = []
        for key in dict.fromkeys(keys):  # a job named twice leaves once
            if self._status(key) not in (JobStatus.COMPLETED, JobStatus.REMOVED):
                continue
            if self._status(key) == JobStatus.COMPLETED and self._classad(key).eval("LeaveJobInQueue") is True:
                continue
            leaving.append(key)
        if not leaving:
            return
        self._save()
        entries = [(c, p, self.ad((c, p))) for c, p in leaving]
        empty = []
        for key in leaving:
            del self._procs[key]
            self._cache.pop(key, None)
            if self._index.remove(key):
                empty.append(key[0])
            if self.execute == "real":
                shutil.rmtree(self._jobdir(key), ignore_errors=True)
        for c in empty:
            self._clusters.pop(c, None)
        self._store.to_history(entries, empty)

    def _start(self, key: Key) -> None:
        ad = self.ad(key)
        if runner.alive(runner.starter_pid(self._jobdir(key))):
            # Started before a crash that came before the queue said so: never two starters for one job.
            runner.kill(None, self._jobdir(key), self._sandbox(key))
        self._starters[key] = runner.launch(ad, self._jobdir(key), self._sandbox(key))
        now = int(self._clock())
        self._set(
            key, JobStatus=int(JobStatus.RUNNING), LastJobStatus=int(JobStatus.IDLE), EnteredCurrentStatus=now,
            JobCurrentStartDate=now, JobStartDate=ad.get("JobStartDate") or now,
            NumJobStarts=int(ad.get("NumJobStarts") or 0) + 1, JobRunCount=int(ad.get("JobRunCount") or 0) + 1,
            NumShadowStarts=int(ad.get("NumShadowStarts") or 0) + 1, RemoteHost="slot1@localhost",
        )

    def _sandbox(self, key: Key) -> Path:
        return self._execute / f"dir_{key[0]}_{key[1]}"

    def _check_running(self, key: Key) -> None:
        jobdir = self._jobdir(key)
        result = runner.result(jobdir)
        if result is not None:
            popen = self._starters.pop(key, None)
            if popen is not None:
                popen.wait()
            attrs, completed = runner.outcome(f"{key[0]}.{key[1]}", self.ad(key), result, jobdir,
                                              self._sandbox(key), int(self._clock()))
            self._set(key, **attrs)
            # Removed once the queue is saved: killed before that, the scheduler collects it again from here.
            self._collected.append(self._sandbox(key))
            if completed:
                self._leave_check.add(key)
            return
        popen = self._starters.get(key)
        alive = popen.poll() is None if popen is not None else runner.alive(runner.starter_pid(jobdir))
        if not alive:
            # The starter died without a word (machine reboot, kill): run the job again, as a schedd does.
            self._starters.pop(key, None)
            self._set(key, JobStatus=int(JobStatus.IDLE), LastJobStatus=int(JobStatus.RUNNING),
                      EnteredCurrentStatus=int(self._clock()), RemoteHost=None)

    def _kill(self, key: Key) -> None:
        """Stop a running job and its starter (the whole session)."""
        if self._status(key) != JobStatus.RUNNING:
            return
        if self.execute == "real":
            runner.kill(self._starters.pop(key, None), self._jobdir(key), self._sandbox(key))
        self._set(key, RemoteHost=None)

    # -- fake execution ----------------------------------------------------

    def fake_advance(self, jobs: JobSpec, status: JobStatus, *, exit_code: int = 0,
                     hold_reason: str = "held by the fake executor") -> int:
        """Fake mode only: move queued jobs to running, completed, held or idle at once; returns how many."""
        if self.execute != "fake":
            raise RuntimeError("fake_advance needs a LocalSchedd with execute='fake'")
        with self._lock:
            keys = [k for k in self._select(jobs) if k in self._procs]
            now = int(self._clock())
            for key in keys:
                proc, cluster = self._procs[key], self._clusters.get(key[0], {})
                starts = int(proc.get("NumJobStarts", cluster.get("NumJobStarts")) or 0)
                self._set(key, **fake.advance(status, now=now, last=self._status(key), starts=starts,
                                              exit_code=exit_code, hold_reason=hold_reason))
                if status is JobStatus.COMPLETED:
                    self._leave_check.add(key)
            self._save()
            return len(keys)
