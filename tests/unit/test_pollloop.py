"""The poll loop cannot lose its next poll: the schedule with an injected clock, then the asyncio driver."""

from __future__ import annotations

import asyncio
import random

import pytest

from rsubd.polling.loop import PollLoop, PollSchedule
from rsubd.polling.schedule import EarlyDecision, EarlyPolls, PollPolicy, TokenBucket


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, interval: float = 10.0, *, early_every: float = 1.0, jitter: float = 0.0,
         slack: float = 5.0) -> PollSchedule:
    policy = PollPolicy(interval, jitter=jitter, backoff_max=80.0, rng=random.Random(7), clock=clock)
    early = EarlyPolls(policy, bucket=TokenBucket.every(early_every, 1, clock=clock), min_gap=0.5)
    return PollSchedule(policy, early, slack=slack, max_duration=100.0, wall=lambda: 1_700_000_000.0)


class Simulation:
    """The loop's decisions, step by step on a fake clock: every poll it starts is recorded."""

    def __init__(self, schedule: PollSchedule, clock: FakeClock) -> None:
        self.s = schedule
        self.clock = clock
        self.started: list[float] = []

    def advance(self, seconds: float, step: float = 0.25, duration: float = 0.0, outcome: str = "ok") -> None:
        """Let time pass as the loop would: start each poll that falls due, which runs `duration` seconds."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            if self.s.wait_time() == 0:
                self.poll(duration, outcome)
            else:  # the loop sleeps until the poll is due, or is woken sooner
                self.clock.now = min(end, self.clock.now + min(step, self.s.wait_time()))

    def begin(self) -> None:
        assert not self.s.running
        self.s.begin()
        self.started.append(self.clock.now)

    def poll(self, duration: float = 0.0, outcome: str = "ok") -> float:
        assert self.s.wait_time() == 0, "the loop starts a poll only when it is due"
        self.begin()
        self.clock.now += duration
        return self.s.end(outcome)


def test_the_first_poll_is_due_at_once_and_then_one_per_interval() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.advance(35.0)
    assert sim.started == [1000.0, 1010.0, 1020.0, 1030.0]


def test_a_poke_before_a_poll_moves_the_one_next_poll_to_now() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll()
    clock.now += 3.0
    assert sim.s.poke() is EarlyDecision.GRANTED
    sim.advance(0.1)
    assert sim.started == [1000.0, 1003.0]
    sim.advance(12.0)  # then the interval again from the early poll, not a second early one
    assert sim.started == [1000.0, 1003.0, 1013.0]


@pytest.mark.parametrize("pokes", [1, 2, 5, 50])
def test_pokes_while_a_poll_runs_lead_to_exactly_one_more_poll_right_after_it(pokes: int) -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll()
    clock.now += 4.0
    sim.begin()
    for _ in range(pokes):
        clock.now += 0.1
        assert sim.s.poke(force=True) is EarlyDecision.QUEUED
    clock.now += 1.0
    assert sim.s.end("ok") == 0.0  # the poll after it is due at once
    sim.advance(0.5)
    assert len(sim.started) == 3  # one more poll, however many pokes
    sim.advance(25.0)
    assert sim.started[3:] == [sim.started[2] + 10.0, sim.started[2] + 20.0]


def test_a_poke_while_running_with_no_budget_still_leaves_the_regular_next_poll() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock, early_every=1000.0), clock)
    sim.poll()
    clock.now += 1.0
    assert sim.s.poke(force=True) is EarlyDecision.GRANTED  # spends the one token
    sim.advance(0.1)
    assert sim.started == [1000.0, 1001.0]
    clock.now = 1011.0  # the regular poll is due, and runs
    sim.begin()
    assert sim.s.poke(force=True) is EarlyDecision.QUEUED
    clock.now += 1.0
    delay = sim.s.end("ok")
    assert delay == 10.0 and sim.s.wait_time() == 10.0  # not zero polls: the regular one
    sim.advance(10.5)
    assert sim.started == [1000.0, 1001.0, 1011.0, 1022.0]


def test_a_poke_just_after_a_poll_ended_but_before_the_loop_sleeps_is_one_early_poll() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll()
    clock.now = 1010.0
    sim.poll(duration=1.0)  # ended at 1011; the loop has not yet gone back to sleep
    assert sim.s.poke(force=True) is EarlyDecision.GRANTED
    assert sim.s.wait_time() == 0.0
    sim.advance(0.1)
    assert sim.started == [1000.0, 1010.0, 1011.0]
    assert sim.s.wait_time() == pytest.approx(10.0 - 0.1)


def test_pokes_during_a_backoff_change_nothing_and_the_backoff_poll_still_comes() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    delay = sim.poll(outcome="error")
    assert delay == 20.0
    for _ in range(10):
        clock.now += 1.0
        assert sim.s.poke(force=True) is EarlyDecision.BACKOFF
    assert sim.s.wait_time() == pytest.approx(10.0)
    sim.advance(10.5, outcome="error")
    assert sim.started == [1000.0, 1020.0]
    assert sim.s.wait_time() == pytest.approx(40.0 - 0.5)  # the next step of the backoff


def test_a_poll_that_raised_counts_as_an_error_and_schedules_the_next() -> None:
    clock = FakeClock()
    s = make(clock)
    s.begin()
    assert s.end("error") == 20.0 and not s.running and s.policy.backing_off


def test_a_cancelled_poll_leaves_the_next_poll_due_at_once() -> None:
    clock = FakeClock()
    s = make(clock)
    s.begin()
    clock.now += 2.0
    s.abort()
    assert not s.running and s.wait_time() == 0.0 and not s.policy.backing_off


def test_the_liveness_check_knows_a_schedule_that_stopped() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock, slack=5.0), clock)
    sim.poll()
    assert sim.s.bound() == 15.0
    clock.now += 14.0
    assert sim.s.check() is None
    # Nothing started the poll that was due at 1010: past the bound (and past its time + slack) it is stalled.
    clock.now += 2.0
    assert sim.s.check() is None  # seen late once: the loop may just be waking
    clock.now += 5.0
    why = sim.s.check()  # still not started at the next check: stalled
    assert why is not None and "after the last one ended" in why
    sim.s.rearm()
    assert sim.s.wait_time() == 0.0
    sim.poll()
    assert sim.s.check() is None


def test_the_bound_follows_the_backoff_in_force() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock, jitter=0.1), clock)
    delay = sim.poll(outcome="error")
    assert 18.0 <= delay <= 22.0 and sim.s.bound() == pytest.approx(22.0 + 5.0)
    clock.now += delay + 4.9
    assert sim.s.check() is None  # a backed-off schedd is not stalled while it waits its step, plus slack
    clock.now += 0.2
    assert sim.s.check() is None
    clock.now += 0.1
    assert "did not start" in (sim.s.check() or "")


def test_a_backoff_ended_by_a_submit_is_not_a_stall_while_the_backed_off_poll_waits() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll(outcome="error")  # next poll in 20 s
    clock.now += 1.0
    sim.s.policy.on_answered()  # a submit got through: the schedd is up
    assert sim.s.bound() == 15.0
    clock.now += 18.0  # 19 s after the poll ended: past today's bound, within the one it was set under
    assert sim.s.check() is None
    sim.advance(1.5)
    assert len(sim.started) == 2


def test_a_late_poll_that_starts_before_the_next_check_is_no_stall() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll()
    clock.now += 17.0  # the event loop was held up: the poll due at 1010 has not started yet
    assert sim.s.check() is None
    sim.poll()  # ... and starts as soon as the loop runs
    clock.now += 5.0
    assert sim.s.check() is None and sim.s.stalls == 0


def test_a_poll_running_past_its_limit_is_a_stall() -> None:
    clock = FakeClock()
    s = make(clock)
    s.begin()
    clock.now += 99.0
    assert s.check() is None
    clock.now += 2.0
    assert "has run for 101 s" in (s.check() or "")


def test_state_is_what_is_scheduled() -> None:
    clock = FakeClock()
    sim = Simulation(make(clock), clock)
    sim.poll(duration=0.5)
    clock.now += 2.0
    st = sim.s.state()
    assert st["polling"] is False and st["next_poll_in"] == pytest.approx(8.0)
    assert st["next_poll_at"] == pytest.approx(1_700_000_000.0 + 8.0)
    assert st["seconds_since_poll_started"] == pytest.approx(2.5)
    assert st["seconds_since_poll_ended"] == pytest.approx(2.0)
    sim.s.begin()
    st = sim.s.state()
    assert st["polling"] is True and st["next_poll_at"] is None


# -- the asyncio driver, on the real clock with short intervals ------------------------------


def real(interval: float = 0.2) -> PollSchedule:
    policy = PollPolicy(interval, jitter=0.0, rng=random.Random(1))
    early = EarlyPolls(policy, bucket=TokenBucket.every(0.01, 5), min_gap=0.0)
    return PollSchedule(policy, early)


def test_the_loop_polls_after_a_poll_that_raises() -> None:
    asyncio.run(_test_the_loop_polls_after_a_poll_that_raises())


async def _test_the_loop_polls_after_a_poll_that_raises() -> None:
    calls = []

    async def poll() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return "ok"

    loop = PollLoop("x", real(0.05), poll)
    loop.start()
    for _ in range(100):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.02)
    assert len(calls) >= 3 and loop.alive
    await loop.stop()
    assert not loop.alive


def test_pokes_during_a_running_poll_give_one_poll_right_after_it() -> None:
    asyncio.run(_test_pokes_during_a_running_poll_give_one_poll_right_after_it())


async def _test_pokes_during_a_running_poll_give_one_poll_right_after_it() -> None:
    release = asyncio.Event()
    started: list[float] = []
    done = asyncio.Event()

    async def poll() -> str:
        started.append(asyncio.get_running_loop().time())
        if len(started) == 2:
            await release.wait()
        if len(started) == 3:
            done.set()
        return "ok"

    schedule = real(5.0)  # the regular poll is far away: only a repoll can come soon
    loop = PollLoop("x", schedule, poll)
    loop.start()
    await asyncio.sleep(0.05)
    assert len(started) == 1
    assert loop.poke(force=True) is EarlyDecision.GRANTED
    await asyncio.sleep(0.05)
    assert len(started) == 2 and schedule.running
    assert {loop.poke(force=True) for _ in range(20)} == {EarlyDecision.QUEUED}
    release.set()
    await asyncio.wait_for(done.wait(), 2.0)
    await asyncio.sleep(0.2)
    assert len(started) == 3  # exactly one more, not twenty
    assert 4.5 < schedule.wait_time() <= 5.0
    await loop.stop()


def test_a_stop_during_a_poll_lets_it_finish_and_no_poll_follows() -> None:
    asyncio.run(_test_a_stop_during_a_poll_lets_it_finish_and_no_poll_follows())


async def _test_a_stop_during_a_poll_lets_it_finish_and_no_poll_follows() -> None:
    release = asyncio.Event()
    calls = []

    async def poll() -> str:
        calls.append(1)
        await release.wait()
        return "ok"

    loop = PollLoop("x", real(0.01), poll)
    loop.start()
    await asyncio.sleep(0.05)
    stopping = asyncio.ensure_future(loop.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # a binding call cannot be cut off: the poll finishes first
    assert loop.poke(force=True) is EarlyDecision.DUE  # stopping: a poke starts nothing
    release.set()
    await asyncio.wait_for(stopping, 2.0)
    assert calls == [1] and not loop.alive


def test_a_cancelled_loop_is_started_again_by_rearm() -> None:
    asyncio.run(_test_a_cancelled_loop_is_started_again_by_rearm())


async def _test_a_cancelled_loop_is_started_again_by_rearm() -> None:
    calls = []

    async def poll() -> str:
        calls.append(1)
        return "ok"

    loop = PollLoop("x", real(10.0), poll)
    loop.start()
    await asyncio.sleep(0.05)
    assert loop._task is not None
    loop._task.cancel()  # whatever ended it: the liveness check sees a dead loop and re-arms it
    await asyncio.sleep(0.01)
    assert not loop.alive
    loop.rearm()
    await asyncio.sleep(0.05)
    assert loop.alive and len(calls) == 2
    await loop.stop()
