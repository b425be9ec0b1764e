"""Reading dead-letter topics: filters shared by `dlq inspect` and `replay`, and a bounded reader.

The reader assigns every partition of the selected ``.dlq`` topics (no group join), starts at a
group's committed position or at the beginning, and stops at the high watermark it saw first:
records appended while it runs (for instance a replay's own repeat failures) are left for the
next run. End offsets come from fetch responses (``highwater()``), which Tansu and Kafka both
report correctly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from worker.config import KafkaSettings
from worker.deadletter import DLQ_SUFFIX
from worker.kafka import make_consumer, start_with_retry

_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2026-11-20T10:00:00Z``) or relative to now (``30m``, ``2h``, ``7d``)."""
    match = _RELATIVE.match(value.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters to look at; every field set must match."""

    destination: str | None = None
    reason: str | None = None
    http_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_type: str | None = None
    member_id: str | None = None

    def matches(self, headers: Mapping[str, str], key: bytes | None) -> bool:
        checks = (
            (self.destination, headers.get("dlq.destination")),
            (self.reason, headers.get("dlq.reason")),
            (self.http_status, headers.get("dlq.http_status")),
            (self.event_type, headers.get("dlq.event_type")),
            (self.member_id, key.decode("utf-8", "replace") if key is not None else None),
        )
        if any(wanted is not None and actual != wanted for wanted, actual in checks):
            return False
        if self.since or self.until:
            failed = failed_at(headers)
            if failed is None:
                return False
            if self.since and failed < self.since:
                return False
            if self.until and failed > self.until:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if v is not None]
        return ",".join(parts) or "all"


def failed_at(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("dlq.failed_at")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def dlq_topics(topics: Iterable[str]) -> list[str]:
    """``loyalty.x`` or ``loyalty.x.dlq`` → ``loyalty.x.dlq``, de-duplicated, in order."""
    return list(dict.fromkeys(t if t.endswith(DLQ_SUFFIX) else t + DLQ_SUFFIX for t in topics))


@dataclass
class DlqRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def text_headers(self) -> dict[str, str]:
        return {k: v.decode("utf-8", "replace") for k, v in self.headers}


class DlqReader:
    """Reads selected dead-letter topics up to the end seen at start."""

    def __init__(
        self, kafka: KafkaSettings, topics: Sequence[str], group_id: str | None = None
    ) -> None:
        self.kafka = kafka
        self.topics = list(topics)
        self.group_id = group_id
        self.consumer: Any = make_consumer(kafka, group_id)
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.start_positions: dict[TopicPartition, int] = {}
        self.partitions: list[TopicPartition] = []

    async def start(self, *, from_beginning: bool) -> None:
        await start_with_retry(self.consumer, "dlq reader", self.kafka.unreachable_exit_seconds)
        client = self.consumer._client  # topic metadata for manual assignment
        for topic in self.topics:
            client.add_topic(topic)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await client.force_metadata_update()
            known = {t: self.consumer.partitions_for_topic(t) for t in self.topics}
            if all(known.values()):
                break
            await asyncio.sleep(0.2)
        self.partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        self.consumer.assign(self.partitions)
        if not self.partitions:
            return
        if from_beginning or self.group_id is None:
            await self.consumer.seek_to_beginning(*self.partitions)
        else:
            for tp in self.partitions:
                committed = await self.consumer.committed(tp)
                if committed is None:
                    await self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
        for tp in self.partitions:
            self.positions[tp] = await self.consumer.position(tp)
        self.start_positions = dict(self.positions)

    async def records(self, settle: float = 1.5) -> AsyncIterator[DlqRecord]:
        """Every record before the end seen at start, partition by partition in offset order."""
        quiet_since = time.monotonic()
        while self.partitions:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            for tp in self.partitions:
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    self.ends.setdefault(tp, highwater)
            got = False
            for tp, messages in batch.items():
                end = self.ends.get(tp)
                for message in messages:
                    if end is not None and message.offset >= end:
                        self.consumer.pause(tp)
                        break
                    got = True
                    self.positions[tp] = message.offset + 1
                    yield DlqRecord(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value,
                        list(message.headers or ()),
                    )
            if got:
                quiet_since = time.monotonic()
            if self._done() or time.monotonic() - quiet_since > settle:
                return

    @property
    def total(self) -> int | None:
        """Records between the start positions and the ends, once every end is known."""
        if len(self.ends) < len(self.partitions):
            return None
        return sum(max(0, end - self.start_positions.get(tp, 0)) for tp, end in self.ends.items())

    def _done(self) -> bool:
        for tp in self.partitions:
            end = self.ends.get(tp)
            if end is None or self.positions.get(tp, 0) < end:
                return False
        return True

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets and self.group_id is not None:
            await self.consumer.commit(dict(offsets))

    async def stop(self) -> None:
        await self.consumer.stop()
