"""Rate limiter and circuit breaker arithmetic, driven by a fake clock."""

import asyncio

import pytest

from worker.deliver.flow import AdaptiveRateLimiter, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_halves_once_per_second_and_recovers_additively() -> None:
    """A burst of 429s halves the rate once; then successes add 2 % of max per second."""
    clock = Clock()
    limiter = AdaptiveRateLimiter(100.0, clock=clock)
    limiter.on_throttled(None)
    limiter.on_throttled(None)
    assert limiter.rate == 50.0
    clock.now += 1.0
    limiter.on_throttled(None)
    assert limiter.rate == 25.0
    clock.now += 10.0
    limiter.on_success({})
    assert limiter.rate == pytest.approx(25.0 + 100.0 * 0.02 * 10.0)


def test_rate_never_exceeds_configured_maximum() -> None:
    """Additive increase stops at the configured rate."""
    clock = Clock()
    limiter = AdaptiveRateLimiter(10.0, clock=clock)
    clock.now += 1000
    limiter.on_success({})
    assert limiter.rate == 10.0


async def test_acquire_waits_for_tokens() -> None:
    """At 20 units/s with a 20-unit burst, the 30th unit waits about half a second."""
    limiter = AdaptiveRateLimiter(20.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(30):
        await limiter.acquire()
    assert 0.4 <= loop.time() - started < 1.0


def test_breaker_opens_after_threshold_and_closes_on_success() -> None:
    """Five consecutive failures open the breaker; a success closes it and resets cooldown."""
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(threshold=5, cooldown=1.0, on_change=changes.append)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.CLOSED]


async def test_half_open_admits_one_probe_and_doubles_cooldown_on_failure() -> None:
    """After the cooldown one caller probes; its failure reopens with twice the cooldown."""
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=2.0, max_cooldown=10.0, clock=clock)
    breaker.record_failure()
    clock.now += 2.0
    await asyncio.wait_for(breaker.admit(), 1)
    assert breaker.state is BreakerState.HALF_OPEN
    second = asyncio.create_task(breaker.admit())
    await asyncio.sleep(0.05)
    assert not second.done()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.cooldown == 4.0
    second.cancel()
