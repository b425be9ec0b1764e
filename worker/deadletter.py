"""Dead letters: the original record, unchanged, plus headers that say what failed and why.

For source topic ``T`` the dead letter goes to ``T.dlq`` (a replayed dead letter that fails
again goes back to the same ``.dlq`` topic). Key and value bytes are the original ones and the
original headers are kept; earlier ``dlq.*`` headers are replaced, not repeated. One record
per event and failed destination; ``*`` is the destination for input errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from worker.events import Consumed
from worker.observability import metrics
from worker.observability.redact import Redactor

log = structlog.get_logger("worker.deadletter")

DLQ_SUFFIX: Final = ".dlq"
MAX_ERROR_BYTES: Final = 1024
HEADER_PREFIX: Final = "dlq."
# set by `replay` on a record it sends back to the live topic: only this destination takes it
REPLAY_DESTINATION_HEADER: Final = "relay.replay_destination"
REPLAY_ID_HEADER: Final = "relay.replay_id"
# the coordinates (topic/partition/offset) of the dead letter a replayed record is a copy of
REDRIVE_OF_HEADER: Final = "relay.redrive_of"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Consumed
    destination: str  # "braze", "moengage", ... or "*" for input errors
    reason: str
    error: str
    http_status: int | None = None
    attempts: int = 0
    event_id: str | None = None
    event_type: str | None = None


def dlq_topic(record: Consumed) -> str:
    """Where a dead letter for ``record`` goes: ``<original topic>.dlq``."""
    original = header(record.headers, "dlq.original_topic")
    topic = original.decode() if original else record.topic
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def header(headers: Iterable[tuple[str, bytes | None]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def build_headers(
    letter: DeadLetter, redactor: Redactor, now: datetime | None = None
) -> list[tuple[str, bytes]]:
    """Original headers (minus old dlq.*) plus this failure's dlq.* headers."""
    record = letter.record
    old = record.headers
    # a replayed record keeps pointing at where it was first consumed
    original_topic = header(old, "dlq.original_topic") or record.topic.encode()
    original_partition = header(old, "dlq.original_partition") or str(record.partition).encode()
    original_offset = header(old, "dlq.original_offset") or str(record.offset).encode()
    replay_count = header(old, "dlq.replay_count")
    previous_attempts = _int(header(old, "dlq.attempts"))
    kept = [
        (k, v) for k, v in old if not k.startswith(HEADER_PREFIX) and k != REPLAY_DESTINATION_HEADER
    ]
    error = redactor.text(letter.error).encode("utf-8", errors="replace")[:MAX_ERROR_BYTES]
    failed_at = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    dlq: list[tuple[str, bytes]] = [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.error", error),
        ("dlq.destination", letter.destination.encode()),
        ("dlq.http_status", str(letter.http_status or "").encode()),
        ("dlq.attempts", str(previous_attempts + letter.attempts).encode()),
        ("dlq.original_topic", original_topic),
        ("dlq.original_partition", original_partition),
        ("dlq.original_offset", original_offset),
        ("dlq.failed_at", failed_at.replace("+00:00", "Z").encode()),
    ]
    if letter.event_id:
        dlq.append(("dlq.event_id", letter.event_id.encode()))
    if letter.event_type:
        dlq.append(("dlq.event_type", letter.event_type.encode()))
    if replay_count is not None:
        dlq.append(("dlq.replay_count", replay_count))
    return kept + dlq


def _int(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


class DeadLetterWriter:
    """Produces dead letters and waits for the broker's acknowledgement."""

    def __init__(self, producer: Any, redactor: Redactor) -> None:
        self._producer = producer
        self._redactor = redactor

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Write every letter; returns once all are acknowledged (raises if the broker fails)."""
        futures = []
        for letter in letters:
            record = letter.record
            futures.append(
                await self._producer.send(
                    dlq_topic(record),
                    value=record.value,
                    key=record.key,
                    headers=build_headers(letter, self._redactor),
                )
            )
        await asyncio.gather(*futures)
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.destination, letter.reason).inc()
            log.warning(
                "dead_lettered",
                destination=letter.destination,
                reason=letter.reason,
                http_status=letter.http_status,
                attempts=letter.attempts,
                event_id=letter.event_id,
                trace_id=letter.event_id,
                topic=letter.record.topic,
                partition=letter.record.partition,
                offset=letter.record.offset,
                error=self._redactor.text(letter.error)[:300],
            )
