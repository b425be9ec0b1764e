"""Compressed input: batches in every codec Kafka defines are consumed, delivered once, committed.

Each codec gets its own partition and its own members, and its records are sent without
waiting for each one (``linger``), so the broker stores multi-record compressed batches. Two
producers write them: aiokafka (Python, cramjam codecs) and librdkafka (``confluent-kafka``,
the C client behind most non-Java producers).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    DESTINATIONS,
    Ledger,
    Produced,
    arrivals,
    assert_committed_to_end,
    check_delivery,
    event_id,
    log_events,
    no_tracebacks,
    reward,
    wait_delivered,
    worker_env,
)

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 250
MEMBERS_PER_CODEC = 25


def _plan(codec_index: int) -> list[tuple[int, str]]:
    """(seq, member) of one codec's records; sequence numbers are disjoint across codecs."""
    codec = CODECS[codec_index]
    first = codec_index * PER_CODEC
    return [
        (seq, f"m-{codec}-{seq % MEMBERS_PER_CODEC:02d}") for seq in range(first, first + PER_CODEC)
    ]


async def _with_aiokafka(bootstrap: str, topic: str, partition: int, codec: str) -> list[Produced]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=codec,
        linger_ms=100,
    )
    await producer.start()
    try:
        plan = _plan(partition)
        futures = [
            await producer.send(
                topic, reward(seq, member), key=member.encode(), partition=partition
            )
            for seq, member in plan
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Produced(seq, event_id(seq), member, meta.partition, meta.offset, time.time())
        for (seq, member), meta in zip(plan, metas, strict=True)
    ]


def _with_librdkafka(bootstrap: str, topic: str, partition: int, codec: str) -> list[Produced]:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "compression.codec": codec,
            "linger.ms": 100,
        }
    )
    plan = _plan(partition)
    reports: dict[int, tuple[int, int]] = {}
    failures: list[str] = []

    def delivered(seq: int) -> Any:
        def report(error: Any, message: Any) -> None:
            if error is not None:
                failures.append(f"{seq}: {error}")
            else:
                reports[seq] = (message.partition(), message.offset())

        return report

    for seq, member in plan:
        producer.produce(
            topic,
            value=reward(seq, member),
            key=member.encode(),
            partition=partition,
            on_delivery=delivered(seq),
        )
    left = producer.flush(60)
    assert left == 0 and not failures, f"{codec}: {left} unsent, failures {failures[:3]}"
    return [
        Produced(seq, event_id(seq), member, *reports[seq], time.time()) for seq, member in plan
    ]


async def _committed_to_end_soon(
    bootstrap: str, group: str, topic: str, within: float = 30
) -> None:
    """The last deliveries' commit follows within a few commit intervals."""
    deadline = time.monotonic() + within
    while True:
        try:
            await assert_committed_to_end(bootstrap, group, [topic])
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
        else:
            return


@pytest.mark.parametrize("client", ["aiokafka", "librdkafka"])
async def test_every_codec_is_consumed_delivered_once_and_committed(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any, client: str
) -> None:
    """gzip, snappy, lz4 and zstd batches (one codec per partition) all reach Braze and MoEngage."""
    (topic,) = topic_factory("codecs", partitions=len(CODECS))
    ledger = Ledger(topic)
    for partition, codec in enumerate(CODECS):
        if client == "aiokafka":
            produced = await _with_aiokafka(kafka_bootstrap, topic, partition, codec)
        else:
            produced = await asyncio.to_thread(
                _with_librdkafka, kafka_bootstrap, topic, partition, codec
            )
        assert {p.partition for p in produced} == {partition}
        ledger.events.extend(produced)
    group = f"g-codecs-{client}-{topic.split('.')[0]}"
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))

    await wait_delivered(simulators, ledger, timeout=120)
    await _committed_to_end_soon(kafka_bootstrap, group, topic)
    assert await worker.stop() == 0

    for destination in DESTINATIONS:
        report = check_delivery(ledger, arrivals(simulators, destination), destination)
        report.assert_ok()
        assert report.unique == len(CODECS) * PER_CODEC
        assert report.duplicates == 0, f"{destination}: {report.duplicates} duplicates"
    assert not log_events(worker, "fetch_failed"), "a compressed batch could not be fetched"
    no_tracebacks(worker)
