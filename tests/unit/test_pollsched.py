"""Unit tests for rsubd.polling.schedule, driven by a fake clock and seeded random generators."""

from __future__ import annotations

import math
import random

import pytest

from rsubd.config import HTCONDOR_POLL_FLOOR, ScheddConfig
from rsubd.polling.schedule import (
    EARLY_POLL_PERIOD,
    EarlyDecision,
    EarlyPolls,
    PollPolicy,
    TokenBucket,
    default_backoff_max,
    floor_for,
)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_policy(clock: FakeClock, interval: float = 60.0, *, floor: float = 0.0, jitter: float = 0.1,
                backoff_factor: float = 2.0, backoff_max: float | None = None,
                rng: random.Random | None = None) -> PollPolicy:
    """A policy with a seeded generator unless the test brings its own."""
    return PollPolicy(interval, floor=floor, jitter=jitter, backoff_factor=backoff_factor,
                      backoff_max=backoff_max, rng=rng or random.Random(1234), clock=clock)


# -- jitter --------------------------------------------------------------------------


def test_jitter_stays_within_bounds_and_spreads() -> None:
    policy = make_policy(FakeClock(), jitter=0.1)
    samples = [policy.next_delay() for _ in range(2000)]
    assert all(54.0 <= s <= 66.0 for s in samples)
    assert len(set(samples)) > 1000
    # Both ends of the range are reached, not just a narrow band around 60.
    assert min(samples) < 55.0
    assert max(samples) > 65.0


def test_no_jitter_gives_the_interval_exactly() -> None:
    policy = make_policy(FakeClock(), jitter=0.0)
    assert {policy.next_delay() for _ in range(50)} == {60.0}


def test_jitter_never_goes_below_the_floor() -> None:
    policy = make_policy(FakeClock(), interval=HTCONDOR_POLL_FLOOR, floor=HTCONDOR_POLL_FLOOR,
                         jitter=0.2)
    samples = [policy.next_delay() for _ in range(1000)]
    assert min(samples) >= HTCONDOR_POLL_FLOOR
    assert max(samples) <= HTCONDOR_POLL_FLOOR * 1.2
    assert len(set(samples)) > 500


def test_same_seed_same_delays_different_seed_different_delays() -> None:
    a = make_policy(FakeClock(), rng=random.Random(7))
    b = make_policy(FakeClock(), rng=random.Random(7))
    c = make_policy(FakeClock(), rng=random.Random(8))
    seq_a = [a.next_delay() for _ in range(20)]
    assert seq_a == [b.next_delay() for _ in range(20)]
    assert seq_a != [c.next_delay() for _ in range(20)]


def test_unseeded_policies_do_not_poll_in_step() -> None:
    a = PollPolicy(60.0, clock=FakeClock())
    b = PollPolicy(60.0, clock=FakeClock())
    assert [a.next_delay() for _ in range(5)] != [b.next_delay() for _ in range(5)]


# -- backoff -------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_then_recovers_on_one_success() -> None:
    clock = FakeClock()
    policy = make_policy(clock, jitter=0.0)
    delays = []
    for _ in range(6):
        delays.append(policy.next_delay())
        policy.on_error()
        clock.advance(delays[-1])
    assert delays == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert policy.backing_off
    assert policy.consecutive_errors == 6
    policy.on_success()
    assert not policy.backing_off
    assert policy.consecutive_errors == 0
    assert policy.next_delay() == 60.0


def test_backoff_with_jitter_never_exceeds_the_cap() -> None:
    policy = make_policy(FakeClock(), jitter=0.1)
    for _ in range(10):
        policy.on_error()
    samples = [policy.next_delay() for _ in range(1000)]
    assert max(samples) <= 600.0
    assert min(samples) >= 540.0
    assert len(set(samples)) > 500


def test_backoff_steps_are_jittered_around_the_step() -> None:
    policy = make_policy(FakeClock(), jitter=0.1)
    policy.on_error()
    samples = [policy.next_delay() for _ in range(500)]
    assert all(108.0 <= s <= 132.0 for s in samples)
    assert policy.base_delay() == 120.0


def test_many_errors_do_not_overflow() -> None:
    policy = make_policy(FakeClock(), jitter=0.0, backoff_factor=1e6)
    for _ in range(5000):
        policy.on_error()
    assert policy.next_delay() == 600.0


def test_configured_backoff_cap_and_factor() -> None:
    policy = make_policy(FakeClock(), interval=10.0, jitter=0.0, backoff_factor=3.0, backoff_max=100.0)
    seq = []
    for _ in range(4):
        policy.on_error()
        seq.append(policy.next_delay())
    assert seq == [30.0, 90.0, 100.0, 100.0]


def test_idle_keeps_backoff_state() -> None:
    policy = make_policy(FakeClock(), jitter=0.0)
    policy.on_error()
    policy.on_idle()
    assert policy.backing_off
    assert policy.next_delay() == 120.0


@pytest.mark.parametrize(("interval", "cap"), [(60.0, 600.0), (2.0, 20.0), (1200.0, 1200.0), (100.0, 600.0)])
def test_default_backoff_max(interval: float, cap: float) -> None:
    assert default_backoff_max(interval) == cap
    assert make_policy(FakeClock(), interval=interval).backoff_max == cap


# -- floors and validation -----------------------------------------------------------


def test_floor_applies_only_to_a_shared_htcondor_schedd() -> None:
    assert floor_for("htcondor", own_schedd=False) == HTCONDOR_POLL_FLOOR
    assert floor_for("htcondor", own_schedd=True) == 0.0
    assert floor_for("local", own_schedd=False) == 0.0


def test_for_schedd_uses_the_config() -> None:
    shared = PollPolicy.for_schedd(ScheddConfig(name="ap", backend="htcondor", poll_interval=60.0),
                                   clock=FakeClock())
    assert (shared.interval, shared.floor) == (60.0, HTCONDOR_POLL_FLOOR)
    own = PollPolicy.for_schedd(ScheddConfig(name="mine", backend="htcondor", poll_interval=1.0,
                                             own_schedd=True), clock=FakeClock())
    assert (own.interval, own.floor) == (1.0, 0.0)
    local = PollPolicy.for_schedd(ScheddConfig(name="local", backend="local", poll_interval=0.5),
                                  clock=FakeClock())
    assert (local.interval, local.floor, local.backoff_max) == (0.5, 0.0, 5.0)


@pytest.mark.parametrize("kwargs", [
    {"interval": 5.0, "floor": 10.0},
    {"interval": 0.0},
    {"interval": -1.0},
    {"interval": math.nan},
    {"interval": math.inf},
    {"interval": 60.0, "jitter": 1.0},
    {"interval": 60.0, "jitter": -0.1},
    {"interval": 60.0, "backoff_factor": 0.5},
    {"interval": 60.0, "backoff_max": 30.0},
])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        # mypy cannot match one dict of mixed settings to the keyword types.
        PollPolicy(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


# -- scheduling and status -----------------------------------------------------------


def test_next_delay_records_when_the_poll_is_due() -> None:
    clock = FakeClock()
    policy = make_policy(clock, jitter=0.0)
    assert policy.due_in() is None
    policy.next_delay()
    assert policy.due_in() == 60.0
    clock.advance(45.0)
    assert policy.due_in() == 15.0
    clock.advance(100.0)
    assert policy.due_in() == 0.0


def test_state_reports_interval_in_force_and_backoff() -> None:
    clock = FakeClock()
    policy = make_policy(clock, jitter=0.0, floor=10.0)
    assert policy.state() == {
        "poll_interval": 60.0, "interval_in_force": 60.0, "poll_floor": 10.0, "jitter": 0.0,
        "backing_off": False, "consecutive_errors": 0, "backoff_max": 600.0, "next_poll_in": None,
    }
    policy.on_error()
    policy.on_error()
    policy.next_delay()
    clock.advance(40.0)
    state = policy.state()
    assert state["interval_in_force"] == 240.0
    assert state["backing_off"] is True
    assert state["consecutive_errors"] == 2
    assert state["next_poll_in"] == 200.0


# -- token bucket --------------------------------------------------------------------


def test_bucket_starts_full_and_allows_a_burst() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3, clock=FakeClock())
    assert bucket.tokens == 3.0
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.tokens == 0.0


def test_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket.every(15.0, clock=clock)
    assert bucket.try_take()
    assert not bucket.try_take()
    assert bucket.next_available_in() == pytest.approx(15.0)
    clock.advance(14.9)
    assert not bucket.try_take()
    assert bucket.next_available_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.next_available_in() == 0.0
    assert bucket.try_take()
    assert not bucket.try_take()


@pytest.mark.parametrize(("period", "start"), [(0.3, 1000.0), (0.9, 12345.678), (0.1, 1e6 + 0.3)])
def test_bucket_serves_exactly_when_it_said_it_would(period: float, start: float) -> None:
    # These refill to a hair under one token in floating point.
    clock = FakeClock(start)
    bucket = TokenBucket.every(period, clock=clock)
    assert bucket.try_take()
    clock.advance(bucket.next_available_in())
    assert bucket.try_take()


def test_bucket_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=10.0, burst=2, clock=clock)
    clock.advance(1e6)
    assert bucket.tokens == 2.0
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=1.0, burst=1, clock=clock)
    assert bucket.try_take()
    clock.advance(-100.0)
    assert bucket.tokens == 0.0
    clock.advance(100.0)  # back where it was: no time has passed, so nothing refilled
    assert bucket.tokens == 0.0
    clock.advance(0.5)
    assert bucket.tokens == pytest.approx(0.5)


def test_bucket_that_can_never_serve() -> None:
    clock = FakeClock()
    off = TokenBucket(rate_per_s=0.0, burst=0.0, clock=clock)
    assert not off.try_take()
    assert off.next_available_in() == math.inf
    small = TokenBucket(rate_per_s=1.0, burst=1.0, clock=clock)
    assert small.next_available_in(2.0) == math.inf
    assert not small.try_take(2.0)
    assert small.tokens == 1.0  # a refused take takes nothing


def test_bucket_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=-1.0, clock=FakeClock())
    with pytest.raises(ValueError):
        TokenBucket.every(-1.0, clock=FakeClock())


def test_a_period_of_zero_turns_early_polls_off() -> None:
    """`early_poll_every = 0` in the config: no poke moves a poll, and none is deferred either."""
    clock = FakeClock()
    policy = make_policy(clock, jitter=0.0)
    policy.next_delay()
    early = EarlyPolls(policy, bucket=TokenBucket.every(0.0, clock=clock))
    assert early.request() is EarlyDecision.RATE_LIMITED
    assert early.request(force=True) is EarlyDecision.RATE_LIMITED
    assert policy.due_in() == 60.0


# -- early polls ---------------------------------------------------------------------


def scheduled(clock: FakeClock) -> tuple[PollPolicy, EarlyPolls]:
    """A policy whose next regular poll is a full interval away, and its early-poll gate."""
    policy = make_policy(clock, jitter=0.0)
    policy.next_delay()
    return policy, EarlyPolls(policy)


def test_default_early_polls_are_one_per_period() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    assert early.request() is EarlyDecision.GRANTED
    assert policy.due_in() == 0.0
    policy.on_success()
    policy.next_delay()  # the early poll ran; the next regular one is 60 s away
    clock.advance(1.0)
    assert early.request() is EarlyDecision.RATE_LIMITED
    clock.advance(EARLY_POLL_PERIOD - 1.0)
    assert early.request() is EarlyDecision.GRANTED


def test_pokes_while_an_early_poll_is_pending_spend_no_tokens() -> None:
    clock = FakeClock()
    policy = make_policy(clock, jitter=0.0)
    policy.next_delay()
    early = EarlyPolls(policy, bucket=TokenBucket(rate_per_s=0.0, burst=2, clock=clock))
    assert early.request().granted
    assert [early.request() for _ in range(5)] == [EarlyDecision.DUE] * 5
    assert early.bucket.tokens == 1.0


def test_early_poll_not_needed_when_the_regular_poll_is_imminent() -> None:
    clock = FakeClock()
    _, early = scheduled(clock)
    clock.advance(59.8)
    assert early.request() is EarlyDecision.DUE
    assert early.bucket.tokens == 1.0


def test_early_polls_refused_during_backoff_even_when_forced() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    policy.on_error()
    policy.next_delay()
    clock.advance(30.0)
    assert early.request() is EarlyDecision.BACKOFF
    assert early.request(force=True) is EarlyDecision.BACKOFF
    assert early.bucket.tokens == 1.0
    assert policy.due_in() == 90.0  # the backoff poll was not moved
    policy.on_success()
    policy.next_delay()
    clock.advance(1.0)
    assert early.request() is EarlyDecision.GRANTED


def test_no_early_poll_right_after_a_query_unless_forced() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    policy.on_success()
    clock.advance(0.2)
    assert early.request() is EarlyDecision.RECENT
    assert early.bucket.tokens == 1.0
    assert early.request(force=True) is EarlyDecision.GRANTED


def test_early_poll_allowed_once_the_gap_has_passed() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    policy.on_success()
    clock.advance(0.6)
    assert early.request() is EarlyDecision.GRANTED


def test_force_does_not_bypass_the_bucket() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    assert early.request(force=True).granted
    policy.on_success()
    policy.next_delay()
    # The queue changed again and the bucket is empty: the poll moves to when the next token comes,
    # which is spent now, so the budget holds: the next forced change waits a whole period more.
    assert early.request(force=True) is EarlyDecision.DEFERRED
    assert policy.due_in() == pytest.approx(EARLY_POLL_PERIOD)
    assert early.bucket.next_available_in() == pytest.approx(2 * EARLY_POLL_PERIOD)
    assert early.request(force=True) is EarlyDecision.RATE_LIMITED
    assert policy.due_in() == pytest.approx(EARLY_POLL_PERIOD)
    # A plain poke (rsub wait) is never deferred.
    clock.advance(EARLY_POLL_PERIOD)
    policy.on_success()
    policy.next_delay()
    clock.advance(1.0)
    assert early.request() is EarlyDecision.RATE_LIMITED
    assert policy.due_in() == 59.0


def test_a_deferred_poll_never_moves_a_sooner_regular_one_later() -> None:
    clock = FakeClock()
    policy = make_policy(clock, interval=10.0, jitter=0.0)
    policy.next_delay()
    early = EarlyPolls(policy)
    assert early.request(force=True).granted
    policy.on_success()
    policy.next_delay()  # 10 s away; the bucket refills in 15 s
    assert early.request(force=True) is EarlyDecision.RATE_LIMITED
    assert policy.due_in() == 10.0


def test_an_answer_to_a_submit_ends_a_backoff_but_is_no_query() -> None:
    """Issue 18, 4: the early poll after a submit was refused as "recent", so a new cluster waited a whole
    (backed-off) interval for its first poll."""
    clock = FakeClock()
    policy, early = scheduled(clock)
    policy.on_error()
    policy.on_error()
    policy.next_delay()  # 240 s away
    clock.advance(30.0)
    last = policy.last_query_at
    policy.on_answered()  # the submit succeeded
    assert not policy.backing_off and policy.last_query_at == last
    assert early.request(force=True) is EarlyDecision.GRANTED
    assert policy.due_in() == 0.0


def test_early_polls_state_counts_decisions() -> None:
    clock = FakeClock()
    policy, early = scheduled(clock)
    early.request()
    early.request()
    policy.on_success()
    policy.next_delay()
    early.request()
    state = early.state()
    assert state["early_polls"] == {"granted": 1, "due": 1, "recent": 1, "backoff": 0, "rate_limited": 0, "queued": 0,
                                    "deferred": 0}
    assert state["early_poll_tokens"] == 0.0
    assert state["early_poll_available_in"] == pytest.approx(EARLY_POLL_PERIOD)
    off = EarlyPolls(policy, bucket=TokenBucket(rate_per_s=0.0, burst=0.0, clock=clock))
    assert off.state()["early_poll_available_in"] is None
