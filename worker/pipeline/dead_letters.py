"""The dead-letter stage: write letters in the background until the broker acknowledges them.

A letter's ticket stays held until its produce is acknowledged, so nothing is committed past
an event whose dead letter is not safely written. A letter the broker refuses for good (or
keeps refusing for a minute) is written as a stub that always fits; if even the stub is
refused the destination halts (stops consuming, ``/readyz`` false) and the write is retried
every 30 s until the broker takes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from aiokafka.errors import KafkaError

from worker.deadletter import DeadLetter, DeadLetterWriter
from worker.errors import describe
from worker.observability import metrics
from worker.observability.redact import Redactor
from worker.offsets import Ticket
from worker.pipeline.common import MAX_ERROR_TEXT, PipelineStats, Tasks, guarded, short_error

log = structlog.get_logger("worker.pipeline")

RETRY_SECONDS = 60.0  # retriable produce errors are retried this long before the stub fallback
BACKOFF_CAP = 30.0

Letters = Sequence[tuple[DeadLetter, Ticket]]


class DeadLetterOutbox:
    def __init__(
        self,
        name: str,
        writer: DeadLetterWriter,
        redactor: Redactor,
        stats: PipelineStats,
        tasks: Tasks,
    ) -> None:
        self.name = name
        self._writer = writer
        self._redactor = redactor
        self._stats = stats
        self._tasks = tasks
        self.halted: str | None = None  # the broker refuses even stub dead letters

    def send(self, letters: Letters) -> None:
        """Write in the background; each ticket is held until its letter is acknowledged."""
        for _, ticket in letters:
            ticket.hold()
        self._tasks.spawn(guarded(lambda: self._write(letters), self.name, "dead-letter write"))

    async def _write(self, letters: Letters) -> None:
        """Write until every letter is acknowledged; re-send only the unacknowledged ones."""
        pending = letters
        delay = 0.5
        started = time.monotonic()
        while True:
            outcomes = await self._writer.write([letter for letter, _ in pending])
            retry: list[tuple[DeadLetter, Ticket]] = []
            for (letter, ticket), error in zip(pending, outcomes, strict=True):
                if error is None:
                    self._written(letter, ticket)
                    continue
                given_up = not _retriable(error) or time.monotonic() - started > RETRY_SECONDS
                retry.append((self._refused(letter, error, given_up), ticket))
            if not retry:
                self._unhalt()
                return
            pending = retry
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    def _refused(self, letter: DeadLetter, error: BaseException, given_up: bool) -> DeadLetter:
        """The letter to try next after the broker refused ``letter``."""
        if given_up and not letter.stub:
            log.warning(
                "dead_letter_refused",
                destination=self.name,
                error=short_error(self._redactor, error),
                action="writing a stub dead letter (headers and a truncated value)",
            )
            return letter.as_stub()
        if given_up:
            self._halt(f"the broker refuses the stub dead letter: {describe(error)}")
        else:
            log.error(
                "dead_letter_write_failed",
                destination=self.name,
                error=short_error(self._redactor, error),
            )
        return letter

    def _written(self, letter: DeadLetter, ticket: Ticket) -> None:
        stats = self._stats
        stats.by_reason[letter.reason] = stats.by_reason.get(letter.reason, 0) + 1
        if letter.destination == "*":
            stats.input_errors += 1
        else:
            stats.dead_lettered += 1
            metrics.DELIVERIES.labels(self.name, "dead_lettered").inc()
        ticket.release()

    def _halt(self, reason: str) -> None:
        if self.halted is None:
            log.error(
                "destination_halted",
                destination=self.name,
                reason=self._redactor.text(reason)[:MAX_ERROR_TEXT],
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


def _retriable(error: BaseException) -> bool:
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))
