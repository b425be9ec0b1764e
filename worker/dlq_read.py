"""Reading dead-letter topics: filters shared by `dlq inspect` and `replay`, and a bounded reader.

The reader assigns partitions directly (no group join), starts at given offsets or at the
beginning, and reads up to the high watermark it saw first: records appended while it runs (for
instance a replay's own repeat failures) are left for the next run. End offsets come from fetch
responses (``highwater()``), which Tansu and Kafka both report correctly. A partition that stops
short of that end raises ``ReadIncomplete``: a partial read never passes for a complete one.
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


@dataclass(frozen=True, slots=True, order=True)
class Coordinates:
    """Where a record sits: ``topic/partition/offset`` identifies one dead letter for good."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str | bytes | None) -> Coordinates | None:
        if text is None:
            return None
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        topic, _, rest = raw.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        try:
            return cls(topic, int(partition), int(rest)) if topic else None
        except ValueError:
            return None


@dataclass
class DlqRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def coordinates(self) -> Coordinates:
        return Coordinates(self.topic, self.partition, self.offset)

    @property
    def text_headers(self) -> dict[str, str]:
        """Header values as text; a null value reads as the empty string."""
        return {k: (v or b"").decode("utf-8", "replace") for k, v in self.headers}


class ReadIncomplete(Exception):
    """A partition could not be read up to the end offset seen when reading started."""

    def __init__(self, behind: Mapping[TopicPartition, tuple[int, int | None]]) -> None:
        self.behind = dict(behind)
        parts = ", ".join(
            f"{tp.topic}[{tp.partition}] at {position} of {'?' if end is None else end}"
            for tp, (position, end) in sorted(self.behind.items())
        )
        super().__init__(f"could not read to the end of {parts}")


class PartitionReader:
    """Reads partitions from given offsets up to the end each had when reading started.

    The end of a partition is the high watermark of the first fetch response for it
    (``highwater()``): right on Tansu and Kafka alike, where ListOffsets is not. Records
    appended later are left for the next run. If a partition makes no progress towards its end
    for ``stall_seconds``, ``records()`` raises ``ReadIncomplete`` instead of returning short.
    """

    def __init__(self, kafka: KafkaSettings, stall_seconds: float = 30.0) -> None:
        self.kafka = kafka
        self.stall_seconds = stall_seconds
        self.consumer: Any = make_consumer(kafka, None)
        self.partitions: list[TopicPartition] = []
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.start_positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await start_with_retry(self.consumer, "topic reader", self.kafka.unreachable_exit_seconds)

    async def partitions_of(
        self, topics: Sequence[str], wait: float = 10.0
    ) -> list[TopicPartition]:
        """Every partition of ``topics`` the broker knows (topics it does not know are left out)."""
        client = self.consumer._client  # topic metadata for manual assignment
        for topic in topics:
            client.add_topic(topic)
        deadline = time.monotonic() + wait
        while True:
            await client.force_metadata_update()
            known = {t: self.consumer.partitions_for_topic(t) for t in topics}
            if all(known.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        return [TopicPartition(t, p) for t in topics for p in sorted(known[t] or ())]

    async def assign(self, starts: Mapping[TopicPartition, int | None]) -> None:
        """Read these partitions, each from its offset (``None``: from the beginning)."""
        self.partitions = sorted(starts)
        self.consumer.assign(self.partitions)
        for tp, offset in starts.items():
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)  # before the log start: reset to the earliest
        for tp in self.partitions:
            self.positions[tp] = await self.consumer.position(tp)
        self.start_positions = dict(self.positions)

    async def records(self) -> AsyncIterator[DlqRecord]:
        """Every record before the end seen at start, per partition in offset order."""
        progress_at = time.monotonic()
        while not self._done():
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            for tp in self.partitions:
                if tp not in self.ends:
                    highwater = self.consumer.highwater(tp)
                    if highwater is not None:
                        self.ends[tp] = highwater
                        progress_at = time.monotonic()
            for tp, messages in batch.items():
                end = self.ends.get(tp)
                for message in messages:
                    if end is not None and message.offset >= end:
                        break
                    self.positions[tp] = message.offset + 1
                    progress_at = time.monotonic()
                    yield DlqRecord(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value,
                        list(message.headers or ()),
                    )
            for tp in self.partitions:
                if tp in self.ends and self.positions.get(tp, 0) < self.ends[tp]:
                    # control records (transactions) advance the position without a record
                    position = await self.consumer.position(tp)
                    if position > self.positions.get(tp, 0):
                        self.positions[tp] = position
                        progress_at = time.monotonic()
                if self._partition_done(tp) and tp not in self.consumer.paused():
                    self.consumer.pause(tp)
            if time.monotonic() - progress_at > self.stall_seconds:
                raise ReadIncomplete(
                    {
                        tp: (self.positions.get(tp, 0), self.ends.get(tp))
                        for tp in self.partitions
                        if not self._partition_done(tp)
                    }
                )

    def extend(self, tp: TopicPartition, end: int) -> None:
        """Read ``tp`` further, up to ``end`` (for a log this process itself appends to)."""
        self.ends[tp] = max(self.ends.get(tp, 0), end)
        self.consumer.resume(tp)

    @property
    def total(self) -> int | None:
        """Records between the start positions and the ends, once every end is known."""
        if len(self.ends) < len(self.partitions):
            return None
        return sum(max(0, end - self.start_positions.get(tp, 0)) for tp, end in self.ends.items())

    def _partition_done(self, tp: TopicPartition) -> bool:
        end = self.ends.get(tp)
        return end is not None and self.positions.get(tp, 0) >= end

    def _done(self) -> bool:
        return all(self._partition_done(tp) for tp in self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()


class DlqReader(PartitionReader):
    """Every partition of the selected dead-letter topics, from the beginning to the end."""

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str]) -> None:
        super().__init__(kafka)
        self.topics = list(topics)

    async def start(self) -> None:
        await super().start()
        partitions = await self.partitions_of(self.topics)
        await self.assign(dict.fromkeys(partitions))
