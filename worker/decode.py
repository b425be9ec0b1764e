"""Kafka record bytes → :class:`LoyaltyEvent`, or a :class:`DecodeError` naming the reason.

The checks run cheapest first: emptiness and size (before any parsing), one ``orjson.loads``
(which also rejects invalid UTF-8 and nesting deeper than 1024), the three fields that have a
reason of their own (``member_id``, ``event_type``, ``schema_version``), then the compiled
envelope schema and the compiled schema of the event type on ``data``. ``reason`` becomes the
``dlq.reason`` header:

    empty_value, too_large, invalid_utf8, invalid_json, not_an_object, missing_member_id,
    unknown_event_type, unknown_schema_version, schema_violation

Messages name field paths and rules, never field values, so personal data does not end up in
dead-letter headers or logs. Nothing but :class:`DecodeError` escapes :func:`decode`.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import fastjsonschema
import orjson

from worker.errors import DecodeError
from worker.events import EVENT_TYPES, Consumed, LoyaltyEvent

MAX_VALUE_BYTES: Final = 1_048_576
SUPPORTED_SCHEMA_VERSION: Final = 1
MAX_MESSAGE_CHARS: Final = 300
Validator = Callable[[Any], Any]

_JSON_TYPE_NAMES: Final[Mapping[type, str]] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
# `false` sub-schemas only come from `dependencies` rules; say what the field clashes with
_CLASHES: Final[Mapping[str, str]] = {"data.braze_canvas_id": "data.braze_campaign_id"}


def decode(record: Consumed) -> LoyaltyEvent:
    """Parse and validate one record; raise :class:`DecodeError` when it is not a valid event."""
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
        raise _not_json(value, exc) from None
    if type(document) is not dict:
        kind = _JSON_TYPE_NAMES.get(type(document), "value")
        raise DecodeError(f"value is a JSON {kind}, not an object", reason="not_an_object")
    member_id = document.get("member_id")
    if type(member_id) is not str or not member_id:
        raise _bad_member_id(member_id)
    event_type = document.get("event_type")
    if event_type not in EVENT_TYPES:
        what = "missing" if event_type is None else "not one of " + ", ".join(EVENT_TYPES)
        raise DecodeError(f"event_type is {what}", reason="unknown_event_type")
    version = document.get("schema_version")
    if version != SUPPORTED_SCHEMA_VERSION and _is_integer(version):
        raise DecodeError(
            f"schema_version {version} is not supported (this worker knows "
            f"{SUPPORTED_SCHEMA_VERSION})",
            reason="unknown_schema_version",
        )
    envelope, by_type = validators()
    try:
        envelope(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DecodeError(_violation(exc, envelope=True), reason="schema_violation") from None
    data = document["data"]
    try:
        by_type[event_type](data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DecodeError(_violation(exc, envelope=False), reason="schema_violation") from None
    return LoyaltyEvent(
        document["event_id"],
        event_type,
        SUPPORTED_SCHEMA_VERSION,
        document["occurred_at"],
        member_id,
        document.get("source"),
        data,  # the validated dict itself: no copy on the hot path
    )


def schema_dir() -> Path:
    """The installed copy (``worker/_schemas`` in a wheel) or else the repository's ``schemas/``."""
    packaged = importlib.resources.files("worker").joinpath("_schemas")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / "schemas"


def load_schemas(directory: Path | None = None) -> Mapping[str, Any]:
    """The envelope schema and one schema per event type, by name (``envelope``, ``<type>``)."""
    directory = directory or schema_dir()
    names = ("envelope", *EVENT_TYPES)
    return {name: orjson.loads((directory / f"{name}.v1.json").read_bytes()) for name in names}


@functools.cache
def validators() -> tuple[Validator, Mapping[str, Validator]]:
    """The compiled envelope validator and the per-type ``data`` validators, compiled once.

    ``decode`` compiles them on first use; calling this at start-up fails fast instead when a
    schema file is missing. ``use_default=False``: validation never writes into the event.
    """
    schemas = load_schemas()
    compiled = {
        name: fastjsonschema.compile(schema, use_default=False) for name, schema in schemas.items()
    }
    envelope = compiled.pop("envelope")
    return envelope, compiled


def _is_integer(value: object) -> bool:
    # bool is an int subclass but not a JSON integer; 2.0 is one in JSON Schema's eyes
    return type(value) is int or (type(value) is float and value.is_integer())


def _not_json(value: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return DecodeError("value is not UTF-8", reason="invalid_utf8")
    # orjson's messages describe the position and the expected token, never the input text
    where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return DecodeError(f"value is not JSON: {where}"[:MAX_MESSAGE_CHARS], reason="invalid_json")


def _bad_member_id(member_id: object) -> DecodeError:
    if member_id is None:
        problem = "is missing"
    elif type(member_id) is not str:
        problem = f"must be a string, not a JSON {_JSON_TYPE_NAMES.get(type(member_id), 'object')}"
    else:
        problem = "is empty"
    return DecodeError(f"member_id {problem}", reason="missing_member_id")


def _violation(exc: fastjsonschema.JsonSchemaValueException, *, envelope: bool) -> str:
    """A one-line description naming the path and the rule; ``exc.value`` is never shown."""
    # fastjsonschema names the validated value "data": for the envelope that is the event
    # itself, for a type schema it is the event's ``data`` object
    name = exc.name or "data"
    path = name.partition(".")[2] if envelope else name
    where = path or "event"
    schema = exc.definition if isinstance(exc.definition, dict) else {}
    rule = exc.rule
    wanted = schema.get(rule) if rule else None
    text: str
    if rule == "required":
        present = exc.value if isinstance(exc.value, dict) else {}
        missing = [f"{path}.{key}" if path else key for key in wanted if key not in present]
        text = ", ".join(missing) + (" is required" if len(missing) == 1 else " are required")
    elif rule in ("type", "format"):
        text = f"{where} must be {' or '.join(wanted) if isinstance(wanted, list) else wanted}"
    elif rule == "enum":
        text = f"{where} must be one of {', '.join(str(option) for option in wanted)}"
    elif rule == "const":
        text = f"{where} must be {orjson.dumps(wanted).decode()}"
    elif rule == "pattern":
        text = f"{where} must match {wanted}"
    elif rule == "minLength":
        text = f"{where} must not be empty" if wanted == 1 else f"{where} is too short"
    elif rule == "maxLength":
        text = f"{where} must be at most {wanted} characters"
    elif rule == "minimum":
        text = f"{where} must be at least {wanted}"
    elif exc.definition is False:
        clash = _CLASHES.get(where)
        text = f"{where} is not allowed" + (f" together with {clash}" if clash else "")
    else:
        text = f"{where} breaks the {rule} rule"
    return text[:MAX_MESSAGE_CHARS]


class SharedDecoder:
    """Decodes each record once per process although every destination pipeline reads it.

    Pipelines of one worker read the same records (each in its own consumer group); the first
    to reach a record decodes it and the others take the result. An entry is dropped once
    ``readers`` pipelines took it, or oldest-first beyond ``max_entries`` (a lagging pipeline
    then simply decodes again), so memory stays bounded.
    """

    def __init__(self, readers: int, max_entries: int = 10_000) -> None:
        self._readers = readers
        self._max = max_entries
        # OrderedDict: popping the oldest entry is O(1) (a dict's first key is not, after
        # many deletions at its front)
        self._entries: OrderedDict[tuple[str, int, int], list[Any]] = OrderedDict()

    def decode(self, record: Consumed) -> LoyaltyEvent:
        if self._readers <= 1:
            return decode(record)
        key = (record.topic, record.partition, record.offset)
        entry = self._entries.get(key)
        if entry is None:
            try:
                result: LoyaltyEvent | DecodeError = decode(record)
            except DecodeError as exc:
                result = exc
            if len(self._entries) >= self._max:
                self._entries.popitem(last=False)
            self._entries[key] = [result, self._readers - 1]
        else:
            result = entry[0]
            entry[1] -= 1
            if entry[1] <= 0:
                del self._entries[key]
        if isinstance(result, DecodeError):
            raise result
        return result
