"""When to poll one schedd: interval with jitter, backoff after errors, rate-limited early polls.

Pure policy, no I/O and no timer: the app asks `PollPolicy.next_delay()` after each
poll and reschedules its date job that far ahead; `EarlyPolls.request()` decides
whether a `rsub poke` or `rsub wait` may move that poll to now. Every class takes
a clock (seconds, monotonic by default) and the policy takes a `random.Random`,
so tests drive them deterministically.

Whether a schedd is queried at all when nothing is tracked on it is the poller's
decision (`Poller.poll_once()` returns outcome "idle" without a query); the
policy only hears of it through `on_idle()`, which changes nothing.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from typing import Any

from rsubd.config import HTCONDOR_POLL_FLOOR, ScheddConfig

Clock = Callable[[], float]

DEFAULT_JITTER = 0.1  # fraction of the delay, drawn uniformly from ±jitter
DEFAULT_BACKOFF_FACTOR = 2.0
BACKOFF_CEILING = 600.0  # seconds; the default cap on backoff for a normal interval
EARLY_POLL_PERIOD = 15.0  # seconds; clients may cause one early poll per period
EARLY_POLL_BURST = 1.0
EARLY_POLL_GAP = 0.5  # seconds; the least time between a query and an early one after it
# Floats that refill to "exactly" one token can land a hair below it.
_EPSILON = 1e-9


def floor_for(backend: str, *, own_schedd: bool) -> float:
    """The shortest delay allowed between polls of a schedd of this kind."""
    # A shared schedd serves many users; the user's own and the embedded one do not.
    return HTCONDOR_POLL_FLOOR if backend == "htcondor" and not own_schedd else 0.0


def default_backoff_max(interval: float) -> float:
    """The backoff cap when none is configured: ten intervals, at most 600 s, at least one."""
    # Ten intervals keeps a fast embedded scheduler quick to recover; 600 s bounds
    # how long a user waits to learn that a shared schedd is back.
    return max(interval, min(BACKOFF_CEILING, 10.0 * interval))


def _check(value: float, name: str, *, minimum: float, below: float = math.inf) -> float:
    value = float(value)
    if not (math.isfinite(value) and minimum <= value < below):
        bound = f"in [{minimum:g}, {below:g})" if math.isfinite(below) else f"at least {minimum:g}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")
    return value


class TokenBucket:
    """Allows `burst` takes at once, refilled at `rate_per_s`; starts full."""

    def __init__(self, rate_per_s: float, burst: float = EARLY_POLL_BURST, *,
                 clock: Clock = time.monotonic) -> None:
        # A rate or burst of 0 is allowed: it turns early polls off.
        self.rate = _check(rate_per_s, "rate_per_s", minimum=0.0)
        self.burst = _check(burst, "burst", minimum=0.0)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()

    @classmethod
    def every(cls, period: float, burst: float = EARLY_POLL_BURST, *,
              clock: Clock = time.monotonic) -> TokenBucket:
        """A bucket that refills one token per `period` seconds; a period of 0 is one that never serves."""
        period = _check(period, "period", minimum=0.0)
        if period == 0:
            return cls(0.0, 0.0, clock=clock)  # early polls off: only the regular schedule polls
        return cls(1.0 / period, burst, clock=clock)

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (a test's, or a broken one) must neither drain the
        # bucket nor, on stepping forward again, refill it for time already counted.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    def take_ahead(self, n: float = 1.0) -> None:
        """Spend `n` tokens not yet refilled: the bucket owes them, and refills that much later."""
        self._refill()
        self._tokens -= n

    def try_take(self, n: float = 1.0) -> bool:
        """Take `n` tokens if there are that many; False (and nothing taken) otherwise."""
        self._refill()
        if self._tokens + _EPSILON < n:
            return False
        self._tokens = max(0.0, self._tokens - n)
        return True

    def next_available_in(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens are available: 0 if they are now, inf if never."""
        self._refill()
        missing = n - self._tokens
        if missing <= _EPSILON:
            return 0.0
        if n > self.burst or self.rate == 0:
            return math.inf
        return missing / self.rate


class PollPolicy:
    """The delay before the next regular poll of one schedd, with jitter and error backoff."""

    def __init__(
        self,
        interval: float,
        *,
        floor: float = 0.0,
        jitter: float = DEFAULT_JITTER,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        backoff_max: float | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.floor = _check(floor, "floor", minimum=0.0)
        self.interval = _check(interval, "interval", minimum=self.floor)
        if self.interval == 0:
            raise ValueError("interval must be more than 0")
        self.jitter = _check(jitter, "jitter", minimum=0.0, below=1.0)
        self.backoff_factor = _check(backoff_factor, "backoff_factor", minimum=1.0)
        cap = default_backoff_max(self.interval) if backoff_max is None else backoff_max
        self.backoff_max = _check(cap, "backoff_max", minimum=self.interval)
        # Unseeded by default: daemons that share a seed would poll in step again.
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.consecutive_errors = 0
        self.last_query_at: float | None = None  # when the schedd last answered or failed
        self.next_poll_at: float | None = None  # when the app last said the next poll runs
        self.last_delay: float | None = None

    @classmethod
    def for_schedd(cls, cfg: ScheddConfig, *, rng: random.Random | None = None,
                   clock: Clock = time.monotonic) -> PollPolicy:
        """The policy for a configured schedd, with its backend's floor."""
        return cls(cfg.poll_interval, floor=floor_for(cfg.backend, own_schedd=cfg.own_schedd),
                   jitter=cfg.poll_jitter, backoff_max=cfg.poll_backoff_max, rng=rng, clock=clock)

    # -- outcomes ------------------------------------------------------------------

    def on_success(self) -> None:
        """The schedd answered: back to the normal interval at once."""
        self.consecutive_errors = 0
        self.last_query_at = self.clock()

    def on_answered(self) -> None:
        """A submit or an action succeeded: the schedd is up, so any backoff ends.

        Not a query: the ledger's view of the queue is no fresher, so `last_query_at`
        stays (the early poll that follows a submit must not be refused as recent).
        """
        self.consecutive_errors = 0

    def on_error(self) -> None:
        """A query failed or timed out: back off one step further."""
        self.consecutive_errors += 1
        self.last_query_at = self.clock()

    def on_idle(self) -> None:
        """Nothing was tracked, so nothing was asked: the schedd's health is unknown."""
        # Keeping any backoff means a schedd that was down is not hit the moment a
        # job appears; a successful submit to it should call on_success() instead.

    # -- delays --------------------------------------------------------------------

    @property
    def backing_off(self) -> bool:
        return self.consecutive_errors > 0

    def base_delay(self) -> float:
        """The delay in force before jitter: the interval, or the backoff step after errors."""
        n = self.consecutive_errors
        if n == 0:
            return self.interval
        try:
            step = self.interval * self.backoff_factor ** n
        except OverflowError:
            step = math.inf
        return min(step, self.backoff_max)

    def delay_bounds(self) -> tuple[float, float]:
        """The least and greatest delay `next_delay()` can return now."""
        base = self.base_delay()
        # Clamping to the floor rather than rejecting the draw keeps the spread (and
        # so the de-synchronisation) when the interval sits near the floor.
        low = max(self.floor, base * (1.0 - self.jitter))
        high = max(low, base * (1.0 + self.jitter))
        if self.backing_off:
            # The cap is a promise about the longest silence, jitter included.
            high = min(high, self.backoff_max)
            low = min(low, high)
        return low, high

    def next_delay(self) -> float:
        """Seconds until the next regular poll; records it as scheduled."""
        low, high = self.delay_bounds()
        delay = self.rng.uniform(low, high)
        # uniform() may round a hair past either end.
        delay = min(max(delay, low), high)
        self.last_delay = delay
        self.next_poll_at = self.clock() + delay
        return delay

    def schedule_now(self) -> None:
        """Record that the next poll was moved to now (startup, or an early poll)."""
        self.next_poll_at = self.clock()

    def due_in(self) -> float | None:
        """Seconds until the scheduled poll (0 if overdue or running), None if none is scheduled."""
        if self.next_poll_at is None:
            return None
        return max(0.0, self.next_poll_at - self.clock())

    def state(self) -> dict[str, Any]:
        """For `rsub daemon status`."""
        due = self.due_in()
        return {
            "poll_interval": self.interval,
            "interval_in_force": round(self.base_delay(), 3),
            "poll_floor": self.floor,
            "jitter": self.jitter,
            "backing_off": self.backing_off,
            "consecutive_errors": self.consecutive_errors,
            "backoff_max": self.backoff_max,
            "next_poll_in": None if due is None else round(due, 3),
        }


class EarlyDecision(enum.StrEnum):
    """The answer to a request for an early poll; only GRANTED moves the poll."""

    GRANTED = "granted"
    DUE = "due"  # the regular poll runs within the gap anyway (or is running): nothing to do
    RECENT = "recent"  # the schedd was queried less than the gap ago: the ledger is fresh
    BACKOFF = "backoff"  # the schedd last failed: only the backoff schedule may retry it
    RATE_LIMITED = "rate_limited"  # the bucket is empty
    QUEUED = "queued"  # a poll is running: one more follows it, if the bucket allows
    DEFERRED = "deferred"  # the queue changed and the bucket is empty: the poll moves to when it refills

    @property
    def granted(self) -> bool:
        return self is EarlyDecision.GRANTED

    @property
    def moves_poll(self) -> bool:
        """The next poll was moved earlier (now, or to when the budget allows)."""
        return self in (EarlyDecision.GRANTED, EarlyDecision.DEFERRED)


class EarlyPolls:
    """Decides whether a client may move one schedd's next poll to now."""

    def __init__(self, policy: PollPolicy, *, bucket: TokenBucket | None = None,
                 min_gap: float = EARLY_POLL_GAP) -> None:
        self.policy = policy
        self.bucket = bucket if bucket is not None else TokenBucket.every(
            EARLY_POLL_PERIOD, EARLY_POLL_BURST, clock=policy.clock)
        self.min_gap = _check(min_gap, "min_gap", minimum=0.0)
        self.counts: dict[EarlyDecision, int] = dict.fromkeys(EarlyDecision, 0)

    def request(self, *, force: bool = False) -> EarlyDecision:
        """Ask for an early poll; GRANTED spends a token and marks the poll as due now.

        `force` skips only the gap after the last query (the caller has just changed
        the queue, so a fresh answer is worth having); it never skips an active
        backoff or the bucket, which exist so that clients cannot hammer a schedd. A
        forced request that finds the bucket empty is DEFERRED: the next poll moves to
        when the next token comes (spent now), if that is sooner than the regular one.
        """
        decision = self._decide(force)
        self.counts[decision] += 1
        if decision.granted:
            self.policy.schedule_now()
        return decision

    def _decide(self, force: bool) -> EarlyDecision:
        policy = self.policy
        # Backoff first: a schedd that is down must not be polled harder because
        # clients waiting on it keep poking.
        if policy.backing_off:
            return EarlyDecision.BACKOFF
        # Checked before the bucket so that a burst of pokes costs one token, not many.
        due = policy.due_in()
        if due is not None and due <= self.min_gap:
            return EarlyDecision.DUE
        last = policy.last_query_at
        if not force and last is not None and policy.clock() - last < self.min_gap:
            return EarlyDecision.RECENT
        if self.bucket.try_take():
            return EarlyDecision.GRANTED
        wait = self.bucket.next_available_in()
        if force and math.isfinite(wait) and (due is None or wait < due):
            self.bucket.take_ahead()
            policy.next_poll_at = policy.clock() + wait
            return EarlyDecision.DEFERRED
        return EarlyDecision.RATE_LIMITED

    def state(self) -> dict[str, Any]:
        """For `rsub daemon status`."""
        wait = self.bucket.next_available_in()
        return {
            "early_poll_tokens": round(self.bucket.tokens, 3),
            "early_poll_available_in": None if math.isinf(wait) else round(wait, 3),
            "early_polls": {d.value: n for d, n in self.counts.items()},
        }
