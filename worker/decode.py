"""Kafka record bytes → :class:`LoyaltyEvent`, or a :class:`DecodeError` naming the reason.

The checks run cheapest first: size, UTF-8 and JSON (one ``orjson.loads``, which also rejects
invalid UTF-8 and nesting deeper than 1024), then the fields the reasons single out, then the
compiled JSON Schemas from ``schemas/``. Error messages name field paths and rules, never field
values, so personal data does not end up in dead-letter headers or logs.
"""

from __future__ import annotations

import functools
import importlib.resources
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import fastjsonschema
import orjson

from worker.errors import DecodeError
from worker.event_model import surely_valid
from worker.events import EVENT_TYPES, Consumed, LoyaltyEvent

MAX_VALUE_BYTES: Final = 1_048_576
SUPPORTED_SCHEMA_VERSION: Final = 1
Validator = Callable[[Any], Any]


MAX_NESTING_DEPTH: Final = 32
FAST_CHECK_MAX_BYTES: Final = 64 * 1024


def decode(record: Consumed, max_depth: int = MAX_NESTING_DEPTH) -> LoyaltyEvent:
    value = record.value
    if not value:
        raise DecodeError("the record has no value", reason="empty_value")
    if len(value) > MAX_VALUE_BYTES:
        raise DecodeError(
            f"value is {len(value)} bytes, over the {MAX_VALUE_BYTES} byte limit",
            reason="too_large",
        )
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("value is not UTF-8", reason="invalid_utf8") from None
        raise DecodeError(f"value is not JSON: {_position(exc)}", reason="invalid_json") from None
    if not isinstance(document, dict):
        raise DecodeError(
            f"value is a JSON {type(document).__name__}, not an object", reason="not_an_object"
        )
    # counting brackets is C-fast and bounds the depth from above: most events skip the walk
    if value.count(b"{") + value.count(b"[") > max_depth and _too_deep(document, max_depth):
        raise DecodeError(f"value nests deeper than {max_depth} levels", reason="schema_violation")
    # the common case at a third of the JSON Schemas' cost; not for large values, whose
    # second decoded copy would double the memory they take while decoding
    if len(value) <= FAST_CHECK_MAX_BYTES and surely_valid(value):
        return _event(document)
    member_id = document.get("member_id")
    if not isinstance(member_id, str) or not member_id:
        raise DecodeError(
            "member_id is missing or not a non-empty string", reason="missing_member_id"
        )
    event_type = document.get("event_type")
    if event_type not in EVENT_TYPES:
        raise DecodeError(
            "event_type is not one of " + ", ".join(EVENT_TYPES), reason="unknown_event_type"
        )
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != 1:
        raise DecodeError(
            f"schema_version {version} is not supported (this worker knows 1)",
            reason="unknown_schema_version",
        )
    validators = _validators()
    _validate(validators["envelope"], document, "")
    _validate(validators[event_type], document["data"], "data.")
    return _event(document)


def _event(document: dict[str, Any]) -> LoyaltyEvent:
    return LoyaltyEvent(
        event_id=document["event_id"],
        event_type=document["event_type"],
        schema_version=SUPPORTED_SCHEMA_VERSION,
        occurred_at=document["occurred_at"],
        member_id=document["member_id"],
        source=document.get("source"),
        data=document["data"],
        identifiers=document.get("identifiers") or {},
    )


def _too_deep(document: Any, max_depth: int) -> bool:
    """True when objects and arrays nest more than ``max_depth`` levels (iterative walk)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _validate(validator: Validator, value: Any, prefix: str) -> None:
    try:
        validator(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = ".".join(str(part) for part in exc.path[1:]) if exc.path else ""
        where = (prefix + path).rstrip(".") or "event"
        rule = exc.rule or "schema"
        if rule == "not" and where == "data":
            raise DecodeError(
                "data carries both braze_campaign_id and braze_canvas_id (at most one)",
                reason="schema_violation",
            ) from None
        definition = exc.rule_definition
        detail = (
            f" {definition}" if rule in ("format", "enum", "type", "required", "pattern") else ""
        )
        raise DecodeError(
            f"{where} violates {rule}{detail if len(str(detail)) < 200 else ''}",
            reason="schema_violation",
        ) from None
    except RecursionError:
        raise DecodeError("value nests too deeply", reason="schema_violation") from None


def _position(exc: orjson.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def schema_dir() -> Path:
    """The installed copy (``worker/_schemas`` in a wheel) or the repository's ``schemas/``."""
    packaged = importlib.resources.files("worker").joinpath("_schemas")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / "schemas"


def load_schemas(directory: Path | None = None) -> Mapping[str, Any]:
    directory = directory or schema_dir()
    names = ("envelope", *EVENT_TYPES)
    return {name: orjson.loads((directory / f"{name}.v1.json").read_bytes()) for name in names}


@functools.cache
def _validators() -> Mapping[str, Validator]:
    return {
        name: fastjsonschema.compile(schema, use_default=False)
        for name, schema in load_schemas().items()
    }


class SharedDecoder:
    """Decodes each record once per process although every destination pipeline reads it.

    Pipelines of one worker read the same records (each in its own consumer group); the first
    to reach a record decodes it and the others take the result. An entry is dropped once
    ``readers`` pipelines took it, or oldest-first beyond ``max_entries`` or ``max_bytes`` of
    record values (a lagging pipeline then simply decodes again), so memory stays bounded.
    Values over ``max_entry_bytes`` are not kept at all: their decoded form can weigh twenty
    times their bytes, and each reader decoding them again costs little at their rarity.

    In a backlog the pipelines drift further apart than the cache holds. For that case it also
    remembers, per partition and offset, a CRC-32 of each value that decoded to an event (4
    bytes each): a reader arriving later at the same bytes parses them again but skips the
    validation, the larger part of the cost.
    """

    def __init__(
        self,
        readers: int,
        max_entries: int = 10_000,
        max_bytes: int = 4 * 1024 * 1024,
        max_entry_bytes: int = 64 * 1024,
        max_depth: int = MAX_NESTING_DEPTH,
    ) -> None:
        self._readers = readers
        self._max = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        self._max_depth = max_depth
        self.cached_bytes = 0
        # OrderedDict: popping the oldest entry is O(1) (a dict's first key is not, after
        # many deletions at its front)
        self._entries: OrderedDict[tuple[str, int, int], list[Any]] = OrderedDict()
        self._valid: dict[tuple[str, int], ValidRecords] = {}

    def decode(self, record: Consumed) -> LoyaltyEvent:
        size = len(record.value or b"")
        if self._readers <= 1:
            return decode(record, self._max_depth)
        if size > self._max_entry_bytes:
            return self._decode_or_parse(record)
        key = (record.topic, record.partition, record.offset)
        entry = self._entries.get(key)
        if entry is None:
            try:
                result: LoyaltyEvent | DecodeError = self._decode_or_parse(record)
            except DecodeError as exc:
                result = exc
            while self._entries and (
                len(self._entries) >= self._max or self.cached_bytes + size > self._max_bytes
            ):
                self.cached_bytes -= self._entries.popitem(last=False)[1][2]
            self._entries[key] = [result, self._readers - 1, size]
            self.cached_bytes += size
        else:
            result = entry[0]
            entry[1] -= 1
            if entry[1] <= 0:
                del self._entries[key]
                self.cached_bytes -= size
        if isinstance(result, DecodeError):
            raise result
        return result

    def _decode_or_parse(self, record: Consumed) -> LoyaltyEvent:
        """Decode ``record``; only parse it when another reader found these bytes valid."""
        value = record.value or b""
        fingerprint = zlib.crc32(value) or 1
        seen = self._valid.get((record.topic, record.partition))
        if seen is None:
            seen = self._valid[(record.topic, record.partition)] = ValidRecords()
        elif seen.holds(record.offset, fingerprint):
            return _event(orjson.loads(value))
        event = decode(record, self._max_depth)
        seen.add(record.offset, fingerprint)
        return event


class ValidRecords:
    """One partition's records that decoded to an event: a CRC-32 of each value, by offset.

    A window of consecutive offsets, 4 bytes each, at most ``max_offsets`` (the oldest go
    first); 0 marks an offset not known to be valid. Offsets before the window are not
    taken (a lagging or rewound reader), and one far past its end starts a new window.
    """

    def __init__(self, max_offsets: int = 1 << 16, max_gap: int = 4096) -> None:
        self._base = 0
        self._fingerprints = array("I")
        self._max_offsets = max_offsets
        self._max_gap = max_gap

    def holds(self, offset: int, fingerprint: int) -> bool:
        index = offset - self._base
        return 0 <= index < len(self._fingerprints) and self._fingerprints[index] == fingerprint

    def add(self, offset: int, fingerprint: int) -> None:
        """Remember ``fingerprint`` (not 0, below 2**32) for ``offset``."""
        fingerprints = self._fingerprints
        index = offset - self._base
        if 0 <= index < len(fingerprints):
            fingerprints[index] = fingerprint
            return
        if not fingerprints or index > len(fingerprints) + self._max_gap:
            self._base, self._fingerprints = offset, array("I", [fingerprint])
            return
        if index < 0:
            return
        gap = index - len(fingerprints)
        if gap:
            fingerprints.frombytes(bytes(gap * fingerprints.itemsize))
        fingerprints.append(fingerprint)
        if len(fingerprints) > self._max_offsets:
            dropped = len(fingerprints) - self._max_offsets * 3 // 4
            del fingerprints[:dropped]
            self._base += dropped
