"""Memory is bounded in bytes: a backlog of 0.9 MB events stays inside the pod's limit.

``deploy/kubernetes`` gives a worker pod 384 MiB. The worker holds at most
``RELAY_MAX_BUFFERED_BYTES`` of consumed, uncommitted records per destination, its shared
decoder keeps no entry over 64 KiB, an item keeps only its record's bytes and event identity
(not the decoded event, which can weigh twenty times its bytes), and the client's prefetch is
bounded by the fetch sizes. Braze answers 503 for the first part of the test, so the backlog
waits inside the worker as it would in an outage, then everything is delivered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    Ledger,
    Produced,
    arrivals,
    check_delivery,
    rss_sampler,
    wait_committed_to_end,
    wait_delivered,
    worker_env,
)
from tests.support import event

pytestmark = pytest.mark.integration

POD_LIMIT = 384 * 1024 * 1024
EVENTS = 120
REWARD = {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z", "points": 10}


def _heavy(seq: int, member: str) -> bytes:
    """A schema-valid event of about 0.9 MB: a long string, or (worse once decoded) many small
    objects in an extra field."""
    data: dict[str, Any] = dict(REWARD)
    if seq % 2:
        data["note"] = "x" * 900_000
    else:
        data["extra"] = [{"i": i} for i in range(75_000)]
    value = orjson.dumps(event("rewards_issued", member, f"e-{seq:08d}", data))
    assert 850_000 < len(value) < 1_000_000, len(value)  # under the 1 MB event limit
    return value


async def test_a_backlog_of_large_events_stays_inside_the_pod_memory_limit(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any
) -> None:
    (topic,) = topic_factory("heavy", partitions=3)
    ledger = Ledger(topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        max_request_size=4 * 1024 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        for seq in range(EVENTS):
            member = f"m-{seq % 30:02d}"
            meta = await producer.send_and_wait(topic, _heavy(seq, member), key=member.encode())
            ledger.events.append(
                Produced(seq, f"e-{seq:08d}", member, meta.partition, meta.offset, 0.0)
            )
    finally:
        await producer.stop()

    simulators.braze.state.faults.update({"status": 503, "status_probability": 1.0})
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], f"g-{topic}"))
    async with rss_sampler(worker.process.pid) as samples:
        await asyncio.sleep(20)  # the backlog piles up against the outage
        simulators.braze.state.faults.update({"clear": True})
        await wait_delivered(simulators, ledger, 180, destinations=("braze",))
        # MoEngage refuses bodies this large (413): those become dead letters; either way
        # every record is accounted for once both groups commit to the end
        await wait_committed_to_end(kafka_bootstrap, f"g-{topic}", [topic])
    peak = max(samples)
    print(f"worker peak RSS with {EVENTS} events of 0.9 MB waiting: {peak / 2**20:.0f} MiB")
    assert peak < POD_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
    check_delivery(ledger, arrivals(simulators, "braze"), "braze").assert_ok()
    assert await worker.stop() == 0
