"""One destination's loop: consume → decode → route → transform → batch → deliver → commit.

Each destination has its own pipeline and its own consumer group (``<group>.<destination>``),
so an outage at one destination makes lag there and nowhere else. Inside a pipeline:

* every consumed record gets a ticket (``worker.offsets``); its offset is committed only when
  every item made from it was accepted or dead-lettered (the produce acknowledged);
* items are batched per API limits with per-member ordering (``worker.batching``) and sent
  concurrently by ``worker.deliver.sender``;
* when ``max_buffered_events`` items wait (a slow or failing destination), the consumer's
  partitions are paused, so memory stays bounded however long an outage lasts;
* input errors are dead-lettered once, by the pipeline marked ``writes_input_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from worker.batching import Batch, Batcher
from worker.config import Settings
from worker.deadletter import REPLAY_DESTINATION_HEADER, DeadLetter, DeadLetterWriter
from worker.decode import SharedDecoder, decode
from worker.deliver.sender import Result, Sender
from worker.destinations.base import Destination
from worker.errors import DecodeError, TransformError
from worker.events import Consumed, LoyaltyEvent
from worker.kafka import make_consumer, start_with_retry
from worker.observability import metrics
from worker.offsets import PartitionProgress, Ticket

log = structlog.get_logger("worker.pipeline")

_COMMIT_INTERVAL = 0.5
_FETCH_TIMEOUT_MS = 100
_MAX_RECORDS = 2000


@dataclass
class PipelineStats:
    consumed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    filtered: int = 0
    input_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: DestinationPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._pipeline.partitions_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._pipeline.partitions_assigned(list(assigned))


class DestinationPipeline:
    def __init__(
        self,
        destination: Destination[Any],
        settings: Settings,
        sender: Sender,
        dead_letters: DeadLetterWriter,
        *,
        topics: Sequence[str],
        group_id: str,
        writes_input_errors: bool,
        accept: Callable[[Consumed], bool] | None = None,
        consumer_factory: Callable[[], Any] | None = None,
        decoder: SharedDecoder | None = None,
    ) -> None:
        self.name = destination.name
        self.destination = destination
        self.settings = settings
        self.dest_settings = settings.destinations[destination.name]
        self.sender = sender
        self.dead_letters = dead_letters
        self.topics = tuple(topics)
        self.group_id = group_id
        self.writes_input_errors = writes_input_errors
        self.accept = accept
        self.stats = PipelineStats()
        self._decode = decoder.decode if decoder is not None else decode
        self.consumer: Any = (consumer_factory or self._default_consumer)()
        self.batcher = Batcher(
            lambda group: destination.batch_rule(group, self.dest_settings), time.monotonic
        )
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self.assigned = False  # joined the group and received an assignment
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._linger = settings.worker.linger_ms / 1000.0
        self._max_buffered = settings.worker.max_buffered_events
        self._routed = {
            event_type for event_type, names in settings.routing.items() if self.name in names
        }
        self._paused = False
        self._consumed_counters: dict[tuple[str, str], Any] = {}
        self._cancelling = False  # drain timed out: cancelled batches release nothing
        self._commit_lock = asyncio.Lock()
        self._commit_soon = asyncio.Event()
        # trace ids of every item in every batch, only when someone asked for debug logs
        self._trace_items = settings.worker.log_level == "debug"

    def _default_consumer(self) -> Any:
        return make_consumer(self.settings.kafka, self.group_id)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await start_with_retry(
            self.consumer, f"consumer {self.group_id}", self.settings.kafka.unreachable_exit_seconds
        )

    async def run(self, stop: asyncio.Event, until: Callable[[], bool] | None = None) -> None:
        """Consume until ``stop`` is set (or ``until()`` is true), then drain and commit."""
        background = [
            asyncio.create_task(self._linger_loop(), name=f"{self.name}-linger"),
            asyncio.create_task(self._commit_loop(), name=f"{self.name}-commit"),
        ]
        try:
            while not stop.is_set() and not (until and until()):
                room = self._apply_backpressure()
                try:
                    fetched = await self.consumer.getmany(
                        timeout_ms=_FETCH_TIMEOUT_MS, max_records=max(1, min(_MAX_RECORDS, room))
                    )
                except KafkaError as exc:
                    log.warning("fetch_failed", destination=self.name, error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                for tp, records in fetched.items():
                    self._ingest(tp, records)
            await self.drain(self.settings.worker.drain_seconds)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """Flush open batches and wait for in-flight work; commit what finished."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # items parked behind a finishing batch land in new open batches: seal those too
            for batch in self.batcher.seal_all():
                self._dispatch(batch)
            if not self._tasks and not self.batcher.items_waiting:
                break
            if self._tasks:
                await asyncio.wait(
                    list(self._tasks), timeout=min(0.1, max(0.0, deadline - time.monotonic()))
                )
            else:
                await asyncio.sleep(0.01)
        finished = not self._tasks and not self.batcher.items_waiting
        if not finished:
            self._cancelling = True
            log.warning(
                "drain_timeout",
                destination=self.name,
                unfinished_batches=len(self._tasks),
                note="their offsets stay uncommitted and will be redelivered",
            )
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.commit()
        return finished

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        except KafkaError as exc:
            log.warning("consumer_stop_failed", destination=self.name, error=str(exc))

    # -- rebalance ---------------------------------------------------------------------------

    def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.progress.setdefault(tp, PartitionProgress())
        if self._paused and assigned:  # a rebalance does not carry the paused state over
            self.consumer.pause(*assigned)
        self.assigned = True
        log.info(
            "partitions_assigned",
            destination=self.name,
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )

    async def partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish in-flight work of revoked partitions (bounded), commit it, forget them."""
        for batch in self.batcher.seal_all():
            self._dispatch(batch)
        deadline = time.monotonic() + min(self.settings.worker.drain_seconds, 20.0)
        while time.monotonic() < deadline and any(
            self.progress[tp].outstanding for tp in revoked if tp in self.progress
        ):
            await asyncio.sleep(0.05)
        await self.commit(only=revoked)
        for tp in revoked:
            progress = self.progress.pop(tp, None)
            if progress is not None:
                progress.revoked = True
        if revoked:
            log.info(
                "partitions_revoked",
                destination=self.name,
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
            )

    # -- hot path ----------------------------------------------------------------------------

    def _ingest(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        progress = self.progress.get(tp)
        if progress is None:  # a fetch raced a revoke
            return
        name = self.name
        routed = self._routed
        transform = self.destination.transform
        settings = self.dest_settings
        add = self.batcher.add
        self.stats.consumed += len(records)
        for message in records:
            ticket = progress.track(message.offset)
            record = Consumed(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                tuple(message.headers or ()),
                message.timestamp or 0,
            )
            if self.accept is not None and not self.accept(record):
                self.stats.filtered += 1
                ticket.release()
                continue
            try:
                event = self._decode(record)
            except DecodeError as exc:
                self._consumed_counter(record.topic, "invalid").inc()
                if self.writes_input_errors:
                    self._dead_letter([(DeadLetter(record, "*", exc.reason, str(exc)), ticket)])
                ticket.release()
                continue
            self._consumed_counter(record.topic, event.event_type).inc()
            if event.event_type not in routed or (
                record.headers and not _replayed_to(record.headers, name)
            ):
                ticket.release()
                continue
            try:
                items = transform(event, settings)
            except TransformError as exc:
                letter = DeadLetter(
                    record,
                    name,
                    exc.reason,
                    str(exc),
                    event_id=event.event_id,
                    event_type=event.event_type,
                )
                self._dead_letter([(letter, ticket)])
                ticket.release()
                continue
            if not items:
                self._skipped(event)
                ticket.release()
                continue
            for item in items:
                ticket.hold()
                item.ticket = _ItemRef(ticket, record, event)
                for batch in add(item):
                    self._dispatch(batch)
            ticket.release()

    def _consumed_counter(self, topic: str, event_type: str) -> Any:
        """The labelled counter child, cached: labels() costs a lock and a dict per call."""
        key = (topic, event_type)
        counter = self._consumed_counters.get(key)
        if counter is None:
            counter = metrics.EVENTS_CONSUMED.labels(self.name, topic, event_type)
            self._consumed_counters[key] = counter
        return counter

    def _skipped(self, event: LoyaltyEvent) -> None:
        self.stats.skipped += 1
        metrics.DELIVERIES.labels(self.name, "skipped").inc()
        log.info(
            "skipped",
            destination=self.name,
            event_type=event.event_type,
            event_id=event.event_id,
            trace_id=event.event_id,
            reason="no call for this event at this destination",
        )

    def _dispatch(self, batch: Batch) -> None:
        task = asyncio.create_task(self._deliver(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: Batch) -> None:
        try:
            request = self.destination.build(batch.group, batch.items, self.dest_settings)
            started = time.perf_counter()
            result = await self.sender.deliver(request)
            elapsed = time.perf_counter() - started
            await self._settle(batch, result, request.endpoint, elapsed)
        finally:
            if not self._cancelling:
                for released in self.batcher.finish(batch):
                    self._dispatch(released)

    async def _settle(self, batch: Batch, result: Result, endpoint: str, elapsed: float) -> None:
        letters: list[tuple[DeadLetter, Ticket]] = []
        delivered_refs: list[_ItemRef] = []
        for index, item in enumerate(batch.items):
            ref: _ItemRef = item.ticket
            failure = result.failed.get(index)
            if failure is None:
                delivered_refs.append(ref)
                continue
            letters.append(
                (
                    DeadLetter(
                        ref.record,
                        self.name,
                        failure.reason,
                        failure.error,
                        http_status=failure.http_status,
                        attempts=result.attempts,
                        event_id=ref.event.event_id,
                        event_type=ref.event.event_type,
                    ),
                    ref.ticket,
                )
            )
        if letters:
            self._dead_letter(letters)
        now = time.time()
        for ref in delivered_refs:
            _observe_latency(self.name, ref.event.occurred_at, now)
            ref.ticket.release()
        for _, ticket in letters:
            ticket.release()  # the item's own hold; the dead letter holds until acknowledged
        delivered = len(delivered_refs)
        self.stats.delivered += delivered
        metrics.DELIVERIES.labels(self.name, "delivered").inc(delivered)
        metrics.BATCH_SIZE.labels(self.name, endpoint).observe(len(batch.items))
        log.info(
            "batch_delivered" if not letters else "batch_finished",
            destination=self.name,
            endpoint=endpoint,
            count=len(batch.items),
            delivered=delivered,
            failed=len(letters),
            status=result.status,
            attempts=result.attempts,
            latency_ms=round(elapsed * 1000, 1),
        )
        if self._trace_items:
            log.debug(
                "batch_items",
                destination=self.name,
                endpoint=endpoint,
                trace_ids=[item.event_id for item in batch.items],
            )

    def _dead_letter(self, letters: list[tuple[DeadLetter, Ticket]]) -> None:
        """Write dead letters in the background; their tickets stay held until acknowledged."""
        for _, ticket in letters:
            ticket.hold()
        task = asyncio.create_task(self._write_dead_letters(letters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_dead_letters(self, letters: list[tuple[DeadLetter, Ticket]]) -> None:
        delay = 0.5
        while True:
            try:
                await self.dead_letters.write([letter for letter, _ in letters])
                break
            except KafkaError as exc:
                # nothing is committed past these records until the broker takes them
                log.error("dead_letter_write_failed", destination=self.name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for letter, ticket in letters:
            self.stats.by_reason[letter.reason] = self.stats.by_reason.get(letter.reason, 0) + 1
            if letter.destination == "*":
                self.stats.input_errors += 1
            else:
                self.stats.dead_lettered += 1
                metrics.DELIVERIES.labels(self.name, "dead_lettered").inc()
            ticket.release()

    # -- background loops --------------------------------------------------------------------

    async def _linger_loop(self) -> None:
        interval = max(0.005, self._linger / 2)
        while True:
            await asyncio.sleep(interval)
            for batch in self.batcher.due(self._linger):
                self._dispatch(batch)

    async def _commit_loop(self) -> None:
        while True:
            # every interval, or at once when the uncommitted window is half full
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_soon.wait(), timeout=_COMMIT_INTERVAL)
            self._commit_soon.clear()
            await self.commit()
            self._report_gauges()

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
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
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("commit_failed", destination=self.name, error=str(exc))
                return
            for tp, position in offsets.items():
                progress = self.progress.get(tp)
                if progress is not None:
                    progress.committed = position

    def _apply_backpressure(self) -> int:
        """Pause or resume the partitions; return how many more records may be fetched.

        The bound counts consumed records not yet committed (not only items in flight): it is
        also the most a crash can make the next owner deliver again.
        """
        uncommitted = sum(len(progress.tickets) for progress in self.progress.values())
        if uncommitted >= self._max_buffered // 2:
            self._commit_soon.set()
        waiting = max(self.batcher.items_waiting, uncommitted)
        # an open breaker (or refused credentials) pauses at once: events wait in Kafka
        unwell = waiting > 0 and not self.sender.healthy
        if not self._paused and (waiting >= self._max_buffered or unwell):
            partitions = list(self.consumer.assignment())
            self.consumer.pause(*partitions)
            self._paused = True
            log.warning(
                "partitions_paused",
                destination=self.name,
                waiting_items=waiting,
                reason="destination is failing" if unwell else "destination is slow; buffer full",
            )
        elif self._paused and not unwell and waiting <= self._max_buffered // 2:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
            log.info("partitions_resumed", destination=self.name, waiting_items=waiting)
        return self._max_buffered - waiting

    def _report_gauges(self) -> None:
        metrics.IN_FLIGHT.labels(self.name).set(self.batcher.items_waiting)
        metrics.BUFFERED.labels(self.name).set(
            sum(progress.outstanding for progress in self.progress.values())
        )
        metrics.RATE_LIMIT.labels(self.name).set(self.sender.limiter.rate)
        for tp, progress in self.progress.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and progress.committed is not None:
                metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - progress.committed)
                )

    def lag(self) -> Mapping[TopicPartition, int]:
        """High watermark minus commit position, per assigned partition (from fetches)."""
        result = {}
        for tp, progress in self.progress.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                result[tp] = max(0, highwater - (progress.committed or 0))
        return result


class _ItemRef:
    """What the pipeline keeps with each item: its ticket, source record and event."""

    __slots__ = ("event", "record", "ticket")

    def __init__(self, ticket: Ticket, record: Consumed, event: LoyaltyEvent) -> None:
        self.ticket = ticket
        self.record = record
        self.event = event


def _replayed_to(headers: Sequence[tuple[str, bytes]], name: str) -> bool:
    """False when a replayed record is meant for another destination only."""
    for key, value in headers:
        if key == REPLAY_DESTINATION_HEADER:
            return value.decode(errors="replace") in (name, "*")
    return True


def _observe_latency(destination: str, occurred_at: str, now: float) -> None:
    try:
        occurred = datetime.fromisoformat(occurred_at).timestamp()
    except ValueError:
        return
    metrics.END_TO_END_LATENCY.labels(destination).observe(max(0.0, now - occurred))
