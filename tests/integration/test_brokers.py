"""The broker fixture gives a working Kafka-protocol broker: produce, consume as a group, commit.

Offsets are checked the ways that work on every broker we test against: ``committed()`` from a
consumer of the group (Tansu cannot answer the admin's group-offsets call in a form aiokafka
decodes) and ``highwater()`` after a fetch (Tansu's ListOffsets "latest" is wrong once a
partition holds a multi-record batch, so ``end_offsets()`` is not trusted there).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.brokers import BrokerKind, TopicFactory

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _producer(bootstrap: str, **options: Any) -> Any:
    # Tansu has no idempotent producer (InitProducerId fails), so idempotence stays off.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **options
    )


def _consumer(bootstrap: str, *topics: str, group: str | None) -> Any:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _consume(consumer: Any, total: int, timeout: float = 60.0) -> list[Any]:
    """Fetch until ``total`` records arrived; fail with what did arrive after ``timeout``."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < total and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            received.extend(records)
    assert len(received) == total, f"received {len(received)} of {total} records"
    return received


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offsets, read by a fresh consumer of that group (not the admin)."""
    reader = _consumer(bootstrap, group=group)
    await reader.start()
    try:
        return {
            partition: await reader.committed(TopicPartition(topic, partition))
            for partition in range(PARTITIONS)
        }
    finally:
        await reader.stop()


async def test_keyed_records_over_six_partitions_are_consumed_committed_and_counted(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """A group reads every keyed record in key order; committed() and highwater() match."""
    [topic] = topic_factory(partitions=PARTITIONS)
    producer = _producer(kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=f"member-{n % 60}".encode(), value=str(n).encode())
            for n in range(600)
        ]
        produced = Counter([(await sent).partition for sent in sends])
    finally:
        await producer.stop()
    assert sorted(produced) == list(range(PARTITIONS)), "60 keys should reach all six partitions"

    group = f"test-group-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(kafka_bootstrap, topic, group=group)
    await consumer.start()
    try:
        received = await _consume(consumer, total=600)
        await consumer.commit()
        highwater = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()

    by_key: defaultdict[bytes, list[int]] = defaultdict(list)
    for record in received:
        by_key[record.key].append(int(record.value))
    assert all(values == sorted(values) for values in by_key.values()), "per-key order broken"
    assert Counter(record.partition for record in received) == produced
    assert highwater == dict(produced)
    assert await _committed(kafka_bootstrap, group, topic) == dict(produced)


async def test_highwater_is_right_after_multi_record_batches(
    kafka_bootstrap: str, topic_factory: TopicFactory, broker_kind: BrokerKind
) -> None:
    """After records written as 10-record batches, highwater() counts them (end_offsets may not).

    Partition p receives p + 1 batches. On Tansu, ListOffsets "latest" (``end_offsets()``,
    ``seek_to_end()``) is wrong for such partitions, so it is asserted only on Apache Kafka.
    """
    [topic] = topic_factory(partitions=PARTITIONS)
    expected = {partition: 10 * (partition + 1) for partition in range(PARTITIONS)}
    producer = _producer(kafka_bootstrap)
    await producer.start()
    try:
        for partition, count in expected.items():
            for first in range(0, count, 10):
                batch = producer.create_batch()
                for n in range(first, first + 10):
                    batch.append(key=b"k%d" % n, value=b"v%d" % n, timestamp=None)
                batch.close()
                await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()

    partitions = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
    consumer = _consumer(kafka_bootstrap, group=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        received = await _consume(consumer, total=sum(expected.values()))
        highwater = {tp.partition: consumer.highwater(tp) for tp in partitions}
        end_offsets = {
            tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()
        }
    finally:
        await consumer.stop()

    assert Counter(record.partition for record in received) == expected
    assert highwater == expected
    if broker_kind == "kafka":
        assert end_offsets == expected


async def test_topic_factory_topics_are_unique_and_have_the_requested_partitions(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Each call names new topics, and each topic has exactly the requested partition count."""
    first = topic_factory("rewards_issued", "enrollments", partitions=3)
    second = topic_factory("rewards_issued", partitions=2)
    assert len(set(first + second)) == 3
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(first + second)
    finally:
        await admin.close()
    counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert counts == {first[0]: 3, first[1]: 3, second[0]: 2}
