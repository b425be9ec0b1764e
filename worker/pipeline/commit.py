"""The commit stage: per-partition tickets, offset commits, and the bounds that pause consuming.

An offset is committed only when every record before it reached a final state at this
destination (``worker.offsets``). The same tickets bound memory: records consumed and not yet
committed, and their bytes, are also the most a crash can make the next owner deliver again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from worker.observability import metrics
from worker.offsets import PartitionProgress, Ticket

log = structlog.get_logger("worker.pipeline")

COMMIT_INTERVAL = 0.5
KAFKA_CALL_TIMEOUT = 10.0  # a commit or a group leave, when the broker does not answer


class Committing(Protocol):
    """What the commit stage needs from the consumer."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def position(self, partition: TopicPartition) -> int: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> Collection[TopicPartition]: ...
    def assignment(self) -> Collection[TopicPartition]: ...


class Pressure(Enum):
    PAUSE = "pause"
    RESUME = "resume"
    HOLD = "hold"  # stay as it is


# A full buffer first just stops fetching; the partitions are paused only when it stays full
# this long. Pausing makes aiokafka drop the records it prefetched for those partitions, so
# pausing at every brief full buffer (in a backlog: every second) fetched and parsed them twice.
FULL_PAUSE_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class BufferLimits:
    records: int
    bytes: int

    def full(self, waiting: int, held_bytes: int) -> bool:
        return waiting >= self.records or held_bytes >= self.bytes


def pressure(
    paused: bool,
    waiting: int,
    held_bytes: int,
    unwell: bool,
    limits: BufferLimits,
    full_for: float,
) -> Pressure:
    """Pause when the destination is unwell or the buffer stayed full; resume at half the limits.

    ``full_for`` is how long the buffer has been full without a break (0 when it is not).
    """
    if not paused and (unwell or (full_for >= FULL_PAUSE_AFTER)):
        return Pressure.PAUSE
    if paused and not unwell and waiting <= limits.records // 2 and held_bytes <= limits.bytes // 2:
        return Pressure.RESUME
    return Pressure.HOLD


class Committer:
    """Tickets of the assigned partitions, and the commits they allow."""

    def __init__(self, name: str, consumer: Committing, limits: BufferLimits) -> None:
        self.name = name
        self.consumer = consumer
        self.limits = limits
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self.soon = asyncio.Event()  # the uncommitted window is half full: commit now
        self._lock = asyncio.Lock()

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self.progress.setdefault(tp, PartitionProgress())

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Drop revoked partitions: their tickets can no longer be committed by this replica."""
        for tp in partitions:
            progress = self.progress.pop(tp, None)
            if progress is not None:
                progress.revoked = True
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))

    def track(self, tp: TopicPartition, offset: int, size: int) -> Ticket | None:
        """A ticket for a consumed record; None if the partition was revoked meanwhile."""
        progress = self.progress.get(tp)
        return progress.track(offset, size) if progress is not None else None

    def next_offset(self, tp: TopicPartition) -> int | None:
        progress = self.progress.get(tp)
        return progress.next_offset if progress is not None else None

    def outstanding(self, partitions: Collection[TopicPartition]) -> bool:
        return any(self.progress[tp].outstanding for tp in partitions if tp in self.progress)

    def held(self) -> tuple[int, int]:
        """Records consumed and not yet committed, and their bytes; asks for a commit at half."""
        records = sum(len(progress.tickets) for progress in self.progress.values())
        held_bytes = sum(progress.bytes for progress in self.progress.values())
        if records >= self.limits.records // 2 or held_bytes >= self.limits.bytes // 2:
            self.soon.set()
        return records, held_bytes

    async def note_fetch_positions(self, unsure: Collection[TopicPartition]) -> None:
        """Remember how far the client fetched, now that every record it returned is tracked.

        Transaction markers and aborted records move the position without being handed over;
        without this a partition ending in one would never be committed to its end (lag 1).
        Partitions in ``unsure`` (a failed fetch or rewind) are skipped: their position may be
        past records that were lost.
        """
        for tp, progress in list(self.progress.items()):
            if tp in unsure:
                continue
            try:
                position = await self.consumer.position(tp)
            except Exception:  # revoked meanwhile; the next fetch tells
                continue
            if self.progress.get(tp) is progress and tp not in unsure:
                progress.fetched_to = position

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        async with self._lock:
            offsets: dict[TopicPartition, int] = {}
            for tp in only if only is not None else list(self.progress):
                progress = self.progress.get(tp)
                if progress is None or progress.revoked:
                    continue
                position = progress.commit_position()
                if position is not None:
                    offsets[tp] = position
            if not offsets:
                return
            try:
                # bounded: with the broker gone aiokafka waits for a coordinator forever
                await asyncio.wait_for(self.consumer.commit(offsets), KAFKA_CALL_TIMEOUT)
            except (KafkaError, TimeoutError) as exc:
                log.warning("commit_failed", destination=self.name, error=str(exc) or "timeout")
                return
            for tp, position in offsets.items():
                progress = self.progress.get(tp)
                if progress is not None:
                    progress.committed = position

    async def commit_loop(self, report: Callable[[], None]) -> None:
        """Commit every interval, or at once when asked (``soon``); then ``report`` gauges."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.soon.wait(), timeout=COMMIT_INTERVAL)
            self.soon.clear()
            await self.commit()
            self.report_lag()
            report()

    def lag(self) -> Mapping[TopicPartition, int]:
        """High watermark minus commit position, per assigned partition (from fetches)."""
        result = {}
        for tp, progress in self.progress.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                result[tp] = max(0, highwater - (progress.committed or 0))
        return result

    def report_lag(self) -> None:
        metrics.BUFFERED.labels(self.name).set(
            sum(progress.outstanding for progress in self.progress.values())
        )
        for tp, progress in self.progress.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and progress.committed is not None:
                metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - progress.committed)
                )


class Backpressure:
    """Bounds what is fetched by the buffer limits; pauses the partitions when that is not enough.

    ``apply`` returns how many more records may be fetched (0 while the buffer is full). The
    partitions are paused at once when the destination is unwell (an open breaker, refused
    credentials, a halt) and after ``FULL_PAUSE_AFTER`` of a full buffer; they resume at half.
    """

    def __init__(
        self,
        name: str,
        consumer: Committing,
        committer: Committer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._committer = committer
        self._clock = clock
        self._full_since: float | None = None
        self.paused = False

    def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        if self.paused and partitions:  # a rebalance does not carry the paused state over
            self._consumer.pause(*partitions)

    def apply(self, items_waiting: int, destination_healthy: bool, halted: bool) -> int:
        """Pause or resume the partitions; return how many more records may be fetched."""
        records, held_bytes = self._committer.held()
        waiting = max(items_waiting, records)
        # an open breaker (or refused credentials) pauses at once: events wait in Kafka
        unwell = (waiting > 0 and not destination_healthy) or halted
        limits = self._committer.limits
        full = limits.full(waiting, held_bytes)
        now = self._clock()
        if not full:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        full_for = now - self._full_since if self._full_since is not None else 0.0
        decision = pressure(self.paused, waiting, held_bytes, unwell, limits, full_for)
        if decision is Pressure.PAUSE:
            self._consumer.pause(*self._consumer.assignment())
            self.paused = True
            log.warning(
                "partitions_paused",
                destination=self.name,
                waiting_items=waiting,
                waiting_bytes=held_bytes,
                reason="destination is failing" if unwell else "destination is slow; buffer full",
            )
        elif decision is Pressure.RESUME:
            self._consumer.resume(*self._consumer.paused())
            self.paused = False
            log.info("partitions_resumed", destination=self.name, waiting_items=waiting)
        return 0 if full else limits.records - waiting
