"""The poll loop of one schedd: one asyncio task that owns the schedd's one next poll.

`PollSchedule` is the state, with no I/O and no timer: when the next poll is due
(stored in the policy, so `rsub daemon status` reads what is really scheduled),
whether a poll runs now, what a poke does to it, and whether the schedule is
alive. `PollLoop` is the driver: it sleeps until the next poll is due or a poke
wakes it, runs the poll, and asks the schedule for the next one. There is no
timer job to lose: the next poll is a time the loop itself sleeps towards, set
before the loop sleeps again, whatever the poll did (returned, raised, or was
cancelled at shutdown).

The invariants, which `tests/unit/test_pollloop.py` drives with an injected clock:

- after every poll, exactly one next poll is scheduled;
- a poke while a poll runs (any number of them) leads to exactly one more poll
  right after it, if the early-poll budget allows, else to the regular one;
- a poke during a backoff changes nothing (the backoff schedule alone retries);
- a poll starts at most `bound()` after the last one ended, or the schedule is
  stalled: `check()` says so, and the app logs `poll.stalled` and re-arms it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from rsubd.polling.schedule import Clock, EarlyDecision, EarlyPolls, PollPolicy

log = structlog.get_logger("rsubd.polling.loop")

STALL_SLACK = 5.0  # seconds past the longest allowed gap before a schedule counts as stalled
Poll = Callable[[], Awaitable[str]]  # runs one poll; returns its outcome: "ok", "idle" or "error"


class PollSchedule:
    """One schedd's next poll and the polls before it; the loop and the liveness check share it."""

    def __init__(self, policy: PollPolicy, early: EarlyPolls, *, slack: float = STALL_SLACK,
                 max_duration: float = 3600.0, wall: Clock = time.time) -> None:
        self.policy = policy
        self.early = early
        self.clock = policy.clock
        self.wall = wall
        self.slack = slack
        self.max_duration = max_duration
        self.running = False
        self.repoll = False  # poked while running: poll again right after, within the budget
        self.started_at: float | None = None  # monotonic, of the last poll started
        self.ended_at: float | None = None  # monotonic, of the last poll ended
        self.polls = 0
        self.stalls = 0
        self.stalled_now: str | None = None  # why the last check found the schedule stalled, if it did
        self._scheduled_bound = 0.0  # the bound in force when the next poll was set
        self._late_seen_at: float | None = None  # when a check first found the next poll late
        policy.schedule_now()  # the first poll is due at once

    # -- what the loop does ------------------------------------------------------

    @property
    def next_at(self) -> float:
        """Monotonic time of the next poll (in the past while one runs, or when overdue)."""
        at = self.policy.next_poll_at
        return self.clock() if at is None else at

    def wait_time(self) -> float:
        """Seconds the loop should sleep before the next poll: 0 if it is due."""
        return max(0.0, self.next_at - self.clock())

    def begin(self) -> None:
        """A poll starts."""
        self.running = True
        self.repoll = False
        self.started_at = self.clock()
        self.polls += 1
        self.stalled_now = None
        self._late_seen_at = None

    def end(self, outcome: str) -> float:
        """A poll ended with this outcome; schedules exactly one next poll and returns its delay."""
        policy = self.policy
        {"ok": policy.on_success, "idle": policy.on_idle}.get(outcome, policy.on_error)()
        delay = policy.next_delay()  # records the next poll in the policy
        # A submit that succeeds ends a backoff (the schedd answered) without moving the backed-off
        # poll already set: the bound that poll was set under still holds until it runs.
        self._scheduled_bound = self.bound()
        self.running = False
        self.ended_at = self.clock()
        if self.repoll:
            self.repoll = False
            # The running poll may have read the queue before the change the poke was about.
            if self.early.request(force=True).moves_poll:
                delay = self.wait_time()
        return delay

    def abort(self) -> None:
        """A poll was cancelled (rsubd is stopping): nothing learned; the next one is due at once."""
        self.running = False
        self.repoll = False
        self.ended_at = self.clock()
        self.policy.schedule_now()

    def poke(self, *, force: bool = False) -> EarlyDecision:
        """Ask for an early poll. GRANTED means the next poll is now due; QUEUED, right after the running one."""
        if self.running:
            self.repoll = True
            self.early.counts[EarlyDecision.QUEUED] += 1
            return EarlyDecision.QUEUED
        return self.early.request(force=force)  # a grant moves the next poll to now

    def rearm(self) -> None:
        """Make the next poll due at once (after a stall)."""
        self._late_seen_at = None
        self.policy.schedule_now()

    # -- liveness ------------------------------------------------------------------

    def bound(self) -> float:
        """The longest a schedd may go from the end of one poll to the start of the next."""
        return self.policy.delay_bounds()[1] + self.slack

    def check(self) -> str | None:
        """Why the schedule is stalled now, or None if it is alive.

        A late poll is a stall only when a later check finds it still not started: an event loop
        held up for a moment (a big request) wakes the check and the loop together, in either order.
        """
        now = self.clock()
        if self.running:
            assert self.started_at is not None
            if now - self.started_at > self.max_duration:
                return f"a poll has run for {now - self.started_at:.0f} s (limit {self.max_duration:g} s)"
            return None
        bound = max(self.bound(), self._scheduled_bound)
        why = None
        if self.ended_at is not None and now - self.ended_at > bound:
            why = f"no poll started for {now - self.ended_at:.1f} s after the last one ended (bound {bound:.1f} s)"
        elif now - self.next_at > self.slack:
            why = f"the poll due {now - self.next_at:.1f} s ago did not start"
        if why is None:
            self._late_seen_at = None
            return None
        if self._late_seen_at is None:
            self._late_seen_at = now
        return why if now > self._late_seen_at else None

    def state(self) -> dict[str, Any]:
        """For `rsub daemon status`: what is really scheduled, and when polls last ran."""
        now, wall = self.clock(), self.wall()

        def at(mono: float | None) -> float | None:
            return None if mono is None else wall - (now - mono)

        return {
            "polling": self.running,
            "next_poll_at": None if self.running else at(self.next_at),
            "next_poll_in": 0.0 if self.running else round(self.wait_time(), 3),
            "repoll_queued": self.repoll,
            "last_poll_started_at": at(self.started_at),
            "last_poll_ended_at": at(self.ended_at),
            "seconds_since_poll_started": None if self.started_at is None else round(now - self.started_at, 3),
            "seconds_since_poll_ended": None if self.ended_at is None else round(now - self.ended_at, 3),
            "poll_bound": round(max(self.bound(), 0.0 if self.running else self._scheduled_bound), 3),
            "stalls": self.stalls,
            "schedule_alive": self.stalled_now is None,
        }


class PollLoop:
    """Drives one `PollSchedule`: sleep until due (or poked), poll, schedule the next, forever."""

    def __init__(self, name: str, schedule: PollSchedule, poll: Poll,
                 on_done: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self.schedule = schedule
        self._poll = poll
        self._on_done = on_done
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"poll:{self.name}")

    @property
    def alive(self) -> bool:
        """The task runs (it ends only when rsubd stops)."""
        return self._task is not None and not self._task.done()

    def poke(self, *, force: bool = False) -> EarlyDecision:
        if self._stopping:
            return EarlyDecision.DUE  # rsubd is stopping: no more polls
        decision = self.schedule.poke(force=force)
        if decision.moves_poll:
            self._wake.set()  # the loop's sleep was for the old time
        return decision

    def rearm(self) -> None:
        """After a stall: the next poll is due now; a dead task is started again."""
        self.schedule.rearm()
        if not self.alive and not self._stopping:
            self.start()
        self._wake.set()

    async def stop(self, timeout: float | None = None) -> None:
        """No poll starts after this; a running one is let finish (a binding call cannot be cut off)."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except Exception:  # noqa: BLE001 - the task logs its own failures; stopping must go on
            pass

    async def _run(self) -> None:
        schedule = self.schedule
        while not self._stopping:
            wait = schedule.wait_time()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue  # woken or due: look again (a poke may have moved the poll, stop may have come)
            schedule.begin()
            outcome = "error"
            try:
                outcome = await self._poll()
            except asyncio.CancelledError:
                schedule.abort()
                raise
            except Exception:  # one poll's crash must never end the loop
                log.exception("poll.crashed", schedd=self.name)
            delay = schedule.end(outcome)
            if schedule.policy.backing_off:
                log.warning("poll.backoff", schedd=self.name, consecutive_errors=schedule.policy.consecutive_errors,
                            next_poll_in=round(delay, 1))
            if self._on_done is not None:
                try:
                    await self._on_done()
                except Exception:  # a listener must never end the loop
                    log.exception("poll.listener_crashed", schedd=self.name)
