"""`loyalty-relay replay`: send selected dead letters back through the live pipeline, once each.

Replay does not call any destination itself. It *redrives*: each selected dead letter is
produced again to its original topic (same key, so the same partition as live traffic; same
value bytes) with headers the live pool understands:

* ``relay.replay_destination`` = the ``dlq.destination`` it failed at (``*`` for input
  errors): every other destination's pipeline skips the record;
* ``relay.redrive_of`` = the dead letter's coordinates (``<dlq topic>/<partition>/<offset>``),
  ``relay.replay_id``, and ``dlq.replay_count`` + 1 with the earlier ``dlq.attempts`` and
  ``dlq.original_*`` headers, so a repeat failure is dead-lettered again with its counters and
  points back at the dead letter it supersedes.

What is sent, in order of the checks (each skipped dead letter is counted under one reason):

1. the filters, then ``--max-replays`` (``dlq.replay_count``), then stubs (``dlq.truncated``:
   their value was cut, so they cannot be redriven as they are);
2. *already replayed*: a re-failed copy of it is in the dead-letter topic, the ledger
   (``worker.replay_ledger``) has ``done`` for it, or a copy of it sits in the source partition
   (``worker.replay_scan``); ``--again`` skips the last two checks, never the first;
3. *superseded*: a state-carrying event that a later event of the same member replaced
   (``worker.replay_scan``), unless ``--include-superseded``;
4. the ledger claim, chunk by chunk: only dead letters this run won are produced; another
   run's live claim counts as *claimed by another run*.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

from worker.config import DESTINATION_NAMES, Settings
from worker.deadletter import (
    REDRIVE_OF_HEADER,
    REPLAY_DESTINATION_HEADER,
    REPLAY_ID_HEADER,
    header,
)
from worker.dlq_read import (
    Coordinates,
    DlqFilter,
    DlqReader,
    DlqRecord,
    PartitionReader,
    dlq_topics,
)
from worker.kafka import make_consumer, make_producer, start_with_retry
from worker.replay_ledger import Ledger, Verdict
from worker.replay_scan import scan_sources

log = structlog.get_logger("worker.replay")

_CHUNK = 100


@dataclass
class ReplaySummary:
    replay_id: str
    dry_run: bool
    redriven: int = 0  # with --dry-run: would be redriven
    already_replayed: int = 0
    claimed_by_another_run: int = 0
    superseded: int = 0
    skipped_by_filter: int = 0
    skipped_at_max_replays: int = 0
    skipped_truncated: int = 0  # stubs: the value was cut, the original is not in the .dlq
    left_by_limit: int = 0
    delivered: int | None = None
    dead_lettered_again: int | None = None
    interrupted: bool = False
    pending: int = 0
    source_records_read: int = 0
    selected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "selected" or self.dry_run}


def redriven_headers(record: DlqRecord, replay_id: str) -> list[tuple[str, bytes | None]]:
    """Original headers plus what the live pool needs to route and count the replay."""
    headers = record.headers
    destination = header(headers, "dlq.destination") or b"*"
    count = _int(header(headers, "dlq.replay_count")) + 1
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
        (REDRIVE_OF_HEADER, str(record.coordinates).encode()),
        ("dlq.replay_count", str(count).encode()),
    ]
    return out


def chunk_size(rate: float | None, lease: float) -> int:
    """Claims per round: a chunk must be sent well within half the lease, even at ``--rate``."""
    if not rate:
        return _CHUNK
    return max(1, min(_CHUNK, int(rate * lease / 4)))


async def run_replay(
    settings: Settings,
    *,
    topics: list[str] | None,
    dlq_filter: DlqFilter,
    dry_run: bool = False,
    limit: int | None = None,
    rate: float | None = None,
    again: bool = False,
    include_superseded: bool = False,
    max_replays: int = 3,
    replay_id: str | None = None,
    lease_seconds: float = 300.0,
    wait: bool = True,
    wait_timeout: float = 300.0,
    progress: bool | None = None,
) -> ReplaySummary:
    kafka = settings.kafka
    selected_topics = dlq_topics(topics or kafka.topics)
    run = uuid.uuid4().hex[:12]
    rid = replay_id or run
    summary = ReplaySummary(rid, dry_run)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: a lost terminal
        loop.add_signal_handler(sig, stop.set)
    ledger = Ledger(kafka, kafka.group_id, run, rid)
    redriven: dict[tuple[str, int], int] = {}  # source partition → last offset produced
    destinations: set[str] = set()
    try:
        candidates, ends = await _select(
            settings, selected_topics, dlq_filter, max_replays, summary, stop
        )
        if stop.is_set():
            summary.interrupted = True
            return summary
        await ledger.open(create=not dry_run)
        scan_started = time.time()
        to_send = await _unsent(settings, ledger, candidates, summary, again, include_superseded)
        if limit is not None and len(to_send) > limit:
            summary.left_by_limit = len(to_send) - limit
            to_send = to_send[:limit]
        if dry_run:
            summary.redriven = len(to_send)
            summary.selected = [_listing(r) for r in to_send]
            return summary
        await _redrive(
            settings,
            ledger,
            to_send,
            summary,
            redriven=redriven,
            destinations=destinations,
            live_after=scan_started - lease_seconds,
            lease=lease_seconds,
            again=again,
            rate=rate,
            stop=stop,
            progress=progress,
        )
    finally:
        await ledger.close()
    summary.interrupted = summary.interrupted or stop.is_set()
    if not redriven:
        return summary
    if not wait or summary.interrupted:
        summary.pending = summary.redriven  # after Ctrl-C, do not make the operator wait
        return summary
    await _wait_for_pool(settings, redriven, destinations, wait_timeout, summary)
    if summary.pending == 0:
        again_count = await _count_repeat_failures(settings, selected_topics, ends, rid)
        summary.dead_lettered_again = again_count
        summary.delivered = summary.redriven - again_count
    return summary


async def _select(
    settings: Settings,
    topics: list[str],
    dlq_filter: DlqFilter,
    max_replays: int,
    summary: ReplaySummary,
    stop: asyncio.Event,
) -> tuple[list[DlqRecord], dict[TopicPartition, int]]:
    """Read the dead-letter topics to their ends; keep what the filters and the limit let through.

    A dead letter with a re-failed copy (one carrying its coordinates in ``relay.redrive_of``)
    was replayed already: the copy stands for it, so it is counted and dropped here.
    """
    reader = DlqReader(settings.kafka, topics)
    await reader.start()
    candidates: list[DlqRecord] = []
    refailed: set[Coordinates] = set()
    try:
        async for record in reader.records():
            if stop.is_set():
                break
            parent = Coordinates.parse(header(record.headers, REDRIVE_OF_HEADER))
            if parent is not None:
                refailed.add(parent)
            headers = record.text_headers
            if not dlq_filter.matches(headers, record.key):
                summary.skipped_by_filter += 1
            elif _int(header(record.headers, "dlq.replay_count")) >= max_replays:
                summary.skipped_at_max_replays += 1
            elif header(record.headers, "dlq.truncated") == b"true":
                summary.skipped_truncated += 1
            else:
                candidates.append(record)
        ends = dict(reader.ends)
    finally:
        await reader.stop()
    kept = [r for r in candidates if r.coordinates not in refailed]
    summary.already_replayed += len(candidates) - len(kept)
    return kept, ends


async def _unsent(
    settings: Settings,
    ledger: Ledger,
    candidates: Sequence[DlqRecord],
    summary: ReplaySummary,
    again: bool,
    include_superseded: bool,
) -> list[DlqRecord]:
    """Drop what the ledger or the source partitions say was sent, and superseded state."""
    unsent = [r for r in candidates if again or ledger.done(r.coordinates) is None]
    summary.already_replayed += len(candidates) - len(unsent)
    facts = await scan_sources(settings.kafka, unsent)
    summary.source_records_read = facts.records_read
    to_send: list[DlqRecord] = []
    copied: list[Coordinates] = []
    for record in unsent:
        coordinates = record.coordinates
        if not again and coordinates in facts.copied:
            summary.already_replayed += 1
            copied.append(coordinates)
        elif coordinates in facts.superseded and not include_superseded:
            summary.superseded += 1
        else:
            to_send.append(record)
    if copied and ledger.exists and not summary.dry_run:
        await ledger.mark_done(copied)  # a run died after producing them: record it now
    return to_send


async def _redrive(
    settings: Settings,
    ledger: Ledger,
    records: Sequence[DlqRecord],
    summary: ReplaySummary,
    *,
    redriven: dict[tuple[str, int], int],
    destinations: set[str],
    live_after: float,
    lease: float,
    again: bool,
    rate: float | None,
    stop: asyncio.Event,
    progress: bool | None,
) -> None:
    """Claim a chunk, produce what this run won, wait for the acks, mark them done; repeat."""
    kafka = settings.kafka
    queue = deque(records)
    size = chunk_size(rate, lease)
    reporter = _Progress(progress, summary.replay_id, len(records))
    producer = make_producer(kafka)
    await start_with_retry(producer, "replay producer", kafka.unreachable_exit_seconds)
    held: list[Coordinates] = []  # claimed and won, not produced: released if we stop
    started = time.monotonic()
    try:
        while queue and not stop.is_set():
            chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
            verdicts = await ledger.claim(
                [r.coordinates for r in chunk], live_after=live_after, again=again
            )
            claimed_at = time.monotonic()
            won, lost = [], []
            for record in chunk:
                verdict = verdicts[record.coordinates]
                if verdict is Verdict.WON:
                    won.append(record)
                    continue
                lost.append(record.coordinates)
                if verdict is Verdict.DONE:
                    summary.already_replayed += 1
                else:
                    summary.claimed_by_another_run += 1
            await ledger.release(lost)  # a lost claim must not hold off the runs after us
            held = [r.coordinates for r in won]
            sent: list[tuple[DlqRecord, Any]] = []
            for index, record in enumerate(won):
                if stop.is_set() or time.monotonic() - claimed_at > lease / 2:
                    # past half the lease another run may soon take these over: claim anew
                    if not stop.is_set():
                        queue.extendleft(reversed(won[index:]))
                    break
                sent.append((record, await _produce(producer, record, summary.replay_id)))
                summary.redriven += 1
                destinations.add(record.text_headers.get("dlq.destination") or "*")
                reporter.update(summary.redriven)
                if rate:
                    ahead = summary.redriven / rate - (time.monotonic() - started)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, ahead)):
                            await stop.wait()
            for _, future in sent:
                meta = await future
                key = (meta.topic, meta.partition)
                redriven[key] = max(redriven.get(key, -1), meta.offset)
            done = [r.coordinates for r, _ in sent]
            await ledger.mark_done(done)
            held = [c for c in held if c not in set(done)]
            if stop.is_set():
                await ledger.release(held)
                held = []
    finally:
        reporter.close()
        await producer.stop()


async def _produce(producer: Any, record: DlqRecord, replay_id: str) -> Any:
    headers = record.text_headers
    original = headers.get("dlq.original_topic") or record.topic.removesuffix(".dlq")
    return await producer.send(
        original,
        value=record.value,
        key=record.key,
        headers=redriven_headers(record, replay_id),
    )


def _int(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


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
    reader = PartitionReader(settings.kafka)
    await reader.start()
    count = 0
    try:
        partitions = await reader.partitions_of(topics)
        await reader.assign({tp: ends.get(tp, 0) for tp in partitions})
        async for record in reader.records():
            if header(record.headers, REPLAY_ID_HEADER) == replay_id.encode():
                count += 1
    finally:
        await reader.stop()
    return count


def _listing(record: DlqRecord) -> dict[str, Any]:
    headers = record.text_headers
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "destination": headers.get("dlq.destination"),
        "reason": headers.get("dlq.reason"),
        "event_id": headers.get("dlq.event_id"),
        "replay_count": _int(header(record.headers, "dlq.replay_count")),
    }


class _Progress:
    """A rich progress bar on a terminal, a log line every 5 s otherwise."""

    def __init__(self, enabled: bool | None, replay_id: str, total: int) -> None:
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
            self._task = self._progress.add_task(f"replay {replay_id}", total=total)
        self._started = time.monotonic()

    def update(self, redriven: int) -> None:
        rate = redriven / max(0.001, time.monotonic() - self._started)
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=redriven,
                description=f"redriven {redriven} ({rate:.0f}/s)",
            )
        elif time.monotonic() - self._last > 5:
            self._last = time.monotonic()
            log.info("replay_progress", redriven=redriven, rate_per_s=round(rate))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
