"""An in-memory :class:`~worker.consume.consumer.Consumer` for tests: partitions are lists.

It behaves like aiokafka where the pipeline's guarantees depend on it: ``getmany`` advances
each partition's position as it drains it, and a batch it cannot read (``unreadable``) raises
*after* the partitions drained earlier in the same call have moved on, so a caller that does
not rewind loses their records.

Several consumers can share one :class:`MemoryLog` (the partitions and the group's committed
offsets), as replicas of one consumer group do. The group's coordinator is the test: it moves
partitions between members with :meth:`MemoryConsumer.revoke` and :meth:`MemoryConsumer.assign`
(eager, as aiokafka rebalances: every member gives up everything, then gets its new share), and
a member "crashes" with :meth:`MemoryConsumer.crash`: from then on it fetches nothing and its
commits are refused, as the group refuses a member that is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError


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


class MemoryLog:
    """Partitions (lists of records) and one consumer group's committed offsets.

    ``on_commit`` (if set) sees every commit the group accepts before it is stored: a test
    checks there that nothing below the offset is still unsettled.
    """

    def __init__(self, partitions: Iterable[TopicPartition] = ()) -> None:
        self.records: dict[TopicPartition, list[MemoryRecord]] = {tp: [] for tp in partitions}
        self.committed: dict[TopicPartition, int] = {}
        self.on_commit: Callable[[Mapping[TopicPartition, int]], None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def append(
        self,
        tp: TopicPartition,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> int:
        """Append one record; return its offset."""
        records = self.records.setdefault(tp, [])
        offset = len(records)
        records.append(MemoryRecord(tp.topic, tp.partition, offset, key, value, tuple(headers)))
        self.wake()
        return offset

    def wake(self) -> None:
        """End every fetch's wait now (a test stopping its pipelines needs no fetch timeout)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def appended(self, timeout: float) -> None:
        """Return when a record is appended, or after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        # not wait_for: on Python 3.11 it swallows a cancel that races the waiter's result
        await asyncio.wait([waiter], timeout=timeout)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.on_commit is not None:
            self.on_commit(offsets)
        self.committed.update(offsets)


class MemoryConsumer:
    def __init__(
        self,
        partitions: Mapping[TopicPartition, Sequence[bytes]] | None = None,
        *,
        log: MemoryLog | None = None,
        assignment: Iterable[TopicPartition] | None = None,
    ) -> None:
        if log is None:
            log = MemoryLog()
            for tp, values in (partitions or {}).items():
                log.records[tp] = []
                for value in values:
                    log.append(tp, value)
        self.memory_log = log
        self.log = log.records
        self.committed_offsets = log.committed
        # what start() is assigned; None: every partition of the log
        self._initial = None if assignment is None else list(assignment)
        self.positions: dict[TopicPartition, int] = {}
        self.unreadable: dict[TopicPartition, int] = {}  # partition → offset that fails
        self.crashed = False
        self._paused: set[TopicPartition] = set()
        self._listener: Any = None
        # between a revoke and the next assignment aiokafka hands out no records at all
        self._settled_assignment = asyncio.Event()

    def subscribe(self, topics: Sequence[str], *, listener: Any) -> None:
        self._listener = listener

    async def start(self) -> None:
        await self.assign(list(self.log) if self._initial is None else self._initial)

    async def stop(self) -> None:
        self.positions.clear()
        self._paused.clear()

    # -- the group, driven by the test -------------------------------------------------------

    def begin_rebalance(self) -> None:
        """From now until the next :meth:`assign`, fetches hand out nothing (as in aiokafka)."""
        self._settled_assignment.clear()

    async def revoke(self) -> list[TopicPartition]:
        """Take this member's whole assignment away (the listener runs first); return it."""
        self.begin_rebalance()
        revoked = sorted(self.positions)
        if self._listener is not None and not self.crashed:
            await self._listener.on_partitions_revoked(revoked)
        self.positions.clear()
        self._paused.clear()
        return revoked

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Give this member ``partitions``, each from the group's committed offset."""
        assigned = sorted(partitions)
        for tp in assigned:
            self.positions[tp] = self.committed_offsets.get(tp, 0)
        if self._listener is not None:
            await self._listener.on_partitions_assigned(assigned)
        self._settled_assignment.set()

    def crash(self) -> None:
        """The member is gone: it fetches nothing more and its commits are refused."""
        self.crashed = True

    # -- the Consumer protocol ---------------------------------------------------------------

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]:
        """Like aiokafka: what is there at once, else wait up to ``timeout_ms`` for records;
        during a rebalance, nothing until the new assignment."""
        await self._settled_assignment.wait()  # no await between this check and the take
        got = self._take(partitions, max_records)
        if not got and timeout_ms > 0:
            await self.memory_log.appended(timeout_ms / 1000)
            await self._settled_assignment.wait()
            got = self._take(partitions, max_records)
        await asyncio.sleep(0)  # a fetch always lets other tasks run, as a real one does
        return got

    def _take(
        self, partitions: Sequence[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[MemoryRecord]]:
        if self.crashed:
            return {}
        room = max_records if max_records is not None else 1 << 30
        out: dict[TopicPartition, list[MemoryRecord]] = {}
        for tp in sorted(partitions or self.positions):
            if tp in self._paused or tp not in self.positions or room <= 0:
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
        self._paused.update(tp for tp in partitions if tp in self.positions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> Collection[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> Collection[TopicPartition]:
        return set(self.positions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.crashed:
            raise CommitFailedError("the member left the group")
        foreign = [tp for tp in offsets if tp not in self.positions]
        if foreign:  # the group refuses a commit for a partition the member does not own
            raise CommitFailedError(f"not assigned: {sorted(foreign)}")
        self.memory_log.commit(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._assigned(partition)
        self.positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._assigned(tp)
            self.positions[tp] = 0

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.log[partition])

    async def position(self, partition: TopicPartition) -> int:
        self._assigned(partition)
        return self.positions[partition]

    async def topics(self) -> Collection[str]:
        return {tp.topic for tp in self.log}

    def _assigned(self, partition: TopicPartition) -> None:
        if partition not in self.positions:  # aiokafka: IllegalStateError
            raise RuntimeError(f"{partition} is not assigned to this consumer")
