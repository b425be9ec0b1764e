"""`loyalty-relay dlq inspect`: what is parked in the dead-letter topics, why, and if replayed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.config import Settings
from worker.deadletter import REDRIVE_OF_HEADER, header
from worker.dlq_read import Coordinates, DlqFilter, DlqReader, dlq_topics
from worker.observability.redact import Redactor
from worker.replay_ledger import Ledger


@dataclass
class Group:
    topic: str
    destination: str
    reason: str
    http_status: str
    count: int = 0
    replayed: int = 0
    first_failed_at: str = ""
    last_failed_at: str = ""


@dataclass
class Inspection:
    groups: dict[tuple[str, str, str, str], Group] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    matched: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "matched": self.matched,
            "summary": [g.__dict__ for g in self.groups.values()],
            "records": self.records,
        }


async def inspect(
    settings: Settings, topics: Sequence[str] | None, dlq_filter: DlqFilter, show: int
) -> Inspection:
    redactor = Redactor(settings.secrets)
    reader = DlqReader(settings.kafka, dlq_topics(topics or settings.kafka.topics))
    await reader.start()
    result = Inspection()
    matched: list[tuple[Group, Coordinates]] = []
    refailed: dict[Coordinates, Coordinates] = {}  # dead letter → its re-failed copy
    try:
        async for record in reader.records():
            result.total += 1
            parent = Coordinates.parse(header(record.headers, REDRIVE_OF_HEADER))
            if parent is not None:
                refailed.setdefault(parent, record.coordinates)
            headers = record.text_headers
            if not dlq_filter.matches(headers, record.key):
                continue
            result.matched += 1
            key = (
                record.topic,
                headers.get("dlq.destination", "?"),
                headers.get("dlq.reason", "?"),
                headers.get("dlq.http_status", ""),
            )
            group = result.groups.setdefault(key, Group(*key))
            group.count += 1
            matched.append((group, record.coordinates))
            failed = headers.get("dlq.failed_at", "")
            if failed and (not group.first_failed_at or failed < group.first_failed_at):
                group.first_failed_at = failed
            if failed > group.last_failed_at:
                group.last_failed_at = failed
            if len(result.records) < show:
                result.records.append(
                    {
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "key": redactor.text(record.key.decode("utf-8", "replace"))
                        if record.key is not None
                        else None,
                        "headers": {k: redactor.text(v) for k, v in headers.items()},
                        "value": _value(record.value, redactor),
                    }
                )
    finally:
        await reader.stop()
    ledger = Ledger(settings.kafka, settings.kafka.group_id, "inspect", "")
    try:
        await ledger.open(create=False)
    finally:
        await ledger.close()
    for group, coordinates in matched:
        if replay_status(coordinates, ledger, refailed)["replayed"]:
            group.replayed += 1
    for shown in result.records:
        coordinates = Coordinates(shown["topic"], shown["partition"], shown["offset"])
        shown["replay"] = replay_status(coordinates, ledger, refailed)
    return result


def replay_status(
    coordinates: Coordinates, ledger: Ledger, refailed: Mapping[Coordinates, Coordinates]
) -> dict[str, Any]:
    """Whether, when and by which replay a dead letter was redriven, and where it failed again."""
    done = ledger.done(coordinates)
    copy = refailed.get(coordinates)
    return {
        "replayed": done is not None or copy is not None,
        "replayed_at": _when(done.at) if done is not None else None,
        "replay_id": done.replay_id if done is not None else None,
        "failed_again_as": str(copy) if copy is not None else None,
    }


def _when(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _value(value: bytes | None, redactor: Redactor) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(redactor.text(value.decode("utf-8")))
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        preview = value[:200].decode("utf-8", "backslashreplace")
        return {"unparsed_preview": redactor.text(preview), "bytes": len(value)}
