"""What the source partitions say about selected dead letters: already copied, or superseded.

A dead letter remembers where its event was first consumed (``dlq.original_topic``,
``dlq.original_partition``, ``dlq.original_offset``) and its key is the member, so every later
event of that member, and every copy a replay redrove, sits in that same partition after that
offset. One bounded read per source partition, from the oldest selected original offset to the
end seen at start, answers two questions exactly:

* **copied**: a record carrying ``relay.redrive_of`` = this dead letter's coordinates exists,
  so some run redrove it (even one killed before it could write ``done`` to the ledger);
* **superseded**: for a state-carrying event (``member_enrolled``; an audience change per
  audience), a later event of the same member and kind exists. Its position is its *first*
  consumption: a replayed copy counts at its ``dlq.original_offset``, so a copy of an even older
  event never supersedes a newer one. Facts (``rewards_issued``, ``offer_issued``) are never
  superseded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import TopicPartition

from worker.config import KafkaSettings
from worker.deadletter import DLQ_SUFFIX, REDRIVE_OF_HEADER, header
from worker.dlq_read import Coordinates, DlqRecord, PartitionReader

StateKind = tuple[str, str]  # ("member_enrolled", "") or ("audience", <audience name>)


def state_kind(value: bytes | None) -> StateKind | None:
    """The piece of member state an event sets, or ``None`` for facts and undecodable values."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    event_type = event.get("event_type")
    if event_type == "member_enrolled":
        return ("member_enrolled", "")
    data = event.get("data")
    if event_type == "audience_membership_changed" and isinstance(data, dict):
        audience = data.get("audience")
        return ("audience", audience) if isinstance(audience, str) else None
    return None


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def first_consumed_at(record: DlqRecord) -> int:
    """A source record's place in its member's order: a replayed copy sits where it first was."""
    headers = record.headers
    if header(headers, REDRIVE_OF_HEADER) is None:
        return record.offset
    same_place = (
        header(headers, "dlq.original_topic") == record.topic.encode()
        and _int(header(headers, "dlq.original_partition")) == record.partition
    )
    original = _int(header(headers, "dlq.original_offset"))
    return original if same_place and original is not None else record.offset


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a dead letter's event was first consumed, and what state it carries."""

    source: TopicPartition
    offset: int
    key: bytes | None
    kind: StateKind | None


def origin_of(record: DlqRecord) -> Origin | None:
    """``None`` when the dead letter does not say where it came from (nothing to look up)."""
    headers = record.headers
    topic = header(headers, "dlq.original_topic")
    partition = _int(header(headers, "dlq.original_partition"))
    offset = _int(header(headers, "dlq.original_offset"))
    if partition is None or offset is None:
        return None
    name = topic.decode("utf-8", "replace") if topic else record.topic.removesuffix(DLQ_SUFFIX)
    return Origin(TopicPartition(name, partition), offset, record.key, state_kind(record.value))


@dataclass
class SourceFacts:
    copied: set[Coordinates] = field(default_factory=set)
    superseded: set[Coordinates] = field(default_factory=set)
    records_read: int = 0


async def scan_sources(
    kafka: KafkaSettings, letters: Sequence[DlqRecord], stall_seconds: float = 30.0
) -> SourceFacts:
    """Read each source partition concerned from its oldest selected original offset to its end."""
    facts = SourceFacts()
    origins = {r.coordinates: o for r in letters if (o := origin_of(r)) is not None}
    if not origins:
        return facts
    starts: dict[TopicPartition, int] = {}
    for origin in origins.values():
        starts[origin.source] = min(starts.get(origin.source, origin.offset), origin.offset)
    wanted_kinds: dict[tuple[TopicPartition, bytes | None], set[StateKind]] = {}
    for origin in origins.values():
        if origin.kind is not None:
            wanted_kinds.setdefault((origin.source, origin.key), set()).add(origin.kind)
    wanted_copies = {str(c) for c in origins}
    latest: dict[tuple[TopicPartition, bytes | None, StateKind], int] = {}
    reader = PartitionReader(kafka, stall_seconds)
    await reader.start()
    try:
        known = set(await reader.partitions_of(sorted({tp.topic for tp in starts})))
        await reader.assign({tp: offset for tp, offset in starts.items() if tp in known})
        async for record in reader.records():
            facts.records_read += 1
            copy_of = header(record.headers, REDRIVE_OF_HEADER)
            if copy_of is not None and copy_of.decode("utf-8", "replace") in wanted_copies:
                coordinates = Coordinates.parse(copy_of)
                if coordinates is not None:
                    facts.copied.add(coordinates)
            tp = TopicPartition(record.topic, record.partition)
            kinds = wanted_kinds.get((tp, record.key))
            if kinds:
                kind = state_kind(record.value)
                if kind in kinds:
                    place = (tp, record.key, kind)
                    latest[place] = max(latest.get(place, -1), first_consumed_at(record))
    finally:
        await reader.stop()
    facts.superseded = superseded(origins, latest)
    return facts


def superseded(
    origins: Mapping[Coordinates, Origin],
    latest: Mapping[tuple[TopicPartition, bytes | None, StateKind], int],
) -> set[Coordinates]:
    """Dead letters whose state a later event of the same member and kind has replaced."""
    return {
        coordinates
        for coordinates, o in origins.items()
        if o.kind is not None and latest.get((o.source, o.key, o.kind), -1) > o.offset
    }


def chain_parents(records: Iterable[DlqRecord]) -> set[Coordinates]:
    """Dead letters that have a re-failed copy among ``records`` (it carries their coordinates)."""
    parents = set()
    for record in records:
        parent = Coordinates.parse(header(record.headers, REDRIVE_OF_HEADER))
        if parent is not None:
            parents.add(parent)
    return parents
