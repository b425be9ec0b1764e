"""Fetching that never skips a record: rewind after a failed fetch, isolate, report, salvage.

aiokafka decodes fetched batches lazily inside ``getmany``. When one partition's batch cannot
be read (a codec that is not installed, a CRC error, a header key that is not UTF-8), the call
raises after it has already advanced the positions of partitions it drained earlier in the same
call, and of the good records before the bad batch: those records would be lost, and a later
commit would pass over them. So after any exception from the client:

1. every assigned partition is sought back to the next offset the pipeline has not consumed
   (one past the last record it took, else the group's committed offset, else the beginning);
2. the fetcher switches to one partition per call for a while, so the partition that fails is
   known and the others keep flowing;
3. a partition that keeps failing for ``unreadable_after`` seconds is reported (a log line,
   ``relay_unreadable_partitions`` and ``/readyz``), and from then on its records are salvaged
   one at a time with a second consumer that skips CRC checks: each one it can read becomes an
   ``unreadable_batch`` dead letter. Records that cannot be read even so stay where they are:
   the partition is reported, never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import structlog
from aiokafka import TopicPartition

from worker.consume.consumer import consumed
from worker.errors import describe
from worker.events import Consumed
from worker.observability import metrics

log = structlog.get_logger("worker.consume")

_ISOLATE_SECONDS = 30.0  # fetch one partition at a time this long after the last failure
_IDLE_SLEEP = 0.05
_SALVAGE_TIMEOUT_MS = 5_000

Records = Mapping[TopicPartition, list[Consumed]]
Salvage = Callable[[TopicPartition, int], Coroutine[Any, Any, Any | None]]


class GuardedFetcher:
    """``getmany`` for one pipeline's consumer, made safe against records it cannot read."""

    def __init__(
        self,
        consumer: Any,
        destination: str,
        next_offset: Callable[[TopicPartition], int | None],
        *,
        unreadable_after: float,
        salvage: Salvage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._destination = destination
        self._next_offset = next_offset
        self._unreadable_after = unreadable_after
        self._salvage = salvage
        self._clock = clock
        self._isolate_until = 0.0
        self.failing_since: dict[TopicPartition, float] = {}
        self.unreadable: dict[TopicPartition, str] = {}  # reported partitions → last error
        # partitions whose rewind failed: their position may be past records that were lost
        self.unsafe: set[TopicPartition] = set()

    async def fetch(self, timeout_ms: int, max_records: int) -> Records:
        if self.unsafe:
            await self.rewind(list(self.unsafe))
            if self.unsafe:
                await asyncio.sleep(_IDLE_SLEEP)
                return {}
        if self._clock() >= self._isolate_until and not self.failing_since:
            try:
                got = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
                return {tp: list(map(consumed, messages)) for tp, messages in got.items()}
            except Exception as exc:
                log.warning("fetch_failed", destination=self._destination, error=describe(exc))
                await self.rewind(self._consumer.assignment())
                self._isolate_until = self._clock() + _ISOLATE_SECONDS
                return {}
        return await self._fetch_one_by_one(max_records)

    async def _fetch_one_by_one(self, max_records: int) -> Records:
        fetched: dict[TopicPartition, list[Consumed]] = {}
        paused = self._consumer.paused()
        for tp in sorted(self._consumer.assignment()):
            if tp in paused or max_records <= 0:
                continue
            try:
                got = await self._consumer.getmany(tp, timeout_ms=0, max_records=max_records)
            except Exception as exc:
                await self.rewind([tp])
                await self._failed(tp, exc)
                continue
            records = got.get(tp)
            if records:
                fetched[tp] = list(map(consumed, records))
                max_records -= len(records)
                self._recovered(tp)
        if not fetched:
            await asyncio.sleep(_IDLE_SLEEP)
        return fetched

    async def rewind(self, partitions: Iterable[TopicPartition]) -> None:
        """Seek each partition back to the first record the pipeline has not consumed."""
        for tp in partitions:
            try:
                offset = self._next_offset(tp)
                if offset is None:
                    offset = await self._consumer.committed(tp)
                if offset is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, offset)
                self.unsafe.discard(tp)
            except Exception as exc:  # revoked meanwhile, broker away: tried again first thing
                if tp in self._consumer.assignment():
                    self.unsafe.add(tp)
                log.warning(
                    "rewind_failed",
                    destination=self._destination,
                    partition=f"{tp.topic}:{tp.partition}",
                    error=describe(exc),
                )

    async def _failed(self, tp: TopicPartition, exc: BaseException) -> None:
        now = self._clock()
        self._isolate_until = now + _ISOLATE_SECONDS
        since = self.failing_since.setdefault(tp, now)
        error = describe(exc)
        if now - since < self._unreadable_after:
            log.warning(
                "partition_fetch_failed",
                destination=self._destination,
                partition=f"{tp.topic}:{tp.partition}",
                failing_s=round(now - since, 1),
                error=error,
            )
            return
        if tp not in self.unreadable:
            log.error(
                "partition_unreadable",
                destination=self._destination,
                partition=f"{tp.topic}:{tp.partition}",
                failing_s=round(now - since, 1),
                error=error,
                action="salvaging its records one by one as unreadable_batch dead letters",
            )
            metrics.UNREADABLE_PARTITIONS.labels(
                self._destination, tp.topic, str(tp.partition)
            ).set(1)
        self.unreadable[tp] = error
        await self._salvage_next(tp)

    async def _salvage_next(self, tp: TopicPartition) -> None:
        if self._salvage is None:
            return
        offset = self._next_offset(tp)
        if offset is None:
            offset = await self._consumer.committed(tp)
        if offset is None:  # nothing taken, nothing committed: the log's first record
            await self._consumer.seek_to_beginning(tp)
            offset = await self._consumer.position(tp)
        next_offset = await self._salvage(tp, offset)
        if next_offset is not None:
            self._consumer.seek(tp, next_offset)

    def _recovered(self, tp: TopicPartition) -> None:
        if self.failing_since.pop(tp, None) is None:
            return
        if self.unreadable.pop(tp, None) is not None:
            metrics.UNREADABLE_PARTITIONS.labels(
                self._destination, tp.topic, str(tp.partition)
            ).set(0)
            log.warning(
                "partition_readable_again",
                destination=self._destination,
                partition=f"{tp.topic}:{tp.partition}",
            )

    def problem(self) -> str | None:
        """The partitions reported unreadable, for ``/readyz``; None if there are none."""
        if not self.unreadable:
            return None
        parts = ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in self.unreadable))
        return f"unreadable partitions {parts}"

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.failing_since.pop(tp, None)
            self.unsafe.discard(tp)
            if self.unreadable.pop(tp, None) is not None:
                metrics.UNREADABLE_PARTITIONS.remove(self._destination, tp.topic, str(tp.partition))
