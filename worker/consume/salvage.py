"""Reading one record the consumer cannot read, with CRC checks off (``fetch.py``, step 3)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import TopicPartition

from worker.config import KafkaSettings
from worker.consume.consumer import consumed
from worker.errors import describe
from worker.events import Consumed
from worker.kafka import make_consumer

log = structlog.get_logger("worker.consume")

_READ_TIMEOUT_MS = 5_000
_STOP_TIMEOUT = 10.0


class SalvageReader:
    """A group-less consumer, started on first use, that reads single records by offset."""

    def __init__(self, kafka: KafkaSettings, destination: str) -> None:
        self._kafka = kafka
        self._destination = destination
        self._consumer: Any = None

    async def read(self, tp: TopicPartition, offset: int) -> Consumed | None:
        """The record at ``offset`` (or the next one the log holds), or None if unreadable."""
        try:
            if self._consumer is None:
                consumer = make_consumer(self._kafka, None, check_crcs=False)
                await consumer.start()
                self._consumer = consumer
            self._consumer.assign([tp])
            self._consumer.seek(tp, offset)
            got = await self._consumer.getmany(tp, timeout_ms=_READ_TIMEOUT_MS, max_records=1)
        except Exception as exc:
            log.error(
                "salvage_failed",
                destination=self._destination,
                partition=f"{tp.topic}:{tp.partition}",
                offset=offset,
                error=describe(exc),
                note="the records stay in Kafka; the partition stays reported",
            )
            return None
        records = got.get(tp) or []
        return consumed(records[0]) if records else None

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), _STOP_TIMEOUT)
