"""Flow control per destination: an adaptive rate limiter and a circuit breaker.

The limiter is a token bucket whose rate adapts (AIMD): it halves on a 429, at most once per
second so a burst of concurrent 429s counts once, and creeps back up by 2 % of the configured
rate per second of successes. ``X-RateLimit-Remaining``/``-Reset`` are read on every response:
when a window is nearly spent the limiter waits for its reset. Replicas sharing one workspace
limit each converge below it without per-replica settings.

The breaker opens after ``threshold`` consecutive retryable failures (5xx, timeouts,
connection errors; not 429s, which the limiter handles). While open, senders wait instead of
spending attempts; after a cooldown one probe is let through (half-open). Success closes it;
failure reopens it with the cooldown doubled, up to a cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from enum import Enum

_DECREASE_FACTOR = 0.5
_INCREASE_PER_SECOND = 0.02
_MIN_FRACTION = 0.01
_EPOCH_THRESHOLD = 1_000_000_000


class AdaptiveRateLimiter:
    """Token bucket with AIMD adaptation; ``rate <= 0`` disables it."""

    def __init__(
        self,
        rate: float,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rate = rate
        self.rate = rate
        self._clock = clock
        self._burst = max(1.0, rate * burst_seconds)
        self._tokens = self._burst
        self._updated = clock()
        self._last_decrease = -1e9
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_rate > 0

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units may be sent."""
        if not self.enabled:
            return
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                if now < self._blocked_until:
                    await asyncio.sleep(self._blocked_until - now)
                    continue
                self._refill(now)
                needed = min(cost, self._burst)
                if self._tokens >= needed:
                    self._tokens -= needed
                    return
                await asyncio.sleep((needed - self._tokens) / self.rate)

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429: halve the rate (once per second) and respect the server's wait."""
        if not self.enabled:
            return
        now = self._clock()
        if now - self._last_decrease >= 1.0:
            self.rate = max(self.max_rate * _MIN_FRACTION, self.rate * _DECREASE_FACTOR)
            self._last_decrease = now
        if retry_after:
            self._blocked_until = max(self._blocked_until, now + retry_after)

    def on_success(self, headers: Mapping[str, str]) -> None:
        """Raise the rate slowly; wait for the window reset when the server says it is spent."""
        if not self.enabled:
            return
        now = self._clock()
        elapsed = now - self._updated
        self.rate = min(self.max_rate, self.rate + self.max_rate * _INCREASE_PER_SECOND * elapsed)
        remaining, reset_in = _window(headers)
        if remaining is not None and reset_in is not None and remaining <= 0:
            self._blocked_until = max(self._blocked_until, now + reset_in)

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now


def _window(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    remaining = reset = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "x-ratelimit-remaining":
            remaining = _number(value)
        elif lowered == "x-ratelimit-reset":
            reset = _number(value)
    if reset is not None and reset > _EPOCH_THRESHOLD:
        reset = max(0.0, reset - time.time())
    return remaining, reset


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


class BreakerState(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        max_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max(max_cooldown, cooldown)
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._clock = clock
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._changed = asyncio.Event()
        self._on_change = on_change

    async def admit(self) -> None:
        """Wait until a request may go out (closed, or this caller is the half-open probe)."""
        while True:
            if self.state is BreakerState.CLOSED:
                return
            if self.state is BreakerState.OPEN:
                wait = self._opened_at + self.cooldown - self._clock()
                if wait <= 0:
                    self._set(BreakerState.HALF_OPEN)
                    continue
                await self._wait(wait)
                continue
            if not self._probe_in_flight:
                self._probe_in_flight = True
                return
            await self._wait(self.cooldown)

    def record_success(self) -> None:
        self.failures = 0
        self._probe_in_flight = False
        if self.state is not BreakerState.CLOSED:
            self.cooldown = self.base_cooldown
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
            self._open()
        elif self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open()

    def release_probe(self) -> None:
        """The probe ended without telling us anything (e.g. cancelled)."""
        self._probe_in_flight = False

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
        try:
            await asyncio.wait_for(changed.wait(), timeout=max(0.01, seconds))
        except TimeoutError:
            pass
