"""The deliver stage: one task per sealed batch, and settling its result item by item.

Settling turns the sender's :class:`~worker.deliver.sender.Result` into final states: each
delivered item releases its ticket; each failed one becomes a dead letter (the ticket stays
held until the letter is acknowledged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from worker.deadletter import DeadLetter
from worker.deliver.sender import Failure, Result, Sender
from worker.destinations.base import Destination, Item
from worker.observability import metrics
from worker.observability.redact import Redactor
from worker.offsets import Ticket
from worker.pipeline.common import ItemRef, PipelineStats, Tasks, short_error
from worker.pipeline.dead_letters import DeadLetterOutbox

log = structlog.get_logger("worker.pipeline")

# relay_end_to_end_seconds observes the first delivered item of each batch and every 16th after
LATENCY_SAMPLE_EVERY = 16


class Sendable(Protocol):
    """A sealed batch, as the deliver stage sees it (``worker.batching.Batch``)."""

    group: str
    items: list[Item]
    abandoned: bool  # taken back on a revoke: its task must not finish it


class Dispatcher:
    def __init__(
        self,
        destination: Destination[Any],
        dest_settings: Any,
        sender: Sender,
        outbox: DeadLetterOutbox,
        stats: PipelineStats,
        tasks: Tasks,
        redactor: Redactor,
        *,
        trace_items: bool = False,
    ) -> None:
        self.name = destination.name
        self._destination = destination
        self._dest_settings = dest_settings
        self._sender = sender
        self._outbox = outbox
        self._stats = stats
        self._tasks = tasks
        self._redactor = redactor
        self._trace_items = trace_items  # trace ids of every item, only for debug logs
        self.in_flight: dict[Sendable, asyncio.Task[None]] = {}
        # called with each batch that finished normally: releases items parked behind it
        self.on_finished: Callable[[Sendable], None] = lambda batch: None
        self.cancelling = False  # a drain timed out: cancelled batches release nothing

    def send(self, batch: Sendable) -> None:
        self.in_flight[batch] = self._tasks.spawn(self._deliver(batch))

    def cancel(self, batches: Iterable[Sendable]) -> None:
        for batch in batches:
            task = self.in_flight.pop(batch, None)
            if task is not None:
                task.cancel()

    async def _deliver(self, batch: Sendable) -> None:
        try:
            try:
                request = self._destination.build(batch.group, batch.items, self._dest_settings)
                endpoint = request.endpoint
                started = time.perf_counter()
                result = await self._sender.deliver(request)
                elapsed = time.perf_counter() - started
            except Exception as exc:  # never ends the pipeline: this batch's events only
                log.exception("internal_error", destination=self.name, doing="sending a batch")
                failure = Failure("internal_error", short_error(self._redactor, exc), None)
                result = Result(0, None, dict.fromkeys(range(len(batch.items)), failure))
                endpoint, elapsed = batch.group, 0.0
            self._settle(batch.items, result, endpoint, elapsed)
        finally:
            self.in_flight.pop(batch, None)
            if not self.cancelling and not batch.abandoned:
                self.on_finished(batch)

    def _settle(self, items: Sequence[Item], result: Result, endpoint: str, elapsed: float) -> None:
        delivered, letters = outcomes(self.name, items, result)
        if letters:
            self._outbox.send(letters)
        if delivered:
            observe_latency_sample(self.name, delivered)
            for ref in delivered:
                ref.ticket.release()
        for _, ticket in letters:
            ticket.release()  # the item's own hold; the dead letter holds until acknowledged
        self._stats.delivered += len(delivered)
        metrics.DELIVERIES.labels(self.name, "delivered").inc(len(delivered))
        metrics.BATCH_SIZE.labels(self.name, endpoint).observe(len(items))
        log.info(
            "batch_delivered" if not letters else "batch_finished",
            destination=self.name,
            endpoint=endpoint,
            count=len(items),
            delivered=len(delivered),
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
                trace_ids=[item.event_id for item in items],
            )


def outcomes(
    destination: str, items: Sequence[Item], result: Result
) -> tuple[list[ItemRef], list[tuple[DeadLetter, Ticket]]]:
    """Split a batch's items into the delivered ones and dead letters for the failed ones."""
    delivered: list[ItemRef] = []
    letters: list[tuple[DeadLetter, Ticket]] = []
    for index, item in enumerate(items):
        ref: ItemRef = item.ticket
        failure = result.failed.get(index)
        if failure is None:
            delivered.append(ref)
            continue
        letter = DeadLetter(
            ref.record,
            destination,
            failure.reason,
            failure.error,
            http_status=failure.http_status,
            attempts=result.attempts,
            event_id=ref.event_id,
            event_type=ref.event_type,
        )
        letters.append((letter, ref.ticket))
    return delivered, letters


def observe_latency_sample(destination: str, delivered: Sequence[ItemRef]) -> None:
    """``relay_end_to_end_seconds`` for a sample: parsing occurred_at costs more than settling."""
    observe = metrics.END_TO_END_LATENCY.labels(destination).observe
    now = time.time()
    for ref in delivered[::LATENCY_SAMPLE_EVERY]:
        try:
            occurred = datetime.fromisoformat(ref.occurred_at).timestamp()
        except (ValueError, OverflowError):
            continue
        observe(max(0.0, now - occurred))
