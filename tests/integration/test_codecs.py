"""Compressed input: batches in every codec Kafka defines are consumed, delivered once, committed.

Each codec gets its own partition and its own members, and its records are sent without
waiting for each one (``linger``), so the broker stores multi-record compressed batches. Three
producers write them: aiokafka (Python, cramjam codecs), librdkafka (``confluent-kafka``, the C
client behind most non-Java producers) and, on the Apache Kafka lane, the Java client itself
(``kafka-clients`` from the jars that lane assembles; ``java/CodecProducer.java``).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
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


def _with_java(
    bootstrap: str, topic: str, partition: int, codec: str, classes: Path
) -> list[Produced]:
    from worker.devtools.embedded_broker import assemble_kafka

    classpath = f"{assemble_kafka()}/*:{classes}"
    source = Path(__file__).parent / "java" / "CodecProducer.java"
    if not (classes / "CodecProducer.class").is_file():
        subprocess.run(
            ["javac", "-cp", classpath, "-d", str(classes), str(source)], check=True, timeout=120
        )
    plan = _plan(partition)
    lines = "".join(f"{seq}\t{member}\t{reward(seq, member).decode()}\n" for seq, member in plan)
    done = subprocess.run(
        ["java", "-cp", classpath, "CodecProducer", bootstrap, topic, str(partition), codec],
        input=lines.encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    acknowledged = {}
    for line in done.stdout.decode().splitlines():
        seq, got_partition, offset = line.split("\t")
        acknowledged[int(seq)] = (int(got_partition), int(offset))
    assert len(acknowledged) == len(plan), done.stderr.decode()[-2000:]
    return [
        Produced(seq, event_id(seq), member, *acknowledged[seq], time.time())
        for seq, member in plan
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


@pytest.mark.parametrize(
    "client",
    ["aiokafka", "librdkafka", pytest.param("java", marks=pytest.mark.kafka_only)],
)
async def test_every_codec_is_consumed_delivered_once_and_committed(
    kafka_bootstrap: str,
    broker_kind: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    client: str,
    tmp_path: Path,
) -> None:
    """gzip, snappy, lz4 and zstd batches (one codec per partition) all reach Braze and MoEngage."""
    if client == "java" and broker_kind != "kafka":
        pytest.fail("the Java client variant belongs to the Apache Kafka lane", pytrace=False)
    (topic,) = topic_factory("codecs", partitions=len(CODECS))
    ledger = Ledger(topic)
    for partition, codec in enumerate(CODECS):
        if client == "aiokafka":
            produced = await _with_aiokafka(kafka_bootstrap, topic, partition, codec)
        elif client == "java":
            produced = await asyncio.to_thread(
                _with_java, kafka_bootstrap, topic, partition, codec, tmp_path
            )
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
