"""One destination's loop: consume → decode → route → transform → batch → deliver → commit.

Each destination has its own pipeline and its own consumer group (``<group>.<destination>``),
so an outage at one destination makes lag there and nowhere else. Inside a pipeline:

* every consumed record gets a ticket (``worker.offsets``); its offset is committed only when
  every item made from it was accepted or dead-lettered (the produce acknowledged);
* items are batched per API limits with per-member ordering (``worker.batching``) and sent
  concurrently by ``worker.deliver.sender``;
* when ``max_buffered_events`` items wait (a slow or failing destination), the consumer's
  partitions are paused, so memory stays bounded however long an outage lasts;
* input errors are dead-lettered once, by the pipeline marked ``writes_input_errors``;
* no input and no destination answer can end the pipeline: an unexpected exception while
  handling one record or one batch becomes an ``internal_error`` dead letter for that event
  and destination (plus a log line with the traceback), and the loop goes on;
* a failed fetch never skips records (``worker.consume.fetch``);
* on a revoke, after a bounded wait, batches holding items of the revoked partitions are
  cancelled and their parked items dropped: the old owner never sends after giving a
  partition up, so per-member order holds across rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from worker.batching import Batch, Batcher
from worker.config import Settings
from worker.consume import (
    Consumer,
    GuardedFetcher,
    RebalanceListener,
    TopicPartition,
    consumed,
    describe,
)
from worker.deadletter import DeadLetter, DeadLetterWriter
from worker.decode import SharedDecoder, decode
from worker.deliver.sender import Failure, Result, Sender
from worker.destinations.base import Destination, Item
from worker.events import Consumed, LoyaltyEvent
from worker.kafka import make_consumer, start_with_retry
from worker.observability import metrics
from worker.observability.redact import Redactor
from worker.offsets import PartitionProgress, Ticket
from worker.route import INVALID, Route, Routed, route

log = structlog.get_logger("worker.pipeline")

_COMMIT_INTERVAL = 0.5
_KAFKA_CALL_TIMEOUT = 10.0  # a commit or a group leave, when the broker does not answer
_FETCH_TIMEOUT_MS = 100
_MAX_RECORDS = 2000
_REVOKE_WAIT_SECONDS = 20.0
# retriable produce errors for a dead letter are retried this long before the stub fallback
_DEAD_LETTER_RETRY_SECONDS = 60.0
_DEAD_LETTER_BACKOFF_CAP = 30.0
_MAX_ERROR_TEXT = 300
# relay_end_to_end_seconds observes the first delivered item of each batch and every 16th after
_LATENCY_SAMPLE_EVERY = 16


@dataclass
class PipelineStats:
    consumed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    filtered: int = 0
    input_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


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
        redactor: Redactor | None = None,
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
        max_depth = settings.worker.max_nesting_depth
        routed = frozenset(
            event_type for event_type, names in settings.routing.items() if self.name in names
        )
        self._route = Route(
            destination,
            self.dest_settings,
            routed,
            writes_input_errors,
            decoder.decode
            if decoder is not None
            else functools.partial(decode, max_depth=max_depth),
            accept,
        )
        self._redactor = redactor or Redactor(settings.secrets)
        self.consumer: Consumer = (consumer_factory or self._default_consumer)()
        self.fetcher = GuardedFetcher(
            self.consumer,
            self.name,
            self._next_offset,
            unreadable_after=settings.worker.unreadable_partition_seconds,
            salvage=self._salvage,
        )
        self._salvage_consumer: Any = None
        self.batcher = Batcher(
            lambda group: destination.batch_rule(group, self.dest_settings), time.monotonic
        )
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self.assigned = False  # joined the group and received an assignment
        self.draining = False
        self.halted: str | None = None  # the broker refuses even stub dead letters
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[Batch, asyncio.Task[None]] = {}
        self._linger = settings.worker.linger_ms / 1000.0
        self._max_buffered = settings.worker.max_buffered_events
        self._max_buffered_bytes = settings.worker.max_buffered_bytes
        self._paused = False
        self._consumed_counters: dict[tuple[str, str], Any] = {}
        self._key_mismatch_reported: set[TopicPartition] = set()
        self._cancelling = False  # drain timed out: cancelled batches release nothing
        self._commit_lock = asyncio.Lock()
        self._commit_soon = asyncio.Event()
        # trace ids of every item in every batch, only when someone asked for debug logs
        self._trace_items = settings.worker.log_level == "debug"

    def _default_consumer(self) -> Any:
        return make_consumer(self.settings.kafka, self.group_id)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        listener = RebalanceListener(self.partitions_assigned, self.partitions_revoked)
        self.consumer.subscribe(self.topics, listener=listener)
        await start_with_retry(
            self.consumer, f"consumer {self.group_id}", self.settings.kafka.unreachable_exit_seconds
        )

    async def run(self, stop: asyncio.Event, until: Callable[[], bool] | None = None) -> None:
        """Consume until ``stop`` is set (or ``until()`` is true), then drain and commit."""
        background = [
            asyncio.create_task(_guarded(self._linger_loop, self.name), name=f"{self.name}-linger"),
            asyncio.create_task(_guarded(self._commit_loop, self.name), name=f"{self.name}-commit"),
        ]
        try:
            while not stop.is_set() and not (until and until()):
                room = self._apply_backpressure()
                fetched = await self.fetcher.fetch(
                    _FETCH_TIMEOUT_MS, max(1, min(_MAX_RECORDS, room))
                )
                for tp, records in fetched.items():
                    self._ingest(tp, records)
                await self._note_fetch_positions()
            await self.drain(self.settings.worker.drain_seconds)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._salvage_consumer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._salvage_consumer.stop(), _KAFKA_CALL_TIMEOUT)

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
            await asyncio.wait_for(self.consumer.stop(), _KAFKA_CALL_TIMEOUT)
        except (KafkaError, TimeoutError) as exc:
            log.warning("consumer_stop_failed", destination=self.name, error=str(exc) or "timeout")

    def problem(self) -> str | None:
        """Why this pipeline is not healthy (for /readyz), or None."""
        if self.halted:
            return f"{self.name}: halted: {self.halted}"
        if self.fetcher.unreadable:
            parts = ", ".join(
                sorted(f"{tp.topic}:{tp.partition}" for tp in self.fetcher.unreadable)
            )
            return f"{self.name}: unreadable partitions {parts}"
        return None

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
        """Finish in-flight work of revoked partitions (bounded), commit it, forget them.

        What is not finished by then is cancelled: the new owner re-delivers it from the
        commit, and this replica must not send it afterwards (that would reorder the member).
        While draining, the drain already waited: the revoke does not wait again.
        """
        for batch in self.batcher.seal_all():
            self._dispatch(batch)
        wait = (
            0.0 if self.draining else min(self.settings.worker.drain_seconds, _REVOKE_WAIT_SECONDS)
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(
            self.progress[tp].outstanding for tp in revoked if tp in self.progress
        ):
            await asyncio.sleep(0.05)
        self._give_up(set(revoked))
        await self.commit(only=revoked)
        for tp in revoked:
            progress = self.progress.pop(tp, None)
            if progress is not None:
                progress.revoked = True
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))
        self.fetcher.forget(revoked)
        self._key_mismatch_reported.difference_update(revoked)
        if revoked:
            log.info(
                "partitions_revoked",
                destination=self.name,
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
            )

    def _give_up(self, revoked: set[TopicPartition]) -> None:
        """Cancel batches holding items of revoked partitions; place their other items again."""

        def doomed(item: Item) -> bool:
            record = item.ticket.record
            return TopicPartition(record.topic, record.partition) in revoked

        abandoned, sealed = self.batcher.drop(doomed, list(self._in_flight))
        for batch in abandoned:
            task = self._in_flight.pop(batch, None)
            if task is not None:
                task.cancel()
        if abandoned:
            log.info(
                "revoked_batches_cancelled",
                destination=self.name,
                batches=len(abandoned),
                note="the new owner delivers them from the committed offset",
            )
        for batch in sealed:
            self._dispatch(batch)

    # -- hot path ----------------------------------------------------------------------------

    async def _note_fetch_positions(self) -> None:
        """Remember how far the client fetched, now that every record it returned is tracked.

        Transaction markers and aborted records move the position without being handed over;
        without this a partition ending in one would never be committed to its end (lag 1).
        A partition whose rewind failed is skipped: its position may be past lost records.
        """
        for tp, progress in list(self.progress.items()):
            if tp in self.fetcher.unsafe or tp in self.fetcher.failing_since:
                continue
            try:
                position = await self.consumer.position(tp)
            except Exception:  # revoked meanwhile; the next fetch tells
                continue
            if self.progress.get(tp) is progress and tp not in self.fetcher.unsafe:
                progress.fetched_to = position

    def _next_offset(self, tp: TopicPartition) -> int | None:
        progress = self.progress.get(tp)
        return progress.next_offset if progress is not None else None

    def _ingest(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        progress = self.progress.get(tp)
        if progress is None:  # a fetch raced a revoke
            return
        self.stats.consumed += len(messages)
        # counted here and added to the metric once per fetch: Counter.inc takes a lock
        counts: dict[tuple[str, str], int] = {}
        for routed in route(self._route, [consumed(message) for message in messages]):
            record = routed.record
            value, key = record.value, record.key
            ticket = progress.track(record.offset, len(value or b"") + len(key or b""))
            try:
                self._apply(routed, ticket)
                event_type = routed.event_type
            except Exception as exc:  # a bug or an input nobody foresaw: this record only
                event_type = INVALID
                self._internal_error(record, ticket, exc, "handling the record")
            ticket.release()
            if event_type is not None:
                counted = (record.topic, event_type)
                counts[counted] = counts.get(counted, 0) + 1
        for (topic, event_type), count in counts.items():
            self._consumed_counter(topic, event_type).inc(count)

    def _apply(self, routed: Routed, ticket: Ticket) -> None:
        """Carry out one record's routing outcome: batch, dead-letter, skip or filter."""
        record, event = routed.record, routed.event
        if routed.event_type is None:
            self.stats.filtered += 1
            return
        if routed.crash is not None and event is None:
            raise routed.crash  # logged and dead-lettered as an internal error
        if routed.key_mismatch:
            self._key_mismatch(record)
        if routed.items is not None and event is not None:
            ref = _ItemRef(ticket, record, event)
            add, dispatch = self.batcher.add, self._dispatch
            for item in routed.items:
                ticket.hold()
                item.ticket = ref
                for batch in add(item):
                    dispatch(batch)
        elif routed.letter is not None:
            self._dead_letter([(self._routed_letter(routed), ticket)])
        elif routed.skipped and event is not None:
            self._skipped(event)

    def _routed_letter(self, routed: Routed) -> DeadLetter:
        assert routed.letter is not None
        destination, reason, error = routed.letter
        record, event = routed.record, routed.event
        if routed.crash is not None:
            log.error(
                "transform_failed",
                destination=self.name,
                event_id=event.event_id if event else None,
                exc_info=routed.crash,
            )
            error = self._short_error(routed.crash)
        if event is None:  # an input error
            return DeadLetter(record, destination, reason, error, stub=reason == "too_large")
        return self._letter(record, event, reason, error)

    def _letter(self, record: Consumed, event: LoyaltyEvent, reason: str, error: str) -> DeadLetter:
        return DeadLetter(
            record, self.name, reason, error, event_id=event.event_id, event_type=event.event_type
        )

    def _internal_error(
        self, record: Consumed, ticket: Ticket, exc: BaseException, doing: str
    ) -> None:
        log.exception(
            "internal_error",
            destination=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            doing=doing,
        )
        letter = DeadLetter(record, self.name, "internal_error", self._short_error(exc))
        self._dead_letter([(letter, ticket)])

    def _short_error(self, exc: BaseException) -> str:
        return self._redactor.text(describe(exc))[:_MAX_ERROR_TEXT]

    def _key_mismatch(self, record: Consumed) -> None:
        metrics.KEY_MISMATCH.labels(self.name, record.topic).inc()
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self._key_mismatch_reported:
            self._key_mismatch_reported.add(tp)
            log.warning(
                "key_is_not_member_id",
                destination=self.name,
                partition=f"{record.topic}:{record.partition}",
                offset=record.offset,
                note="per-member order needs key = member_id (README: The event contract); "
                "logged once per partition, counted in relay_key_mismatch_total",
            )

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
        self._in_flight[batch] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: Batch) -> None:
        try:
            try:
                request = self.destination.build(batch.group, batch.items, self.dest_settings)
                endpoint = request.endpoint
                started = time.perf_counter()
                result = await self.sender.deliver(request)
                elapsed = time.perf_counter() - started
            except Exception as exc:  # never ends the pipeline: this batch's events only
                log.exception("internal_error", destination=self.name, doing="sending a batch")
                failure = Failure("internal_error", self._short_error(exc), None)
                result = Result(0, None, dict.fromkeys(range(len(batch.items)), failure))
                endpoint, elapsed = batch.group, 0.0
            self._settle(batch, result, endpoint, elapsed)
        finally:
            self._in_flight.pop(batch, None)
            if not self._cancelling and not batch.abandoned:
                for released in self.batcher.finish(batch):
                    self._dispatch(released)

    def _settle(self, batch: Batch, result: Result, endpoint: str, elapsed: float) -> None:
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
                        event_id=ref.event_id,
                        event_type=ref.event_type,
                    ),
                    ref.ticket,
                )
            )
        if letters:
            self._dead_letter(letters)
        if delivered_refs:  # labels() once per batch: it takes a lock and builds a key
            observe = metrics.END_TO_END_LATENCY.labels(self.name).observe
            now = time.time()
            # a sample: parsing occurred_at and observing cost more than the rest of settling
            for ref in delivered_refs[::_LATENCY_SAMPLE_EVERY]:
                _observe_latency(observe, ref.occurred_at, now)
            for ref in delivered_refs:
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

    # -- dead letters ------------------------------------------------------------------------

    def _dead_letter(self, letters: list[tuple[DeadLetter, Ticket]]) -> None:
        """Write dead letters in the background; their tickets stay held until acknowledged."""
        for _, ticket in letters:
            ticket.hold()
        task = asyncio.create_task(
            _guarded(lambda: self._write_dead_letters(letters), self.name, "dead-letter write")
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_dead_letters(self, letters: list[tuple[DeadLetter, Ticket]]) -> None:
        """Write until every letter is acknowledged; re-send only the unacknowledged ones.

        A letter the broker refuses for good (or keeps refusing for a minute) is written as a
        stub that always fits; if even the stub is refused the destination halts (stops
        consuming, ``/readyz`` false) and the write is retried every 30 s: nothing is
        committed past these records until the broker takes them.
        """
        pending = letters
        delay = 0.5
        started = time.monotonic()
        while True:
            outcomes = await self.dead_letters.write([letter for letter, _ in pending])
            retry: list[tuple[DeadLetter, Ticket]] = []
            for (letter, ticket), error in zip(pending, outcomes, strict=True):
                if error is None:
                    self._dead_lettered(letter, ticket)
                    continue
                given_up = not _retriable(error) or (
                    time.monotonic() - started > _DEAD_LETTER_RETRY_SECONDS
                )
                if given_up and not letter.stub:
                    log.warning(
                        "dead_letter_refused",
                        destination=self.name,
                        error=self._short_error(error),
                        action="writing a stub dead letter (headers and a truncated value)",
                    )
                    letter = letter.as_stub()
                elif given_up:
                    self._halt(f"the broker refuses the stub dead letter: {describe(error)}")
                else:
                    log.error(
                        "dead_letter_write_failed",
                        destination=self.name,
                        error=self._short_error(error),
                    )
                retry.append((letter, ticket))
            if not retry:
                self._unhalt()
                return
            pending = retry
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DEAD_LETTER_BACKOFF_CAP)

    def _dead_lettered(self, letter: DeadLetter, ticket: Ticket) -> None:
        self.stats.by_reason[letter.reason] = self.stats.by_reason.get(letter.reason, 0) + 1
        if letter.destination == "*":
            self.stats.input_errors += 1
        else:
            self.stats.dead_lettered += 1
            metrics.DELIVERIES.labels(self.name, "dead_lettered").inc()
        ticket.release()

    def _halt(self, reason: str) -> None:
        if self.halted is None:
            log.error(
                "destination_halted",
                destination=self.name,
                reason=self._redactor.text(reason)[:_MAX_ERROR_TEXT],
                action="consuming stopped; fix the .dlq topic (size limit, ACLs, replicas); "
                "the write is retried every 30 s and consuming resumes once it succeeds",
            )
            metrics.DESTINATION_HALTED.labels(self.name).set(1)
        self.halted = reason

    def _unhalt(self) -> None:
        if self.halted is not None:
            self.halted = None
            metrics.DESTINATION_HALTED.labels(self.name).set(0)
            log.warning("destination_resumed", destination=self.name)

    async def _salvage(self, tp: TopicPartition, offset: int) -> int | None:
        """Read the record at ``offset`` without CRC checks and dead-letter it; return next."""
        if self._salvage_consumer is None:
            consumer = make_consumer(self.settings.kafka, None, check_crcs=False)
            await consumer.start()
            self._salvage_consumer = consumer
        consumer = self._salvage_consumer
        try:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            got = await consumer.getmany(tp, timeout_ms=5_000, max_records=1)
        except Exception as exc:
            log.error(
                "salvage_failed",
                destination=self.name,
                partition=f"{tp.topic}:{tp.partition}",
                offset=offset,
                error=describe(exc),
                note="the records stay in Kafka; the partition stays reported",
            )
            return None
        records = got.get(tp) or []
        progress = self.progress.get(tp)
        if not records or progress is None:
            return None
        message = records[0]
        record = consumed(message)
        ticket = progress.track(message.offset, len(message.value or b""))
        if self.writes_input_errors:
            cause = self.fetcher.unreadable.get(tp, "")
            error = f"the batch holding this record could not be read: {cause}"
            self._dead_letter([(DeadLetter(record, "*", "unreadable_batch", error), ticket)])
        ticket.release()
        return int(message.offset) + 1

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
                # bounded: with the broker gone aiokafka waits for a coordinator forever
                await asyncio.wait_for(self.consumer.commit(offsets), _KAFKA_CALL_TIMEOUT)
            except (KafkaError, TimeoutError) as exc:
                log.warning("commit_failed", destination=self.name, error=str(exc) or "timeout")
                return
            for tp, position in offsets.items():
                progress = self.progress.get(tp)
                if progress is not None:
                    progress.committed = position

    def _apply_backpressure(self) -> int:
        """Pause or resume the partitions; return how many more records may be fetched.

        The bounds count consumed records not yet committed, and their bytes (not only items
        in flight): they are also the most a crash can make the next owner deliver again.
        """
        uncommitted = sum(len(progress.tickets) for progress in self.progress.values())
        held_bytes = sum(progress.bytes for progress in self.progress.values())
        if uncommitted >= self._max_buffered // 2 or held_bytes >= self._max_buffered_bytes // 2:
            self._commit_soon.set()
        waiting = max(self.batcher.items_waiting, uncommitted)
        full = waiting >= self._max_buffered or held_bytes >= self._max_buffered_bytes
        # an open breaker (or refused credentials) pauses at once: events wait in Kafka
        unwell = (waiting > 0 and not self.sender.healthy) or self.halted is not None
        if not self._paused and (full or unwell):
            partitions = list(self.consumer.assignment())
            self.consumer.pause(*partitions)
            self._paused = True
            log.warning(
                "partitions_paused",
                destination=self.name,
                waiting_items=waiting,
                waiting_bytes=held_bytes,
                reason="destination is failing" if unwell else "destination is slow; buffer full",
            )
        elif (
            self._paused
            and not unwell
            and waiting <= self._max_buffered // 2
            and held_bytes <= self._max_buffered_bytes // 2
        ):
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
    """What the pipeline keeps with each item: its ticket, source record and event identity.

    Not the decoded event itself: its ``data`` may weigh many times the record's bytes.
    """

    __slots__ = ("event_id", "event_type", "occurred_at", "record", "ticket")

    def __init__(self, ticket: Ticket, record: Consumed, event: LoyaltyEvent) -> None:
        self.ticket = ticket
        self.record = record
        self.event_id = event.event_id
        self.event_type = event.event_type
        self.occurred_at = event.occurred_at


async def _guarded(run: Callable[[], Awaitable[None]], destination: str, what: str = "") -> None:
    """Run a background coroutine; an unexpected exception is logged with its traceback.

    A loop that fails is started again after a second, so the pipeline never loses its
    linger or commit loop to one bad moment.
    """
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_task_failed", destination=destination, task=what or None)
            if what:  # a one-shot task: its failure is logged, nothing to restart
                return
            await asyncio.sleep(1.0)


def _retriable(error: BaseException) -> bool:
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))


def _observe_latency(observe: Callable[[float], None], occurred_at: str, now: float) -> None:
    try:
        occurred = datetime.fromisoformat(occurred_at).timestamp()
    except (ValueError, OverflowError):
        return
    observe(max(0.0, now - occurred))
