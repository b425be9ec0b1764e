"""The route stage in the pipeline: each fetched record gets a ticket and its routing outcome
(``worker.route``) is carried out: items to the batch stage, dead letters, skips, filters.

Nothing a record holds can end the pipeline: an exception while handling one record becomes
an ``internal_error`` dead letter for that record (plus a log line with the traceback).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import structlog
from aiokafka import TopicPartition

from worker.deadletter import DeadLetter
from worker.events import Consumed, LoyaltyEvent
from worker.observability import metrics
from worker.observability.redact import Redactor
from worker.offsets import Ticket
from worker.pipeline.batches import BatchStage
from worker.pipeline.commit import Committer
from worker.pipeline.common import ItemRef, PipelineStats, short_error
from worker.pipeline.dead_letters import DeadLetterOutbox
from worker.route import INVALID, Route, Routed, route

log = structlog.get_logger("worker.pipeline")


class Intake:
    def __init__(
        self,
        name: str,
        rules: Route,
        stats: PipelineStats,
        committer: Committer,
        batches: BatchStage,
        outbox: DeadLetterOutbox,
        redactor: Redactor,
    ) -> None:
        self.name = name
        self._rules = rules
        self._stats = stats
        self._committer = committer
        self._batches = batches
        self._outbox = outbox
        self._redactor = redactor
        self._consumed_counters: dict[tuple[str, str], Any] = {}
        self._key_mismatch_reported: set[TopicPartition] = set()

    def ingest(self, tp: TopicPartition, records: Sequence[Consumed]) -> None:
        if tp not in self._committer.progress:  # a fetch raced a revoke
            return
        self._stats.consumed += len(records)
        # counted here and added to the metric once per fetch: Counter.inc takes a lock
        counts: dict[tuple[str, str], int] = {}
        track = self._committer.progress[tp].track
        for routed in route(self._rules, records):
            record = routed.record
            ticket = track(record.offset, len(record.value or b"") + len(record.key or b""))
            try:
                self._apply(routed, ticket)
                event_type = routed.event_type
            except Exception as exc:  # a bug or an input nobody foresaw: this record only
                event_type = INVALID
                self._internal_error(record, ticket, exc)
            ticket.release()
            if event_type is not None:
                counted = (record.topic, event_type)
                counts[counted] = counts.get(counted, 0) + 1
        for (topic, event_type), count in counts.items():
            self._consumed_counter(topic, event_type).inc(count)

    def unreadable(self, record: Consumed, cause: str, *, dead_letter: bool) -> bool:
        """Take a record salvaged from a batch the consumer could not read.

        The pipeline that writes input errors dead-letters it; the others only pass it.
        False if its partition was revoked meanwhile.
        """
        tp = TopicPartition(record.topic, record.partition)
        ticket = self._committer.track(tp, record.offset, len(record.value or b""))
        if ticket is None:
            return False
        if dead_letter:
            error = f"the batch holding this record could not be read: {cause}"
            self._outbox.send([(DeadLetter(record, "*", "unreadable_batch", error), ticket)])
        ticket.release()
        return True

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        self._key_mismatch_reported.difference_update(partitions)

    def _apply(self, routed: Routed, ticket: Ticket) -> None:
        """Carry out one record's routing outcome: batch, dead-letter, skip or filter."""
        record, event = routed.record, routed.event
        if routed.event_type is None:
            self._stats.filtered += 1
            return
        if routed.crash is not None and event is None:
            raise routed.crash  # logged and dead-lettered as an internal error
        if routed.key_mismatch:
            self._key_mismatch(record)
        if routed.items is not None and event is not None:
            ref = ItemRef(ticket, record, event)
            add = self._batches.add
            for item in routed.items:
                ticket.hold()
                item.ticket = ref
                add(item)
        elif routed.letter is not None:
            self._outbox.send([(self._routed_letter(routed), ticket)])
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
            error = short_error(self._redactor, routed.crash)
        if event is None:  # an input error
            return DeadLetter(record, destination, reason, error, stub=reason == "too_large")
        return DeadLetter(
            record, self.name, reason, error, event_id=event.event_id, event_type=event.event_type
        )

    def _internal_error(self, record: Consumed, ticket: Ticket, exc: BaseException) -> None:
        log.exception(
            "internal_error",
            destination=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            doing="handling the record",
        )
        error = short_error(self._redactor, exc)
        self._outbox.send([(DeadLetter(record, self.name, "internal_error", error), ticket)])

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
        self._stats.skipped += 1
        metrics.DELIVERIES.labels(self.name, "skipped").inc()
        log.info(
            "skipped",
            destination=self.name,
            event_type=event.event_type,
            event_id=event.event_id,
            trace_id=event.event_id,
            reason="no call for this event at this destination",
        )
