"""An in-memory :class:`~worker.consume.consumer.Consumer` for tests: partitions are lists.

It behaves like aiokafka where the pipeline's guarantees depend on it: ``getmany`` advances
each partition's position as it drains it, and a batch it cannot read (``unreadable``) raises
*after* the partitions drained earlier in the same call have moved on, so a caller that does
not rewind loses their records.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """The fields of an aiokafka ConsumerRecord the worker reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = 0


class UnreadableBatch(Exception):
    """What the client raises for a batch it cannot decode (a missing codec, a bad CRC)."""


class MemoryConsumer:
    def __init__(self, partitions: Mapping[TopicPartition, Sequence[bytes]]) -> None:
        self.log: dict[TopicPartition, list[MemoryRecord]] = {
            tp: [
                MemoryRecord(tp.topic, tp.partition, offset, None, value)
                for offset, value in enumerate(values)
            ]
            for tp, values in partitions.items()
        }
        self.positions: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.unreadable: dict[TopicPartition, int] = {}  # partition → offset that fails
        self._paused: set[TopicPartition] = set()
        self._listener: Any = None

    def subscribe(self, topics: Sequence[str], *, listener: Any) -> None:
        self._listener = listener

    async def start(self) -> None:
        self.positions = dict.fromkeys(self.log, 0)
        if self._listener is not None:
            await self._listener.on_partitions_assigned(list(self.log))

    async def stop(self) -> None:
        return None

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]:
        room = max_records if max_records is not None else 1 << 30
        out: dict[TopicPartition, list[MemoryRecord]] = {}
        for tp in sorted(partitions or self.positions):
            if tp in self._paused or room <= 0:
                continue
            start = self.positions[tp]
            end = min(len(self.log[tp]), start + room)
            bad = self.unreadable.get(tp)
            if bad is not None and start <= bad < end:
                raise UnreadableBatch(f"cannot read the batch at {tp.topic}:{tp.partition}@{bad}")
            if end > start:
                out[tp] = self.log[tp][start:end]
                self.positions[tp] = end
                room -= end - start
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> Collection[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> Collection[TopicPartition]:
        return set(self.positions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.committed_offsets.update(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.log[partition])

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    async def topics(self) -> Collection[str]:
        return {tp.topic for tp in self.log}
