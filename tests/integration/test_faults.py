"""Fault injection end to end: real broker, `python -m worker run`, faulty simulators.

Each test asserts nothing lost, per-(member, destination) order kept (the definition is in
``tests/integration/harness.py``) and no unnecessary dead letters. The short variants run in
CI; the ``long`` ones (``pytest -m long``) use the issue's full durations and volumes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.integration.harness import (
    Ledger,
    assert_committed_to_end,
    check_delivery,
    dead_letters,
    delivered_ids,
    log_events,
    log_time,
    no_rate_limits,
    no_tracebacks,
    produce_numbered,
    rss_sampler,
    statuses,
    timed_arrivals,
    wait_delivered,
    worker_env,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


async def _both_flowing(sims: Any) -> None:
    await wait_for(
        lambda: bool(delivered_ids(sims, "braze")) and bool(delivered_ids(sims, "moengage")),
        60,
        "first deliveries at both destinations",
    )


async def _assert_clean_finish(
    bootstrap: str, sims: Any, ledger: Ledger, worker: Any, group: str
) -> dict[str, Any]:
    """All delivered in order, no duplicates, no dead letters, clean exit, offsets at the end."""
    reports = {}
    for destination in ("braze", "moengage"):
        report = check_delivery(
            ledger, [(m, e) for _, m, e in timed_arrivals(sims, destination)], destination
        )
        report.assert_ok()
        assert report.duplicates == 0, report
        reports[destination] = report
    assert await dead_letters(bootstrap, ledger.topic) == []
    assert worker.terminate() == 0
    no_tracebacks(worker)
    await assert_committed_to_end(bootstrap, group, [ledger.topic])
    return reports


@pytest.mark.parametrize(
    ("outage", "per_second"),
    [
        pytest.param(8.0, 150.0, id="8s"),
        pytest.param(60.0, 150.0, id="60s", marks=[pytest.mark.long, pytest.mark.timeout(900)]),
    ],
)
async def test_braze_outage_pauses_only_braze_and_it_catches_up_in_order(
    kafka_bootstrap: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    outage: float,
    per_second: float,
) -> None:
    """A 503 outage at Braze: MoEngage keeps flowing, Braze waits, then catches up, no DLQ."""
    (topic,) = topic_factory("rewards_issued")
    group, ledger = _group(), Ledger(topic)
    no_rate_limits(simulators)
    env = worker_env(
        simulators, kafka_bootstrap, [topic], group,
        RELAY_MAX_BUFFERED_EVENTS="500", BRAZE_BREAKER_THRESHOLD="3",
    )  # fmt: skip
    worker = worker_factory(env)
    total = int(per_second * (outage + 20))
    producing = asyncio.create_task(
        produce_numbered(kafka_bootstrap, ledger, total, per_second=per_second)
    )
    await _both_flowing(simulators)

    simulators.braze.state.faults.update({"status": 503, "status_probability": 1.0})
    began = time.time()
    await asyncio.sleep(outage)
    ended = time.time()
    simulators.braze.state.faults.update({"clear": True})

    # MoEngage kept up: everything produced until 3 s before the outage ended had arrived
    moengage = {e for at, _, e in timed_arrivals(simulators, "moengage") if at <= ended}
    due = {p.event_id for p in ledger.events if p.at <= ended - 3.0}
    assert due <= moengage, f"MoEngage fell behind by {len(due - moengage)} events"
    # Braze was not hammered: the in-flight requests, then about one probe per cooldown
    failed = statuses(simulators.braze, began, ended)[503]
    assert 0 < failed <= 16 + 3 + outage, failed
    assert not [at for at, _, _ in timed_arrivals(simulators, "braze") if began + 0.5 < at < ended]

    await producing
    await wait_delivered(simulators, ledger, 120)
    await _assert_clean_finish(kafka_bootstrap, simulators, ledger, worker, group)
    assert log_events(worker, "circuit_breaker", destination="braze", state="open")
    assert log_events(worker, "partitions_paused", destination="braze")
    # MoEngage may pause for its own buffer (commit cadence, backlog), never because it failed
    paused = log_events(worker, "partitions_paused", destination="moengage")
    failing = [p for p in paused if p.get("reason") == "destination is failing"]
    assert not [line for line in failing if log_time(line) >= began], failing
    assert not log_events(worker, "circuit_breaker", destination="moengage")


async def _other_replicas_spend_the_window(window: Any, seconds: float) -> None:
    """Keep Braze's shared 3-second window spent, as other replicas of the pool would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        window.take(0)  # roll the window over when it is due
        window.used = window.limit
        await asyncio.sleep(0.05)


def _violations(requests: list[Any], waits: list[tuple[float, float]], grace: float) -> list[Any]:
    """Requests that arrived while the server had asked us to wait.

    ``waits`` holds (time of the 429, time the server said to come back). A request arriving
    more than ``grace`` after the 429 (those were already in flight) and before the end of the
    wait ignored it.
    """
    return [
        (request.at, request.status, throttled_at, until)
        for throttled_at, until in waits
        for request in requests
        if throttled_at + grace < request.at < until - 0.05
    ]


@pytest.mark.parametrize(
    ("mode", "storm"),
    [
        pytest.param("reset", 6.0, id="x-ratelimit-reset"),
        pytest.param("retry_after", 6.0, id="retry-after"),
        pytest.param(
            "reset", 45.0, id="x-ratelimit-reset-long",
            marks=[pytest.mark.long, pytest.mark.timeout(900)],
        ),
        pytest.param(
            "retry_after", 45.0, id="retry-after-long",
            marks=[pytest.mark.long, pytest.mark.timeout(900)],
        ),
    ],
)  # fmt: skip
async def test_429_storm_waits_as_the_server_says_and_dead_letters_nothing(
    kafka_bootstrap: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    mode: str,
    storm: float,
) -> None:
    """A 429 storm at Braze: no request inside a Retry-After/X-RateLimit-Reset wait, no DLQ.

    ``reset``: other replicas keep Braze's shared 3-second window spent, so 429s carry
    ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset`` (epoch). ``retry_after``: every request
    gets a 429 with ``Retry-After: 1`` and ``X-Ratelimit-Retry-After: 1``, no window headers.
    """
    (topic,) = topic_factory("rewards_issued")
    group, ledger = _group(), Ledger(topic)
    braze = simulators.braze.state
    no_rate_limits(simulators)
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))
    producing = asyncio.create_task(
        produce_numbered(kafka_bootstrap, ledger, int(300 * (storm + 12)), per_second=300)
    )
    await _both_flowing(simulators)

    began = time.time()
    if mode == "reset":
        braze.rate_limits = True
        await _other_replicas_spend_the_window(braze.windows["track"], storm)
        braze.rate_limits = False
    else:
        braze.throttle_mode = "retry_after"
        braze.faults.update({"throttle_probability": 1.0})
        await asyncio.sleep(storm)
        braze.faults.update({"clear": True})
    ended = time.time()

    during = [r for r in braze.requests if began <= r.at <= ended + 5]
    throttled = [r.at for r in during if r.status == 429]
    if mode == "reset":
        waits = [(at, (at // 3) * 3 + 3) for at in throttled]
    else:
        waits = [(at, at + 1.0) for at in throttled]
    # the worker waits for each reset, so a spent 3-second window yields about one 429; a
    # 6-second storm spans at least two windows (every request of the other mode is refused)
    assert len(throttled) >= (2 if mode == "reset" else 3), "the storm produced too few 429s"
    assert _violations(during, waits, grace=0.5) == []
    assert log_events(worker, "rate_limited", destination="braze")

    await producing
    await wait_delivered(simulators, ledger, 120)
    await _assert_clean_finish(kafka_bootstrap, simulators, ledger, worker, group)


@pytest.mark.parametrize(
    ("count", "per_second"),
    [
        pytest.param(4000, 400.0, id="4k"),
        pytest.param(50_000, 500.0, id="50k", marks=[pytest.mark.long, pytest.mark.timeout(900)]),
    ],
)
async def test_random_500s_and_connection_resets_lose_and_reorder_nothing(
    kafka_bootstrap: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    count: int,
    per_second: float,
) -> None:
    """5 % HTTP 500s and 5 % connection resets at both destinations: all arrive, in order."""
    (topic,) = topic_factory("rewards_issued")
    group, ledger = _group(), Ledger(topic)
    no_rate_limits(simulators)
    for sim in (simulators.braze, simulators.moengage):
        sim.state.faults.update(
            {"status": 500, "status_probability": 0.05, "reset_probability": 0.05}
        )
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))
    await produce_numbered(kafka_bootstrap, ledger, count, per_second=per_second)
    await wait_delivered(simulators, ledger, 120 + count / 200)
    for sim in (simulators.braze, simulators.moengage):
        seen = statuses(sim)
        assert seen[500] > 0, (sim.name, seen)
        assert seen[0] > 0, (sim.name, seen)  # the simulator logs a reset as status 0
    await _assert_clean_finish(kafka_bootstrap, simulators, ledger, worker, group)


@pytest.mark.parametrize(
    ("count", "padding", "bound_mb"),
    [
        pytest.param(8000, 2000, 200, id="8k"),
        pytest.param(
            60_000, 2000, 200, id="60k", marks=[pytest.mark.long, pytest.mark.timeout(900)]
        ),
    ],
)
async def test_slow_destination_degrades_throughput_and_memory_stays_bounded(
    kafka_bootstrap: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    count: int,
    padding: int,
    bound_mb: int,
) -> None:
    """Braze answers after 2 s: its throughput drops, MoEngage is unaffected, RSS is bounded."""
    (topic,) = topic_factory("rewards_issued")
    group, ledger = _group(), Ledger(topic)
    no_rate_limits(simulators)
    simulators.braze.state.faults.update({"latency_ms": 2000})
    # a realistic member population: few members repeat within the buffered window, so batches
    # rarely wait for each other (see the member dependencies in worker/batching.py)
    await produce_numbered(kafka_bootstrap, ledger, count, members=count, padding=padding)
    env = worker_env(simulators, kafka_bootstrap, [topic], group, RELAY_MAX_BUFFERED_EVENTS="2000")
    worker = worker_factory(env)
    async with rss_sampler(worker.process.pid) as rss:
        await wait_delivered(simulators, ledger, 120, ["moengage"])
        moengage_done = time.time()
        braze_then = len(delivered_ids(simulators, "braze"))
        await wait_delivered(simulators, ledger, 60 + count / 100, ["braze"])
    braze_times = [at for at, _, _ in timed_arrivals(simulators, "braze")]
    rate = len(braze_times) / max(0.001, braze_times[-1] - braze_times[0])
    peak = max(rss) / MB
    print(f"slow braze: {rate:.0f} events/s, RSS first {rss[0] / MB:.0f} MB, peak {peak:.0f} MB, "
          f"backlog {count * (padding + 200) / MB:.0f} MB")  # fmt: skip
    # 16 concurrent requests of at most 75 events every 2 s: at most 600 events/s
    assert rate <= 16 * 75 / 2 * 1.25
    assert braze_then < count, "MoEngage should finish long before the slow Braze"
    assert moengage_done < braze_times[-1]
    assert peak < bound_mb, f"peak RSS {peak:.0f} MB"
    waiting = [line["waiting_items"] for line in log_events(worker, "partitions_paused")]
    assert waiting and max(waiting) <= 2000 + 2000  # the bound plus one fetch
    await _assert_clean_finish(kafka_bootstrap, simulators, ledger, worker, group)
