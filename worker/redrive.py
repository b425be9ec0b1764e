"""`loyalty-relay replay`: send selected dead letters back through the live pipeline.

Replay does not call any destination itself. It *redrives*: each selected dead letter is
produced again to its original topic (same key, so the same partition and the same per-member
order as live traffic; same value bytes) with two headers the live pool understands:

* ``relay.replay_destination`` = the ``dlq.destination`` it failed at (``*`` for input
  errors): every other destination's pipeline skips the record, so an event that reached
  Braze and failed at MoEngage is redelivered to MoEngage alone;
* ``relay.replay_id``, plus ``dlq.replay_count`` + 1 and the earlier ``dlq.attempts`` and
  ``dlq.original_*`` headers, so a repeat failure is dead-lettered again with its counters.

Because the pool itself delivers (same transform, batching, rate limits, retries and member
barrier), a replay never races live workers. Progress is a consumer group per replay,
``<KAFKA_GROUP_ID>.replay.<replay_id>``, committed after each produced chunk is acknowledged:
rerunning the same replay (same filters, or the same ``--replay-id``) sends nothing twice, and
Ctrl-C loses nothing. Records already replayed ``--max-replays`` times are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import TopicPartition

from worker.config import DESTINATION_NAMES, Settings
from worker.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_ID_HEADER, header
from worker.dlq_read import DlqFilter, DlqReader, DlqRecord, dlq_topics
from worker.kafka import make_consumer, make_producer, start_with_retry

log = structlog.get_logger("worker.replay")

_COMMIT_EVERY = 100


@dataclass
class ReplaySummary:
    replay_id: str
    dry_run: bool
    replayed: int = 0
    delivered: int | None = None
    dead_lettered_again: int | None = None
    skipped_by_filter: int = 0
    skipped_by_replay_limit: int = 0
    interrupted: bool = False
    pending: int = 0
    selected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "selected" or self.dry_run}


def replay_id_for(topics: list[str], dlq_filter: DlqFilter) -> str:
    """A stable id for "the same replay": the topics and the filters."""
    raw = orjson.dumps([sorted(topics), dlq_filter.describe()])
    return hashlib.sha256(raw).hexdigest()[:12]


def redriven_headers(record: DlqRecord, replay_id: str) -> list[tuple[str, bytes]]:
    """Original headers plus what the live pool needs to route and count the replay."""
    headers = record.headers
    destination = header(headers, "dlq.destination") or b"*"
    count = int(header(headers, "dlq.replay_count") or b"0") + 1
    keep = {
        "dlq.attempts",
        "dlq.original_topic",
        "dlq.original_partition",
        "dlq.original_offset",
    }
    out = [(k, v) for k, v in headers if not k.startswith(("dlq.", "relay.")) or k in keep]
    out += [
        (REPLAY_DESTINATION_HEADER, destination),
        (REPLAY_ID_HEADER, replay_id.encode()),
        ("dlq.replay_count", str(count).encode()),
    ]
    return out


async def run_replay(
    settings: Settings,
    *,
    topics: list[str] | None,
    dlq_filter: DlqFilter,
    dry_run: bool = False,
    limit: int | None = None,
    rate: float | None = None,
    from_beginning: bool = False,
    max_replays: int = 3,
    replay_id: str | None = None,
    wait: bool = True,
    wait_timeout: float = 300.0,
    progress: bool | None = None,
) -> ReplaySummary:
    kafka = settings.kafka
    selected_topics = dlq_topics(topics or kafka.topics)
    rid = replay_id or replay_id_for(selected_topics, dlq_filter)
    summary = ReplaySummary(rid, dry_run)
    group = None if dry_run else f"{kafka.group_id}.replay.{rid}"
    reader = DlqReader(kafka, selected_topics, group)
    await reader.start(from_beginning=from_beginning)
    started_ends: dict[TopicPartition, int] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer: Any = None
    redriven: dict[tuple[str, int], int] = {}  # original partition → last offset produced
    destinations_waited: set[str] = set()
    reporter = _Progress(progress, rid)
    try:
        if not dry_run:
            producer = make_producer(kafka)
            await start_with_retry(producer, "replay producer", kafka.unreachable_exit_seconds)
        pending: list[Any] = []
        to_commit: dict[TopicPartition, int] = {}
        started = time.monotonic()
        async for record in reader.records():
            if stop.is_set() or (limit is not None and summary.replayed >= limit):
                summary.interrupted = stop.is_set()
                break
            tp = TopicPartition(record.topic, record.partition)
            to_commit[tp] = record.offset + 1
            headers = record.text_headers
            if not dlq_filter.matches(headers, record.key):
                summary.skipped_by_filter += 1
                reporter.update(summary, reader.total)
                continue
            if int(headers.get("dlq.replay_count") or 0) >= max_replays:
                summary.skipped_by_replay_limit += 1
                continue
            summary.replayed += 1
            if dry_run:
                summary.selected.append(_listing(record, headers))
                continue
            original = headers.get("dlq.original_topic") or record.topic.removesuffix(".dlq")
            destinations_waited.add(headers.get("dlq.destination", "*"))
            pending.append(
                await producer.send(
                    original,
                    value=record.value,
                    key=record.key,
                    headers=redriven_headers(record, rid),
                )
            )
            if rate:
                await asyncio.sleep(
                    max(0.0, summary.replayed / rate - (time.monotonic() - started))
                )
            if len(pending) >= _COMMIT_EVERY:
                await _flush(pending, reader, to_commit, redriven)
            reporter.update(summary, reader.total)
        await _flush(pending, reader, to_commit, redriven)
        started_ends = dict(reader.ends)
    finally:
        reporter.close()
        if producer is not None:
            await producer.stop()
        await reader.stop()
    summary.interrupted = summary.interrupted or stop.is_set()
    if dry_run or not redriven:
        return summary
    if not wait:
        summary.pending = summary.replayed
        return summary
    await _wait_for_pool(settings, redriven, destinations_waited, wait_timeout, summary)
    if summary.pending == 0:
        again = await _count_repeat_failures(settings, selected_topics, started_ends, rid)
        summary.dead_lettered_again = again
        summary.delivered = summary.replayed - again
    return summary


async def _flush(
    pending: list[Any],
    reader: DlqReader,
    to_commit: dict[TopicPartition, int],
    redriven: dict[tuple[str, int], int],
) -> None:
    for future in pending:
        meta = await future
        key = (meta.topic, meta.partition)
        redriven[key] = max(redriven.get(key, -1), meta.offset)
    pending.clear()
    await reader.commit(to_commit)


async def _wait_for_pool(
    settings: Settings,
    redriven: Mapping[tuple[str, int], int],
    destinations: set[str],
    timeout: float,
    summary: ReplaySummary,
) -> None:
    """Wait until the live groups of the destinations concerned committed past our records."""
    names = DESTINATION_NAMES if "*" in destinations else sorted(destinations - {"*"})
    groups = [f"{settings.kafka.group_id}.{name}" for name in names]
    deadline = time.monotonic() + timeout
    consumers = [make_consumer(settings.kafka, group) for group in groups]
    try:
        for consumer in consumers:
            await start_with_retry(
                consumer, "replay watcher", settings.kafka.unreachable_exit_seconds
            )
        while True:
            behind = 0
            for consumer in consumers:
                for (topic, partition), offset in redriven.items():
                    committed = await consumer.committed(TopicPartition(topic, partition))
                    if committed is None and "*" in destinations:
                        continue  # that destination's group never consumed here: not enabled
                    if committed is None or committed <= offset:
                        behind += 1
            if behind == 0 or time.monotonic() > deadline:
                summary.pending = behind
                return
            await asyncio.sleep(0.5)
    finally:
        for consumer in consumers:
            await consumer.stop()


async def _count_repeat_failures(
    settings: Settings, topics: list[str], ends: Mapping[TopicPartition, int], replay_id: str
) -> int:
    """Dead letters written after the replay started that carry this replay's id."""
    await asyncio.sleep(0.5)
    reader = DlqReader(settings.kafka, topics, None)
    await reader.start(from_beginning=True)
    count = 0
    try:
        async for record in reader.records(settle=1.0):
            tp = TopicPartition(record.topic, record.partition)
            if record.offset < ends.get(tp, 0):
                continue
            if header(record.headers, REPLAY_ID_HEADER) == replay_id.encode():
                count += 1
    finally:
        await reader.stop()
    return count


def _listing(record: DlqRecord, headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "destination": headers.get("dlq.destination"),
        "reason": headers.get("dlq.reason"),
        "event_id": headers.get("dlq.event_id"),
        "replay_count": int(headers.get("dlq.replay_count") or 0),
    }


class _Progress:
    """A rich progress line on a terminal, a log line every 5 s otherwise."""

    def __init__(self, enabled: bool | None, replay_id: str) -> None:
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._progress: Any = None
        if self._tty:
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(f"replay {replay_id}", total=None)
        self._started = time.monotonic()

    def update(self, summary: ReplaySummary, total: int | None) -> None:
        read = summary.replayed + summary.skipped_by_filter + summary.skipped_by_replay_limit
        rate = read / max(0.001, time.monotonic() - self._started)
        if self._progress is not None:
            self._progress.update(
                self._task,
                total=total,
                completed=read,
                description=f"replayed {summary.replayed} ({rate:.0f} records/s read)",
            )
        elif time.monotonic() - self._last > 5:
            self._last = time.monotonic()
            log.info("replay_progress", replayed=summary.replayed, rate_per_s=round(rate))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
