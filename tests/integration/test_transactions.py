"""Upstream transactions: with read_committed (the default) aborted events are never delivered.

Apache Kafka only (marker ``kafka_only``): Tansu has no transactions (InitProducerId fails).
The default ``pytest`` run deselects the marker; the Apache Kafka lane of ``.ci/run`` selects
it; and on any other broker each test fails on its first line instead of passing vacuously.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    DESTINATIONS,
    Ledger,
    Produced,
    arrivals,
    check_delivery,
    delivered_ids,
    event_id,
    no_tracebacks,
    reward,
    wait_delivered,
    worker_env,
)
from tests.support import committed_and_highwater

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

PER_TRANSACTION = 120
MEMBERS = 24  # every member has events in every transaction, so in each partition the
# aborted records sit between two committed runs


def _needs_apache_kafka(broker_kind: str) -> None:
    """Fail (never skip, never xfail) when the lane's broker cannot do transactions."""
    if broker_kind != "kafka":
        pytest.fail(
            f"transactions need Apache Kafka (RELAY_TEST_BROKER=kafka), not {broker_kind}: "
            "this file belongs to the Apache Kafka lane only",
            pytrace=False,
        )


async def _transaction(producer: AIOKafkaProducer, topic: str, first: int, commit: bool) -> Ledger:
    ledger = Ledger(topic)
    await producer.begin_transaction()
    futures = []
    for seq in range(first, first + PER_TRANSACTION):
        member = f"m-{seq % MEMBERS:02d}"
        futures.append(
            (seq, member, await producer.send(topic, reward(seq, member), key=member.encode()))
        )
    metas = await asyncio.gather(*(future for _, _, future in futures))
    if commit:
        await producer.commit_transaction()
    else:
        await producer.abort_transaction()
    ledger.events = [
        Produced(seq, event_id(seq), member, meta.partition, meta.offset, time.time())
        for (seq, member, _), meta in zip(futures, metas, strict=True)
    ]
    return ledger


async def _committed_aborted_committed(bootstrap: str, topic: str) -> tuple[Ledger, Ledger]:
    """Three transactions: commit, abort, commit. Returns (committed events, aborted events)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"relay-test-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        first = await _transaction(producer, topic, 0, commit=True)
        aborted = await _transaction(producer, topic, PER_TRANSACTION, commit=False)
        last = await _transaction(producer, topic, 2 * PER_TRANSACTION, commit=True)
    finally:
        await producer.stop()
    return Ledger(topic, first.events + last.events), aborted


@pytest.mark.parametrize(
    ("isolation", "aborted_arrive"),
    [("read_committed", False), ("read_uncommitted", True)],
    ids=["read_committed", "read_uncommitted"],
)
async def test_aborted_transactions_are_not_delivered(
    kafka_bootstrap: str,
    broker_kind: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    isolation: str,
    aborted_arrive: bool,
) -> None:
    """Commit, abort, commit: only the committed events arrive (read_uncommitted: all do)."""
    _needs_apache_kafka(broker_kind)
    (topic,) = topic_factory("txn", partitions=3)
    committed, aborted = await _committed_aborted_committed(kafka_bootstrap, topic)
    group = f"g-txn-{isolation}-{topic.split('.')[0]}"
    extra = {} if isolation == "read_committed" else {"KAFKA_ISOLATION_LEVEL": isolation}
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group, **extra))

    # every member's last committed events come after its aborted ones in the same partition,
    # so once they arrived, any aborted event the worker read has arrived too
    await wait_delivered(simulators, committed, timeout=120)
    if aborted_arrive:
        await wait_delivered(simulators, aborted, timeout=60)
    assert await worker.stop() == 0

    aborted_ids = {p.event_id for p in aborted.events}
    for destination in DESTINATIONS:
        got = delivered_ids(simulators, destination)
        if aborted_arrive:
            assert aborted_ids <= got, destination
            continue
        assert not got & aborted_ids, f"{destination} got aborted {sorted(got & aborted_ids)[:5]}"
        report = check_delivery(committed, arrivals(simulators, destination), destination)
        report.assert_ok()
        assert report.duplicates == 0
    no_tracebacks(worker)


async def test_transaction_markers_leave_no_lag(
    kafka_bootstrap: str,
    broker_kind: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
) -> None:
    """After the last committed transaction is delivered, commits reach the high watermark."""
    _needs_apache_kafka(broker_kind)
    (topic,) = topic_factory("txn-lag", partitions=3)
    committed, _ = await _committed_aborted_committed(kafka_bootstrap, topic)
    group = f"g-txn-lag-{topic.split('.')[0]}"
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))
    await wait_delivered(simulators, committed, timeout=120)
    await asyncio.sleep(3)  # several commit intervals
    assert await worker.stop() == 0
    for destination in DESTINATIONS:
        positions = await committed_and_highwater(
            kafka_bootstrap, f"{group}.{destination}", [topic]
        )
        behind = {tp: ch for tp, ch in positions.items() if ch[0] != ch[1]}
        assert not behind, f"{destination}: committed != high watermark {behind}"
