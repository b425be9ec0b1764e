"""Dead letters: the original record, unchanged, plus headers that say what failed and why.

For source topic ``T`` the dead letter goes to ``T.dlq`` (a replayed dead letter that fails
again goes back to the same ``.dlq`` topic). Key and value bytes are the original ones and the
original headers are kept; earlier ``dlq.*`` headers are replaced, not repeated. One record
per event and failed destination; ``*`` is the destination for input errors.

``dlq.*`` headers already on a record are trusted only when it also carries
``relay.replay_id`` (it was sent back by ``replay``): a producer's stray ``dlq.original_topic``
cannot steer a live record's dead letter into another topic.

When the broker refuses a dead letter for good (too large for the ``.dlq`` topic, for one),
the pipeline writes a *stub* instead: the ``dlq.*`` headers plus ``dlq.truncated=true`` and
``dlq.original_value_bytes``, the original headers left out, and the value cut to
``RELAY_DEAD_LETTER_STUB_BYTES``. A stub says what failed and where the original sits (its
``dlq.original_*`` coordinates); it cannot be replayed as it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    stub: bool = False

    def as_stub(self) -> DeadLetter:
        return dataclasses.replace(self, stub=True)


def replayed(headers: Iterable[tuple[str, bytes]]) -> bool:
    """True for a record that ``replay`` sent back: only then are its dlq.* headers trusted."""
    return header(headers, REPLAY_ID_HEADER) is not None


def dlq_topic(record: Consumed) -> str:
    """Where a dead letter for ``record`` goes: ``<original topic>.dlq``."""
    topic = record.topic
    if replayed(record.headers):
        original = header(record.headers, "dlq.original_topic")
        if original:
            topic = original.decode("utf-8", errors="replace")
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
    # a replayed record keeps pointing at where it was first consumed
    old = record.headers if replayed(record.headers) else ()
    original_topic = header(old, "dlq.original_topic") or record.topic.encode()
    original_partition = header(old, "dlq.original_partition") or str(record.partition).encode()
    original_offset = header(old, "dlq.original_offset") or str(record.offset).encode()
    replay_count = header(old, "dlq.replay_count")
    previous_attempts = _int(header(old, "dlq.attempts"))
    kept = [
        (k, v)
        for k, v in record.headers
        if not letter.stub and not k.startswith(HEADER_PREFIX) and k != REPLAY_DESTINATION_HEADER
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
    if letter.stub:
        dlq.append(("dlq.truncated", b"true"))
        dlq.append(("dlq.original_value_bytes", str(len(record.value or b"")).encode()))
    return kept + dlq


def _int(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


class DeadLetterWriter:
    """Produces dead letters and waits for the broker's acknowledgement."""

    def __init__(self, producer: Any, redactor: Redactor, stub_bytes: int = 64 * 1024) -> None:
        self._producer = producer
        self._redactor = redactor
        self._stub_bytes = stub_bytes

    async def write(self, letters: Sequence[DeadLetter]) -> list[BaseException | None]:
        """Write every letter; return, per letter, None once acknowledged or the error.

        Never raises for a letter the broker or the client refuses: the caller decides per
        letter whether to send it again, as a stub, or to stop.
        """
        outcomes: list[BaseException | None] = [None] * len(letters)
        waiting: list[tuple[int, asyncio.Future[Any]]] = []
        for index, letter in enumerate(letters):
            record = letter.record
            value = record.value
            key = record.key
            if letter.stub:
                value = (value or b"")[: self._stub_bytes]
                key = key[:1024] if key else key
            try:
                future = await self._producer.send(
                    dlq_topic(record),
                    value=value,
                    key=key,
                    headers=build_headers(letter, self._redactor),
                )
            except Exception as exc:  # too large for the client, buffer full, producer closed
                outcomes[index] = exc
            else:
                waiting.append((index, future))
        results = await asyncio.gather(*(future for _, future in waiting), return_exceptions=True)
        for (index, _), result in zip(waiting, results, strict=True):
            if isinstance(result, BaseException):
                outcomes[index] = result
        for letter, outcome in zip(letters, outcomes, strict=True):
            if outcome is not None:
                continue
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
                truncated=letter.stub or None,
                error=self._redactor.text(letter.error)[:300],
            )
        return outcomes
