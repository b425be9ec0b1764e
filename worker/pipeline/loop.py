"""One destination's loop: consume → decode → route → transform → batch → deliver → commit.

Each destination has its own pipeline and its own consumer group (``<group>.<destination>``),
so an outage at one destination makes lag there and nowhere else. The stages, each its own
module in this package and importing only the stages after it:

* ``worker.consume`` fetches records and never skips one (rewind, isolate, report, salvage);
* ``intake`` gives every record a ticket (``worker.offsets``) and carries out its routing
  outcome (``worker.route``): items, a dead letter, a skip; input errors are dead-lettered
  once, by the pipeline marked ``writes_input_errors``;
* ``batches`` packs items into API-sized batches with per-member order (``worker.batching``);
* ``dispatch`` sends each sealed batch (``worker.deliver.sender``) and settles its items;
* ``dead_letters`` writes what failed and holds its ticket until the broker acknowledges it;
* ``commit`` commits the contiguous finished prefix of each partition and says when the
  records or bytes held reach ``max_buffered_events`` / ``max_buffered_bytes``: the loop
  then pauses the partitions, so memory stays bounded however long an outage lasts.

On a revoke, after a bounded wait, batches holding items of the revoked partitions are
cancelled and their parked items dropped: the old owner never sends after giving a partition
up, so per-member order holds across rebalances.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from worker.batching import Batcher
from worker.config import Settings
from worker.consume import Consumer, GuardedFetcher, RebalanceListener, TopicPartition
from worker.consume.salvage import SalvageReader
from worker.deadletter import DeadLetterWriter
from worker.decode import SharedDecoder, decode
from worker.deliver.sender import Sender
from worker.destinations.base import Destination
from worker.events import Consumed
from worker.kafka import make_consumer, start_with_retry
from worker.observability import metrics
from worker.observability.redact import Redactor
from worker.offsets import PartitionProgress
from worker.pipeline.batches import BatchStage
from worker.pipeline.commit import KAFKA_CALL_TIMEOUT, Backpressure, BufferLimits, Committer
from worker.pipeline.common import PipelineStats, Tasks, guarded
from worker.pipeline.dead_letters import DeadLetterOutbox
from worker.pipeline.dispatch import Dispatcher
from worker.pipeline.intake import Intake
from worker.route import Route

log = structlog.get_logger("worker.pipeline")

_FETCH_TIMEOUT_MS = 100
_MAX_RECORDS = 2000
_REVOKE_WAIT_SECONDS = 20.0
_FULL_WAIT_SECONDS = 0.01


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
        self.settings = settings
        self.sender = sender
        self.topics = tuple(topics)
        self.group_id = group_id
        self.writes_input_errors = writes_input_errors
        self.stats = PipelineStats()
        self.assigned = False  # joined the group and received an assignment
        self.draining = False
        self.consumer: Consumer = (consumer_factory or self._default_consumer)()
        self._tasks = Tasks()
        redactor = redactor or Redactor(settings.secrets)
        rules = _route_rules(destination, settings, writes_input_errors, decoder, accept)
        self._wire(destination, dead_letters, redactor, rules)
        self._salvage_reader = SalvageReader(settings.kafka, self.name)
        self.fetcher = GuardedFetcher(
            self.consumer,
            self.name,
            self.committer.next_offset,
            unreadable_after=settings.worker.unreadable_partition_seconds,
            salvage=self._salvage,
        )

    def _wire(
        self,
        destination: Destination[Any],
        dead_letters: DeadLetterWriter,
        redactor: Redactor,
        rules: Route,
    ) -> None:
        """Build the stages, each handed the ones after it (see the module docstring)."""
        worker = self.settings.worker
        dest_settings = self.settings.destinations[destination.name]
        self.committer = Committer(
            self.name,
            self.consumer,
            BufferLimits(worker.max_buffered_events, worker.max_buffered_bytes),
        )
        self.backpressure = Backpressure(self.name, self.consumer, self.committer)
        self.outbox = DeadLetterOutbox(self.name, dead_letters, redactor, self.stats, self._tasks)
        self.dispatcher = Dispatcher(
            destination,
            dest_settings,
            self.sender,
            self.outbox,
            self.stats,
            self._tasks,
            redactor,
            trace_items=worker.log_level == "debug",
        )
        self.batches = BatchStage(
            destination, dest_settings, self.dispatcher, worker.linger_ms / 1000.0
        )
        self.intake = Intake(
            self.name, rules, self.stats, self.committer, self.batches, self.outbox, redactor
        )

    def _default_consumer(self) -> Any:
        return make_consumer(self.settings.kafka, self.group_id)

    @property
    def progress(self) -> dict[TopicPartition, PartitionProgress]:
        return self.committer.progress

    @property
    def batcher(self) -> Batcher:
        return self.batches.batcher

    @property
    def halted(self) -> str | None:
        return self.outbox.halted

    async def start(self) -> None:
        listener = RebalanceListener(self.partitions_assigned, self.partitions_revoked)
        self.consumer.subscribe(self.topics, listener=listener)
        await start_with_retry(
            self.consumer, f"consumer {self.group_id}", self.settings.kafka.unreachable_exit_seconds
        )

    async def run(self, stop: asyncio.Event, until: Callable[[], bool] | None = None) -> None:
        """Consume until ``stop`` is set (or ``until()`` is true), then drain and commit."""
        background = [
            asyncio.create_task(guarded(self.batches.linger_loop, self.name)),
            asyncio.create_task(
                guarded(lambda: self.committer.commit_loop(self._report_gauges), self.name)
            ),
        ]
        try:
            while not stop.is_set() and not (until and until()):
                room = self.backpressure.apply(
                    self.batches.items_waiting, self.sender.healthy, self.halted is not None
                )
                if room <= 0 and not self.backpressure.paused:
                    await asyncio.sleep(_FULL_WAIT_SECONDS)  # until deliveries make room
                    continue
                fetched = await self.fetcher.fetch(
                    _FETCH_TIMEOUT_MS, max(1, min(_MAX_RECORDS, room))
                )
                for tp, records in fetched.items():
                    self.intake.ingest(tp, records)
                unsure = self.fetcher.unsafe | self.fetcher.failing_since.keys()
                await self.committer.note_fetch_positions(unsure)
            await self.drain(self.settings.worker.drain_seconds)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._salvage_reader.close()

    async def drain(self, timeout: float) -> bool:
        """Flush open batches and wait for in-flight work; commit what finished."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # items parked behind a finishing batch land in new open batches: seal those too
            self.batches.seal_all()
            if not self._tasks and not self.batches.items_waiting:
                break
            if self._tasks:
                await self._tasks.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            else:
                await asyncio.sleep(0.01)
        finished = not self._tasks and not self.batches.items_waiting
        if not finished:
            self.dispatcher.cancelling = True
            log.warning(
                "drain_timeout",
                destination=self.name,
                unfinished_batches=len(self._tasks),
                note="their offsets stay uncommitted and will be redelivered",
            )
            await self._tasks.cancel_all()
        await self.commit()
        return finished

    async def stop(self) -> None:
        try:
            async with asyncio.timeout(KAFKA_CALL_TIMEOUT):
                await self.consumer.stop()
        except (KafkaError, TimeoutError) as exc:
            log.warning("consumer_stop_failed", destination=self.name, error=str(exc) or "timeout")

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        await self.committer.commit(only)

    def problem(self) -> str | None:
        """Why this pipeline is not healthy (for /readyz), or None."""
        if self.halted:
            return f"{self.name}: halted: {self.halted}"
        unreadable = self.fetcher.problem()
        return f"{self.name}: {unreadable}" if unreadable else None

    def lag(self) -> Mapping[TopicPartition, int]:
        return self.committer.lag()

    def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.committer.assign(assigned)
        self.backpressure.assigned(assigned)
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
        self.batches.seal_all()
        wait = 0.0
        if not self.draining:
            wait = min(self.settings.worker.drain_seconds, _REVOKE_WAIT_SECONDS)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.committer.outstanding(revoked):
            await asyncio.sleep(0.05)
        self.batches.give_up(set(revoked))
        await self.commit(only=revoked)
        self.committer.forget(revoked)
        self.fetcher.forget(revoked)
        self.intake.forget(revoked)
        if revoked:
            log.info(
                "partitions_revoked",
                destination=self.name,
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
            )

    async def _salvage(self, tp: TopicPartition, offset: int) -> int | None:
        """Read the record at ``offset`` without CRC checks and dead-letter it; return next."""
        record = await self._salvage_reader.read(tp, offset)
        if record is None:
            return None
        cause = self.fetcher.unreadable.get(tp, "")
        if not self.intake.unreadable(record, cause, dead_letter=self.writes_input_errors):
            return None
        return record.offset + 1

    def _report_gauges(self) -> None:
        metrics.IN_FLIGHT.labels(self.name).set(self.batches.items_waiting)
        metrics.RATE_LIMIT.labels(self.name).set(self.sender.limiter.rate)


def _route_rules(
    destination: Destination[Any],
    settings: Settings,
    writes_input_errors: bool,
    decoder: SharedDecoder | None,
    accept: Callable[[Consumed], bool] | None,
) -> Route:
    routed = frozenset(t for t, names in settings.routing.items() if destination.name in names)
    max_depth = settings.worker.max_nesting_depth
    decoding = decoder.decode if decoder else functools.partial(decode, max_depth=max_depth)
    dest_settings = settings.destinations[destination.name]
    return Route(destination, dest_settings, routed, writes_input_errors, decoding, accept)
