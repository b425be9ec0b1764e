"""The batch stage: items into API-sized batches (``worker.batching``), sealed batches to the
deliver stage, and batches of revoked partitions taken back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

import structlog
from aiokafka import TopicPartition

from worker.batching import Batch, Batcher
from worker.destinations.base import Destination, Item
from worker.pipeline.dispatch import Dispatcher, Sendable

log = structlog.get_logger("worker.pipeline")


class BatchStage:
    def __init__(
        self,
        destination: Destination[Any],
        dest_settings: Any,
        dispatcher: Dispatcher,
        linger_seconds: float,
    ) -> None:
        self.name = destination.name
        self.batcher = Batcher(
            lambda group: destination.batch_rule(group, dest_settings), time.monotonic
        )
        self._dispatcher = dispatcher
        self._linger = linger_seconds
        dispatcher.on_finished = self._finished

    @property
    def items_waiting(self) -> int:
        return self.batcher.items_waiting

    def add(self, item: Item) -> None:
        for batch in self.batcher.add(item):
            self._dispatcher.send(batch)

    def seal_all(self) -> None:
        for batch in self.batcher.seal_all():
            self._dispatcher.send(batch)

    def _finished(self, batch: Sendable) -> None:
        assert isinstance(batch, Batch)
        for released in self.batcher.finish(batch):
            self._dispatcher.send(released)

    async def linger_loop(self) -> None:
        interval = max(0.005, self._linger / 2)
        while True:
            await asyncio.sleep(interval)
            for batch in self.batcher.due(self._linger):
                self._dispatcher.send(batch)

    def give_up(self, revoked: Collection[TopicPartition]) -> None:
        """Cancel batches holding items of revoked partitions; place their other items again.

        The new owner delivers the cancelled items from the committed offset; this replica must
        not send them afterwards (that would reorder the member).
        """

        def doomed(item: Item) -> bool:
            record = item.ticket.record
            return TopicPartition(record.topic, record.partition) in revoked

        in_flight = [batch for batch in self._dispatcher.in_flight if isinstance(batch, Batch)]
        abandoned, sealed = self.batcher.drop(doomed, in_flight)
        self._dispatcher.cancel(abandoned)
        if abandoned:
            log.info(
                "revoked_batches_cancelled",
                destination=self.name,
                batches=len(abandoned),
                note="the new owner delivers them from the committed offset",
            )
        for batch in sealed:
            self._dispatcher.send(batch)
