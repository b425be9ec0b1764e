"""`loyalty-relay dlq inspect`: what is parked in the dead-letter topics, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.config import Settings
from worker.dlq_read import DlqFilter, DlqReader, dlq_topics
from worker.observability.redact import Redactor


@dataclass
class Group:
    topic: str
    destination: str
    reason: str
    http_status: str
    count: int = 0
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
    reader = DlqReader(settings.kafka, dlq_topics(topics or settings.kafka.topics), None)
    await reader.start(from_beginning=True)
    result = Inspection()
    try:
        async for record in reader.records():
            result.total += 1
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
    return result


def _value(value: bytes | None, redactor: Redactor) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(redactor.text(value.decode("utf-8")))
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        preview = value[:200].decode("utf-8", "backslashreplace")
        return {"unparsed_preview": redactor.text(preview), "bytes": len(value)}
