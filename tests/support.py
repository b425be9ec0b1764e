"""Helpers for integration tests: run the worker as an operator would, read topics back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
BASE_TOPICS = ("rewards_issued", "enrollments", "offers_issued", "audience_membership")


def unique_topics(prefix: str = "t") -> tuple[str, ...]:
    run = uuid.uuid4().hex[:8]
    return tuple(f"{prefix}-{run}.{name}" for name in BASE_TOPICS)


def topic_for(topics: tuple[str, ...], event_type: str) -> str:
    index = {
        "rewards_issued": 0,
        "member_enrolled": 1,
        "offer_issued": 2,
        "audience_membership_changed": 3,
    }[event_type]
    return topics[index]


def event(
    event_type: str,
    member: str,
    event_id: str,
    data: Mapping[str, Any],
    occurred_at: str = "2026-11-20T10:00:00Z",
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": occurred_at,
        "source": "kognitiv",
        "member_id": member,
        "data": dict(data),
    }


async def produce(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    max_request_size: int = 1_048_576,
) -> dict[tuple[str, int], int]:
    """Produce (topic, key, value) records in order; return end offsets per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_request_size=max_request_size
    )
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    try:
        futures = [
            await producer.send(topic, value=value, key=key) for topic, key, value in records
        ]
        for future in futures:
            meta = await future
            ends[(meta.topic, meta.partition)] = max(
                ends.get((meta.topic, meta.partition), 0), meta.offset + 1
            )
    finally:
        await producer.stop()
    return ends


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions, refreshing metadata until the broker knows it (5 s at most)."""
    consumer._client.add_topic(topic)
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return set()


@dataclass
class DeadLetterRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    raw_headers: list[tuple[str, bytes]]


async def read_all(bootstrap: str, topic: str, *, settle: float = 1.0) -> list[DeadLetterRecord]:
    """Every record currently in ``topic`` (reads until ``settle`` seconds bring nothing new)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[DeadLetterRecord] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    raw = list(r.headers or [])
                    out.append(
                        DeadLetterRecord(
                            r.topic,
                            r.key,
                            r.value,
                            {k: (v or b"").decode("utf-8", "replace") for k, v in raw},
                            raw,
                        )
                    )
                quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


async def committed_and_highwater(
    bootstrap: str, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(committed offset of ``group``, high watermark) per partition of ``topics``.

    The high watermark comes from a fetch response (``highwater()``), which is right on Tansu
    and Kafka alike; ListOffsets ("latest") is not on Tansu.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = []
        for topic in topics:
            parts = await partitions_of(consumer, topic)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        result: dict[tuple[str, int], tuple[int | None, int]] = {}
        deadline = time.monotonic() + 10
        while len(result) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None and (tp.topic, tp.partition) not in result:
                    result[(tp.topic, tp.partition)] = (await consumer.committed(tp), highwater)
        return result
    finally:
        await consumer.stop()


class WorkerProcess:
    """`python -m worker run` in a subprocess, configured only by environment variables."""

    def __init__(self, env: Mapping[str, str], log_path: Path, args: Iterable[str] = ()) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "MOENGAGE_"))
        }
        full_env.update({"METRICS_PORT": "0", "LOG_LEVEL": "info", **env})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", *args],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait without blocking the event loop (in-process simulators keep serving)."""
        return await asyncio.to_thread(self.terminate, timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return lines


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
