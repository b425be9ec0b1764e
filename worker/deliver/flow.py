"""Flow control per destination: adaptive rate limiters per request family and a circuit breaker.

**Families.** A destination's requests fall into families (``worker.destinations.base.Family``)
that the vendor limits separately, e.g. one family per endpoint group. Each family has its own
concurrency slots and one limiter per unit it is metered in (requests, items, or the vendor's
own units such as users and events per minute); a family's limiters learn only from that
family's responses, so an exhausted window of one family never slows another.

**Limiter.** A token bucket whose rate adapts (AIMD) and that obeys the server:

* a 429 halves the rate (at most once per second, so a burst of concurrent 429s counts once,
  never below 1 % of the configured rate) and blocks every sender until the server's
  ``Retry-After`` / ``X-RateLimit-Reset`` time;
* every accepted response raises the rate by 2 % of the configured rate per second elapsed
  since the last raise, up to the configured rate;
* ``X-RateLimit-Remaining`` / ``-Reset`` on any response cap the rate at
  ``remaining / seconds until reset`` (and block until the reset when nothing remains).

The window cap is what lets a pool of N replicas share one workspace limit without
per-replica settings: every replica sees the same shared ``remaining``, so as the pool spends
the window each replica slows down in proportion. With ``r(t) = R(t) / T(t)`` per replica,
``R(t) = R0 * (T(t) / T0) ** N``: the pool spends the whole window and reaches zero only at the
reset, for any N. AIMD on 429s covers destinations that send no window headers.

**Breaker.** It opens after ``threshold`` consecutive retryable failures (5xx, timeouts,
connection errors; not 429s, which the limiter handles). While it is open, senders wait instead
of spending attempts; after the cooldown one request is let through as a probe (half-open).
Any answer from the destination (success or a permanent 4xx) closes it; a failed probe reopens
it with the cooldown doubled, up to ``max_cooldown`` (default: 8 x the cooldown, at most 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Final

from worker.destinations.base import Family, Meter, Request, per_request

_DECREASE_FACTOR: Final = 0.5
_DECREASE_INTERVAL: Final = 1.0
_INCREASE_PER_SECOND: Final = 0.02
_MIN_FRACTION: Final = 0.01
# A reset header above this is a Unix timestamp; below it, seconds from now
# (destination-apis.md §1.4 and §2.6 disagree on which one the APIs send).
_EPOCH_THRESHOLD: Final = 1_000_000_000
# never block longer than this on one server hint (hourly windows are the longest documented)
_MAX_BLOCK_SECONDS: Final = 3600.0
_MAX_COOLDOWN_SECONDS: Final = 60.0
_COOLDOWN_DOUBLINGS: Final = 8.0


class AdaptiveRateLimiter:
    """Token bucket with AIMD adaptation and server-window pacing; ``rate <= 0`` = no limit.

    Even without a configured rate, a server's ``Retry-After`` blocks every sender.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_rate = rate
        self.rate = rate  # the AIMD rate; see effective_rate for the window cap
        self._burst_seconds = burst_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        now = clock()
        self._tokens = self._bucket(rate)
        self._updated = now
        self._last_increase = now
        self._last_decrease = -1e18
        self._blocked_until = 0.0
        self._window_rate: float | None = None  # remaining / seconds-until-reset
        self._window_until = 0.0  # when that cap stops applying (the window's reset)
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_rate > 0

    @property
    def effective_rate(self) -> float:
        """The rate the bucket refills at now: AIMD rate capped by the server's window."""
        if not self.enabled:
            return 0.0
        if self._window_rate is not None and self._clock() < self._window_until:
            return max(self.max_rate * _MIN_FRACTION, min(self.rate, self._window_rate))
        return self.rate

    @property
    def blocked_for(self) -> float:
        """Seconds until the server allows the next request (0 when not blocked)."""
        return max(0.0, self._blocked_until - self._clock())

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units may be sent (first come, first served)."""
        async with self._lock:
            while (wait := self.reserve(cost)) > 0:
                await asyncio.sleep(wait)

    def reserve(self, cost: float = 1.0) -> float:
        """Take ``cost`` units if they are available now and return 0; else the seconds to wait."""
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        if not self.enabled:
            return 0.0
        rate = self.effective_rate
        self._refill(now, rate)
        needed = min(cost, self._bucket(rate))
        if self._tokens >= needed:
            self._tokens -= needed
            return 0.0
        return (needed - self._tokens) / rate

    def on_throttled(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """A 429: halve the rate (once per second) and wait as long as the server asked."""
        now = self._clock()
        if retry_after:
            self._block(now, retry_after)
        self._observe_window(now, headers)
        if not self.enabled:
            return
        if now - self._last_decrease >= _DECREASE_INTERVAL:
            self.rate = max(self.max_rate * _MIN_FRACTION, self.rate * _DECREASE_FACTOR)
            self._last_decrease = now
            self._last_increase = now

    def on_success(self, headers: Mapping[str, str] | None = None) -> None:
        """An accepted response: raise the rate slowly and follow the server's window."""
        now = self._clock()
        self._observe_window(now, headers)
        if not self.enabled:
            return
        elapsed = max(0.0, now - self._last_increase)
        self._last_increase = now
        self.rate = min(self.max_rate, self.rate + self.max_rate * _INCREASE_PER_SECOND * elapsed)

    def _observe_window(self, now: float, headers: Mapping[str, str] | None) -> None:
        if not headers:
            return
        remaining, reset_in = rate_window(headers, self._wall_clock())
        if remaining is None or reset_in is None or reset_in <= 0:
            return
        if remaining <= 0:
            self._block(now, reset_in)
        self._window_rate = remaining / reset_in
        self._window_until = now + min(reset_in, _MAX_BLOCK_SECONDS)

    def _block(self, now: float, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, now + min(seconds, _MAX_BLOCK_SECONDS))

    def _bucket(self, rate: float) -> float:
        return max(1.0, rate * self._burst_seconds)

    def _refill(self, now: float, rate: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._bucket(rate), self._tokens + elapsed * rate)
        self._updated = now


class FamilyFlow:
    """One request family's concurrency slots and its limiters, one per metered unit."""

    def __init__(self, family: Family, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = family.name
        self.slots = asyncio.Semaphore(family.concurrency)
        # a family without meters still gets one limiter: it obeys the server's Retry-After
        meters = family.meters or (Meter("requests", 0.0, per_request),)
        self.meters = tuple(meters)
        self.limiters = tuple(AdaptiveRateLimiter(m.per_second, clock=clock) for m in meters)

    @property
    def limiter(self) -> AdaptiveRateLimiter:
        """The first limiter (the rate the metrics show)."""
        return self.limiters[0]

    async def acquire(self, request: Request) -> None:
        """Wait until every meter of the family allows ``request``."""
        for meter, limiter in zip(self.meters, self.limiters, strict=True):
            await limiter.acquire(meter.cost(request))

    def on_success(self, headers: Mapping[str, str]) -> None:
        for limiter in self.limiters:
            limiter.on_success(headers)

    def on_throttled(self, retry_after: float | None) -> bool:
        """A 429 for this family; True when it lowered the family's rate."""
        before = [limiter.rate for limiter in self.limiters]
        for limiter in self.limiters:
            limiter.on_throttled(retry_after)
        return any(limiter.rate < rate for limiter, rate in zip(self.limiters, before, strict=True))


def rate_window(headers: Mapping[str, str], now: float) -> tuple[float | None, float | None]:
    """(``X-RateLimit-Remaining``, seconds until ``X-RateLimit-Reset``), either may be None.

    Header names are matched case-insensitively (HTTP/2 lowercases them); the reset may be an
    epoch timestamp or a delta (destination-apis.md §1.4, §2.6).
    """
    remaining = reset = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "x-ratelimit-remaining":
            remaining = _number(value)
        elif lowered == "x-ratelimit-reset":
            reset = _number(value)
    if reset is not None and reset > _EPOCH_THRESHOLD:
        reset = reset - now
    return remaining, reset


def _number(value: str) -> float | None:
    try:
        return float(value.strip())
    except ValueError:
        return None


class BreakerState(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open probe → closed."""

    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        max_cooldown: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown
        if max_cooldown is None:
            max_cooldown = min(_MAX_COOLDOWN_SECONDS, cooldown * _COOLDOWN_DOUBLINGS)
        self.max_cooldown = max(max_cooldown, cooldown)
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._clock = clock
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._changed = asyncio.Event()
        self._on_change = on_change

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    async def admit(self) -> bool:
        """Wait until a request may go out; True when this caller is the half-open probe."""
        while True:
            if self.state is BreakerState.CLOSED:
                return False
            if self.state is BreakerState.OPEN:
                wait = self._opened_at + self.cooldown - self._clock()
                if wait <= 0:
                    self._set(BreakerState.HALF_OPEN)
                    continue
                await self._wait(wait)
                continue
            if not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            await self._wait(self.cooldown)

    def record_success(self) -> None:
        """The destination answered (accepted, or refused for good): it is up."""
        self.failures = 0
        self._probe_in_flight = False
        if self.state is not BreakerState.CLOSED:
            self.cooldown = self.base_cooldown
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A retryable failure (5xx, timeout, connection error)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
            self._open()
        elif self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open()

    def release_probe(self) -> None:
        """The probe ended without telling us anything (a 429, refused credentials, cancelled)."""
        if self._probe_in_flight:
            self._probe_in_flight = False
            self._changed.set()
            self._changed = asyncio.Event()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_change:
                self._on_change(state)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, seconds: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.01, seconds)):
                await changed.wait()
