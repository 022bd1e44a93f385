"""The embedded scheduler's own work: start idle jobs under starters, reap finished ones, and fake execution."""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Sequence
from pathlib import Path

from rsubd.backends.local import fake, jobads, runner, slots
from rsubd.backends.local.ads import Ad, project
from rsubd.backends.local.queue import JobQueue, Key
from rsubd.backends.schedd import HoldCode, JobSpec, JobStatus

LEAVE_SWEEP_SECONDS = 30.0


class Execution(JobQueue):
    """The queue, with its jobs run (or, in fake mode, moved by `fake_advance`)."""

    def tick(self) -> None:
        """One pass of the schedd: reap finished jobs, start idle ones, let finished ones leave."""
        with self._lock:
            self._starters_seen = None  # looked for again in this pass, if a job needs it
            self._refresh()
            self._save()
            for sandbox in self._collected:
                shutil.rmtree(sandbox, ignore_errors=True)
            self._collected.clear()

    def _refresh(self) -> None:
        if self._releasing:
            self._release_spooled()
        if self.execute == "real":
            # Scheduler-universe jobs (DAGMan) run beside the slots, as on a schedd: they take none.
            was_running = [k for k in self._index.running if k not in self._unslotted]
            for key in was_running:
                self._check_running(key)
            self._scheduler_universe()
            # A job whose starter vanished waits for the next tick, as a schedd's would.
            restarted = {k for k in was_running if k in self._index.idle}
            free = self.slots - len(self._index.running) + len(self._unslotted & self._index.running)
            if free > 0 and self._index.idle:
                self._unmatched &= self._index.idle
                startable = (k for k in self._index.idle if k not in restarted and k not in self._unslotted)
                for key in heapq.nsmallest(free + len(self._unmatched), startable):
                    if free <= 0:
                        break
                    if key in self._unmatched:
                        continue
                    if not slots.matches(self.ad(key), self.slot_ads()):
                        self._unmatched.add(key)  # idle until an edit changes it, as in a pool (rsub why says why)
                        continue
                    self._start(key)
                    free -= 1
        now = self._clock()
        if now - self._last_sweep >= LEAVE_SWEEP_SECONDS:
            self._last_sweep = now
            self._leave_check.update(self._procs)
        if self._leave_check:
            check, self._leave_check = self._leave_check, set()
            self._leave_queue([k for k in check if k in self._procs])

    _starters_seen: dict[str, list[int]] | None = None

    def _live_starters(self) -> dict[str, list[int]]:
        """The starters running on this machine by job directory, looked for once per pass (runner.live_starters):
        only after a restart (a running job whose starter this process did not start) or to start a job again."""
        if self._starters_seen is None:
            self._starters_seen = runner.live_starters()
        return self._starters_seen

    def slot_ads(self, projection: Sequence[str] = ()) -> list[Ad]:
        """This scheduler's slots as a pool's slot ads (backends/local/slots.py), refreshed every minute."""
        now = self._clock()
        if self._slot_ads is None or now - self._slot_ads[0] > 60:
            self._slot_ads = (now, slots.machine_slots(self.slots, self.root))
        ads = self._slot_ads[1]
        return [project(ad, None, projection) for ad in ads] if projection else ads

    def match_ad(self, cluster: int, proc: int) -> Ad | None:
        """A queued job's ad as matchmaking reads it, its expressions as {"__expr__": text}."""
        with self._lock:
            return slots.plain(self.ad((cluster, proc))) if (cluster, proc) in self._procs else None

    def _scheduler_universe(self) -> None:
        """Start, step and reap the scheduler-universe jobs (see `scheduniverse`); none here."""

    def _release_spooled(self) -> None:
        """Release the spooled jobs that are due: Idle, as a real schedd about a second after `spool`."""
        now = self._clock()
        for key in [k for k, due in self._releasing.items() if due <= now]:
            del self._releasing[key]
            if key not in self._procs or self._status(key) != JobStatus.HELD:
                continue  # removed meanwhile
            self._set(
                key,
                StageInFinish=int(now),
                JobStatus=int(JobStatus.IDLE),
                LastJobStatus=int(JobStatus.HELD),
                EnteredCurrentStatus=int(now),
                HoldReason=None,
                HoldReasonCode=None,
                LastHoldReason=jobads.SPOOL_HOLD_REASON,
                LastHoldReasonCode=int(HoldCode.SPOOLING_INPUT),
                ReleaseReason="Data files spooled",
            )

    def _start(self, key: Key) -> None:
        ad = self.ad(key)
        jobdir = self._jobdir(key)
        orphans = self._live_starters().get(runner.where(jobdir), []) if runner.ever_launched(jobdir) else []
        if len(orphans) == 1 and (found := runner.identity(orphans[0])) is not None:
            # Started before a crash that came before the queue said so (or before anything recorded it): that
            # starter runs the job, in its sandbox; it is adopted, never joined by a second one.
            self._adopted[key] = found
        else:
            runner.kill_starters(orphans)  # more than one (never from this code): none can be trusted
            self._starters[key] = runner.launch(ad, jobdir, self._sandbox(key))
        now = int(self._clock())
        self._set(
            key, JobStatus=int(JobStatus.RUNNING), LastJobStatus=int(JobStatus.IDLE), EnteredCurrentStatus=now,
            JobCurrentStartDate=now, JobStartDate=ad.get("JobStartDate") or now,
            NumJobStarts=int(ad.get("NumJobStarts") or 0) + 1, JobRunCount=int(ad.get("JobRunCount") or 0) + 1,
            NumShadowStarts=int(ad.get("NumShadowStarts") or 0) + 1, RemoteHost="slot1@localhost",
        )

    def _check_running(self, key: Key) -> None:
        jobdir = self._jobdir(key)
        result = runner.result(jobdir)
        if result is not None:
            popen = self._starters.pop(key, None)
            self._adopted.pop(key, None)
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
        alive = popen.poll() is None if popen is not None else self._still_running(key, jobdir)
        if not alive:
            if runner.result(jobdir) is not None:
                return  # it ended between the two looks: reaped at the next pass
            # The starter died without a word (machine reboot, kill): run the job again, as a schedd does.
            self._starters.pop(key, None)
            self._set(key, JobStatus=int(JobStatus.IDLE), LastJobStatus=int(JobStatus.RUNNING),
                      EnteredCurrentStatus=int(self._clock()), RemoteHost=None)

    def _still_running(self, key: Key, jobdir: Path) -> bool:
        """Whether the starter of a job this process did not start still runs: its pid and start time, once
        found by command line (one look at /proc per pass, and only until found)."""
        known = self._adopted.get(key)
        if known is not None and runner.identity(known[0]) == known:
            return True
        self._adopted.pop(key, None)
        pids = self._live_starters().get(runner.where(jobdir), [])
        if len(pids) != 1 or (found := runner.identity(pids[0])) is None:
            runner.kill_starters(pids)  # two starters of one job cannot both be right: run it again, alone
            return False
        self._adopted[key] = found
        return True

    def _kill(self, key: Key) -> None:
        """Stop a running job and its starter (the whole session)."""
        if self._status(key) != JobStatus.RUNNING:
            return
        if self.execute == "real":
            runner.kill(self._starters.pop(key, None), self._jobdir(key), self._sandbox(key),
                        adopted=self._adopted.pop(key, None))
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
