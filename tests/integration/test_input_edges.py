"""What real producers send: schema-valid edge values, odd headers and keys, unreadable batches.

Each test mixes the odd records into normal traffic and checks the worker's promises: the
process never ends, the good events around the odd ones are delivered, every record ends up
delivered or dead-lettered with a reason, and nothing is committed past a record that was not
handled.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    Ledger,
    arrivals,
    check_delivery,
    committed,
    dead_letters,
    log_events,
    produce_numbered,
    wait_committed_to_end,
    wait_delivered,
    worker_env,
)
from tests.support import REPO, WorkerProcess, event, produce, read_all, wait_for

pytestmark = pytest.mark.integration

REWARD = {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z", "points": 10}


_DEEP = "__deep__"


def _nested(depth: int) -> str:
    """A marker replaced by JSON ``depth`` objects deep (deeper than orjson encodes)."""
    return f"{_DEEP}{depth}"


def _encode(body: dict[str, Any]) -> bytes:
    encoded = orjson.dumps(body)
    for depth in (300, 900):
        nested = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
        encoded = encoded.replace(f'"{_DEEP}{depth}"'.encode(), nested.encode())
    return encoded


def _edge_events() -> list[tuple[str, dict[str, Any]]]:
    """(case, event) pairs that pass or nearly pass the schemas and used to end the process."""
    reward = event("rewards_issued", "m-edge", "edge", REWARD)
    offer = event("offer_issued", "m-edge", "edge", {"offer_id": "o-1", "braze_campaign_id": "c-1"})
    return [
        ("extra-300-deep", {**reward, "data": {**REWARD, "extra": _nested(300)}}),
        (
            "custom-data-900-deep",
            {**offer, "data": {**offer["data"], "campaign": {"custom_data": _nested(900)}}},
        ),
        ("year-1-plus-one", {**reward, "occurred_at": "0001-01-01T00:00:00+01:00"}),
        ("year-9999-minus-one", {**reward, "occurred_at": "9999-12-31T23:59:59-01:00"}),
        ("unicode-member", {**reward, "member_id": "m-ü-漢字-🎉"}),
        ("dot-member", {**reward, "member_id": "."}),
        ("dotdot-member", {**reward, "member_id": ".."}),
    ]


async def test_schema_valid_edge_events_never_end_the_process(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any
) -> None:
    """Deep nesting, extreme dates, odd ids and headers between good events: all accounted for."""
    (topic,) = topic_factory("rewards", partitions=3)
    group = f"g-{topic}"
    ledger = Ledger(topic)
    await produce_numbered(kafka_bootstrap, ledger, 60, members=20)
    edges = _edge_events()
    where: dict[tuple[int, int], str] = {}  # (partition, offset) → event_id of an odd record
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for case, body in edges:
            body = {**body, "event_id": f"edge-{case}"}
            meta = await producer.send_and_wait(
                topic, _encode(body), key=str(body["member_id"]).encode()
            )
            where[(meta.partition, meta.offset)] = body["event_id"]
        good = event("rewards_issued", "m-hdr", "edge-headers", REWARD)
        # a null header value, a non-UTF-8 header value, and a stray dlq.original_topic on a
        # live record (not trusted: only records sent back by `replay` steer their dead letter)
        await producer.send_and_wait(
            topic,
            orjson.dumps(good),
            key=b"m-hdr",
            headers=[("trace", None), ("bin", b"\xff\xfe"), ("dlq.original_topic", b"\xff")],
        )
        # a key that is not the member_id: delivered, counted, logged once per partition
        await producer.send_and_wait(
            topic,
            orjson.dumps(event("rewards_issued", "m-key", "edge-key", REWARD)),
            key=b"not-the-member",
        )
    finally:
        await producer.stop()
    await produce_numbered(kafka_bootstrap, ledger, 60, members=20)

    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))
    await wait_delivered(simulators, ledger, 90)
    await wait_for(
        lambda: {"edge-headers", "edge-key"} <= {eid for _, eid in arrivals(simulators, "braze")},
        60,
        "the odd-header and odd-key events at Braze",
    )
    # every edge event ends delivered or dead-lettered, per destination, and the worker lives
    edge_ids = {f"edge-{case}" for case, _ in edges}

    async def accounted() -> bool:
        letters = await dead_letters(kafka_bootstrap, topic)
        for destination in ("braze", "moengage"):
            done = {eid for _, eid in arrivals(simulators, destination)} | {
                where.get(
                    (
                        int(d.headers["dlq.original_partition"]),
                        int(d.headers["dlq.original_offset"]),
                    ),
                    "",
                )
                for d in letters
                if d.headers["dlq.destination"] in (destination, "*")
            }
            if not edge_ids <= done:
                return False
        return True

    await wait_for(accounted, 60, "every edge event delivered or dead-lettered", interval=1.0)
    assert worker.process.poll() is None, worker.logs()[-3000:]
    await wait_committed_to_end(kafka_bootstrap, group, [topic])

    letters = await dead_letters(kafka_bootstrap, topic)
    reasons = {
        where[(int(d.headers["dlq.original_partition"]), int(d.headers["dlq.original_offset"]))]: (
            d.headers["dlq.reason"]
        )
        for d in letters
    }
    assert reasons["edge-extra-300-deep"] == "schema_violation"
    assert reasons["edge-custom-data-900-deep"] == "schema_violation"
    for letter in letters:
        assert letter.topic == topic + ".dlq"  # the stray header steered nothing
        assert letter.headers["dlq.reason"] != "internal_error", letter.headers
    for destination in ("braze", "moengage"):
        numbered = [(m, e) for m, e in arrivals(simulators, destination) if e.startswith("e-")]
        check_delivery(ledger, numbered, destination).assert_ok()
    assert log_events(worker, "key_is_not_member_id"), "a mismatched key is logged"
    assert await worker.stop() == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.json()


async def _metric(port: int, name: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return [line for line in text.splitlines() if line.startswith(name)]


async def _produce_compressed(
    bootstrap: str, topic: str, ledger: Ledger, codec: str | None, partition: int, count: int
) -> None:
    """``count`` numbered events into one partition, in multi-record batches of ``codec``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=codec,
        linger_ms=20,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        start = len(ledger.events)
        futures = []
        for seq in range(start, start + count):
            member = f"m-{partition}-{seq % 5}"
            body = event("rewards_issued", member, f"e-{seq:08d}", REWARD)
            futures.append(
                (
                    seq,
                    member,
                    await producer.send(
                        topic, orjson.dumps(body), key=member.encode(), partition=partition
                    ),
                )
            )
        from tests.integration.harness import Produced

        for seq, member, future in futures:
            meta = await future
            ledger.events.append(
                Produced(seq, f"e-{seq:08d}", member, meta.partition, meta.offset, 0.0)
            )
    finally:
        await producer.stop()


async def test_a_partition_the_client_cannot_read_is_reported_and_nothing_is_skipped(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, tmp_path: Path
) -> None:
    """lz4 batches with the codec missing: the other partitions flow, nothing is committed past
    the unread records, /readyz and a metric name the partition, and a worker that has the codec
    delivers the rest, each event once."""
    (topic,) = topic_factory("rewards", partitions=3)
    group = f"g-{topic}"
    ledger = Ledger(topic)
    # interleaved so one fetch drains good partitions before it reaches the unreadable one
    for _ in range(3):
        await _produce_compressed(kafka_bootstrap, topic, ledger, "gzip", 0, 40)
        await _produce_compressed(kafka_bootstrap, topic, ledger, "lz4", 1, 40)
        await _produce_compressed(kafka_bootstrap, topic, ledger, None, 2, 40)
    lz4_offsets = sorted(p.offset for p in ledger.events if p.partition == 1)

    # the extras missing, as in an image built without them: cramjam cannot be imported
    blocker = tmp_path / "no_codecs"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['cramjam'] = None\n")
    port = _free_port()
    env = worker_env(
        simulators,
        kafka_bootstrap,
        [topic],
        group,
        PYTHONPATH=f"{blocker}:{REPO}",
        METRICS_PORT=str(port),
        RELAY_UNREADABLE_PARTITION_SECONDS="3",
    )
    first = WorkerProcess(env, tmp_path / "without-codecs.log")
    try:
        readable = Ledger(topic, [p for p in ledger.events if p.partition != 1])
        await wait_delivered(simulators, readable, 90)
        await wait_for(
            lambda: bool(log_events(first, "partition_unreadable")), 60, "partition_unreadable"
        )
        status, body = await _readyz(port)
        assert status == 503 and f"{topic}:1" in body["reason"], body
        gauge = await _metric(port, "relay_unreadable_partitions{")
        assert any('partition="1"' in line and line.endswith(" 1.0") for line in gauge), gauge
        positions = await committed(kafka_bootstrap, group, topic)
        for destination, by_partition in positions.items():
            assert by_partition.get(1, 0) <= lz4_offsets[0], (destination, by_partition)
        assert not {p.event_id for p in ledger.events if p.partition == 1} & {
            eid for _, eid in arrivals(simulators, "braze")
        }
        assert await first.stop() == 0
    finally:
        first.kill()

    second = WorkerProcess(
        worker_env(simulators, kafka_bootstrap, [topic], group), tmp_path / "with-codecs.log"
    )
    try:
        await wait_delivered(simulators, ledger, 90)
        await wait_committed_to_end(kafka_bootstrap, group, [topic])
        for destination in ("braze", "moengage"):
            report = check_delivery(ledger, arrivals(simulators, destination), destination)
            report.assert_ok()
            assert report.duplicates == 0, (destination, report.duplicates)
        assert await dead_letters(kafka_bootstrap, topic) == []
        assert await second.stop() == 0
    finally:
        second.kill()


async def test_an_oversized_input_is_dead_lettered_as_a_stub_on_every_broker(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A 2 MB value (too_large) becomes a stub dead letter that fits under the broker's limit."""
    from worker.devtools.embedded_broker import ensure_topics

    topic = f"big-{id(simulators)}.rewards"
    # Apache Kafka refuses a 2 MB record unless the topic allows it; the .dlq twin keeps the
    # broker's default limit (1 MB), so only a stub fits there
    await ensure_topics(kafka_bootstrap, [topic], 1, configs={"max.message.bytes": "4194304"})
    big = event("rewards_issued", "m-big", "big", {**REWARD, "note": "x" * 2_000_000})
    good = event("rewards_issued", "m-ok", "ok", REWARD)
    await produce(
        kafka_bootstrap,
        [
            (topic, b"m-big", orjson.dumps(big)),
            (topic, b"m-ok", orjson.dumps(good)),
        ],
        max_request_size=8 * 1024 * 1024,
    )
    group = f"g-{topic}"
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, [topic], group))
    await wait_for(lambda: "ok" in {e for _, e in arrivals(simulators, "braze")}, 60, "good event")

    letters: list[Any] = []

    async def one_letter() -> bool:
        nonlocal letters
        letters = await read_all(kafka_bootstrap, topic + ".dlq", settle=0.5)
        return bool(letters)

    await wait_for(one_letter, 60, "the stub dead letter")
    (letter,) = letters
    assert letter.headers["dlq.reason"] == "too_large"
    assert letter.headers["dlq.truncated"] == "true"
    assert letter.headers["dlq.original_value_bytes"] == str(len(orjson.dumps(big)))
    assert letter.headers["dlq.original_offset"] == "0"
    assert letter.value is not None and len(letter.value) == 64 * 1024
    assert letter.key == b"m-big"
    await wait_committed_to_end(kafka_bootstrap, group, [topic])
    assert await worker.stop() == 0


async def test_a_dead_letter_the_broker_refuses_falls_back_to_a_stub_and_then_halts(
    kafka_bootstrap: str, broker_kind: str, simulators: Any, worker_factory: Any
) -> None:
    """A .dlq topic whose size limit refuses the full dead letter gets a stub; if it refuses the
    stub too, the destination halts with /readyz naming why, and resumes once it fits."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from worker.devtools.embedded_broker import ensure_topics

    topic = f"refuse-{id(worker_factory)}.rewards"
    await ensure_topics(kafka_bootstrap, [topic], 1)
    # Tansu does not enforce max.message.bytes; Apache Kafka does
    await ensure_topics(
        kafka_bootstrap, [topic + ".dlq"], 1, configs={"max.message.bytes": "20000"}
    )
    poison = b'{"event_id": "p", "junk": "' + b"y" * 200_000  # not JSON: invalid_json
    await produce(kafka_bootstrap, [(topic, b"m-p", poison)])
    port = _free_port()
    env = worker_env(
        simulators,
        kafka_bootstrap,
        [topic],
        f"g-{topic}",
        METRICS_PORT=str(port),
        RELAY_DEAD_LETTER_STUB_BYTES="8192",
    )
    worker = worker_factory(env)
    letters: list[Any] = []

    async def one_letter() -> bool:
        nonlocal letters
        letters = await read_all(kafka_bootstrap, topic + ".dlq", settle=0.5)
        return bool(letters)

    await wait_for(one_letter, 90, "the dead letter")
    (letter,) = letters
    assert letter.headers["dlq.reason"] == "invalid_json"
    if broker_kind == "tansu":
        assert letter.value == poison and "dlq.truncated" not in letter.headers
    else:
        assert letter.headers["dlq.truncated"] == "true"
        assert letter.value == poison[:8192]
        assert log_events(worker, "dead_letter_refused")
    await wait_committed_to_end(kafka_bootstrap, f"g-{topic}", [topic])

    if broker_kind == "tansu":
        assert await worker.stop() == 0
        return
    # now a limit even the stub cannot meet: the destination halts instead of wedging silently
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic + ".dlq", {"max.message.bytes": "300"}
        )
        await admin.alter_configs([resource])
        await produce(kafka_bootstrap, [(topic, b"m-q", poison)])
        await wait_for(lambda: bool(log_events(worker, "destination_halted")), 120, "halt")
        status, body = await _readyz(port)
        assert status == 503 and "halted" in body["reason"], body
        assert any(
            line.endswith(" 1.0") for line in await _metric(port, "relay_destination_halted{")
        )
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic + ".dlq", {"max.message.bytes": "1048588"}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()
    await wait_for(lambda: bool(log_events(worker, "destination_resumed")), 120, "resume")
    await wait_committed_to_end(kafka_bootstrap, f"g-{topic}", [topic])
    assert await worker.stop() == 0
