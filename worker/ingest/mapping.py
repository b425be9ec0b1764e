"""Request bodies → Kafka records, validated exactly as the worker will decode them. Pure.

Three body shapes:

* native events (``POST /v1/events``): the envelope in ``schemas/``, as one JSON object, a JSON
  array or NDJSON;
* Kognitiv's Braze templates (seed 000): ``{"events": [...]}`` (custom events such as
  ``rewards_issued``) and ``{"attributes": [...]}`` (enrollments → ``member_enrolled``);
* Kognitiv's MoEngage template (seed 001): ``{"type": "event", "customer_id", "actions": [...]}``.

Every item ends as a :class:`Record` (key = ``member_id``, value = the envelope's JSON bytes) or
a :class:`Rejection` whose ``reason`` is a dead-letter reason (``worker.decode``): each candidate
envelope is checked by :func:`worker.decode.decode` itself, so the ingest accepts exactly what
the worker will take. Template values arrive as strings (``"1200"``, ``"true"``); fields the
target schema declares are coerced to its types, unknown fields are kept in ``data`` as they
came, and an empty template value means "not set". Messages name fields and rules, never values.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from worker.decode import MAX_NESTING_DEPTH, decode, load_schemas
from worker.errors import DecodeError
from worker.events import EVENT_TYPES, Consumed

NATIVE_ROUTE: Final = "/v1/events"
BRAZE_ROUTE: Final = "/v1/webhooks/kognitiv/braze"
MOENGAGE_ROUTE: Final = "/v1/webhooks/kognitiv/moengage"
WEBHOOK_SOURCE: Final = "kognitiv"

# Braze attribute name → member_enrolled field (the inverse of the Braze transform's table,
# where a name differs; a unit test keeps the two in step)
BRAZE_ATTRIBUTE_FIELDS: Final[Mapping[str, str]] = {"total_points_balance": "points_available"}
# member_enrolled: where occurred_at comes from, first present wins (else the receive time)
ENROLLED_AT_FIELDS: Final = ("date_joined", "CreatedKLS")
_DATE_TIME: Final[Mapping[str, str]] = {"type": "string", "format": "date-time"}
_RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[tT]\d{2}:\d{2}:\d{2}(\.\d+)?([zZ]|[+-]\d{2}:?\d{2})$"
)
_INTEGER: Final = re.compile(r"^[+-]?\d+$")
_DECIMAL: Final = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PLACEHOLDER: Final = re.compile(r"^\s*\{\{.*\}\}\s*$", re.DOTALL)
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_MAX_NAMES_SHOWN: Final = 10


@dataclass(frozen=True, slots=True)
class Record:
    """One valid event, ready to produce."""

    index: int
    item: str  # where it was in the body: "events[0]", "[3]", "line 4", "body"
    event_id: str
    event_type: str
    member_id: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item that cannot become a valid event; ``reason`` is a dead-letter reason."""

    index: int
    item: str
    reason: str
    error: str
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "item": self.item, "reason": self.reason}
        if self.field is not None:
            out["field"] = self.field
        out["error"] = self.error
        return out


Outcome = Record | Rejection


class BodyError(Exception):
    """The body as a whole cannot be read as this route's shape (400, or 422 when it parsed)."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class _NotCoercible(Exception):
    """A template value that does not convert to the schema's type; the message is the type."""


def parse_json(body: bytes) -> Any:
    """The body's JSON document, or BodyError (empty_value, invalid_utf8, invalid_json)."""
    if not body.strip():
        raise BodyError("the request body is empty", "empty_value")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError("the body is not UTF-8", "invalid_utf8") from None
        raise BodyError(
            f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            "invalid_json",
        ) from None


def derive_event_id(route: str, item: bytes) -> str:
    """The same route and item bytes always give the same id (a retried webhook de-duplicates)."""
    digest = hashlib.sha256(route.encode() + b"\n" + item).hexdigest()
    return f"ing-{digest[:32]}"


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# --- POST /v1/events -----------------------------------------------------------------------


def native_events(
    body: bytes, *, ndjson: bool, max_depth: int = MAX_NESTING_DEPTH
) -> list[Outcome]:
    """One object, an array of objects, or NDJSON lines (``ndjson``) of native events.

    ``max_depth`` is the worker's RELAY_MAX_NESTING_DEPTH: deeper events are refused here as
    the worker would dead-letter them.
    """
    if ndjson:
        outcomes: list[Outcome] = []
        for number, line in enumerate(body.split(b"\n"), 1):
            line = line.strip()
            if line:
                outcomes.append(_native(len(outcomes), f"line {number}", line, max_depth))
        if not outcomes:
            raise BodyError("the request body has no NDJSON lines", "empty_value")
        return outcomes
    document = parse_json(body)
    if isinstance(document, list):
        if not document:
            raise BodyError("the request body is an empty array", "empty_value")
        return [
            _native(i, f"[{i}]", orjson.dumps(item), max_depth) for i, item in enumerate(document)
        ]
    if isinstance(document, dict):
        return [_native(0, "body", body, max_depth)]
    raise BodyError(
        f"the body is a JSON {type(document).__name__}, not an object or an array",
        "not_an_object",
    )


def _native(index: int, item: str, raw: bytes, max_depth: int) -> Outcome:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _rejection_from(index, item, raw)
    if isinstance(document, dict) and "event_id" not in document:
        event_id = derive_event_id(NATIVE_ROUTE, canonical(document))
        raw = orjson.dumps({"event_id": event_id, **document})
    return _validated(index, item, raw, {}, max_depth)


# --- POST /v1/webhooks/kognitiv/braze ------------------------------------------------------


def braze_webhook(
    document: Any, received_at: datetime, max_depth: int = MAX_NESTING_DEPTH
) -> list[Outcome]:
    """Seed 000's bodies: ``events[]`` by their ``name``, ``attributes[]`` as enrollments."""
    if not isinstance(document, dict):
        raise BodyError(
            f"the body is a JSON {type(document).__name__}, not an object", "not_an_object"
        )
    extra = [key for key in document if key not in ("events", "attributes")]
    if extra:
        raise BodyError(
            f"no loyalty event can hold the body field(s) {_names(extra)} "
            "(this route takes events and attributes)",
            "schema_violation",
            422,
        )
    events = _array(document, "events")
    attributes = _array(document, "attributes")
    if not events and not attributes:
        raise BodyError("the body has no events and no attributes", "empty_value", 422)
    outcomes: list[Outcome] = []
    for position, item in enumerate(events):
        label = f"events[{position}]"
        outcomes.append(_braze_event(len(outcomes), label, item, received_at, max_depth))
    for position, item in enumerate(attributes):
        label = f"attributes[{position}]"
        outcomes.append(_braze_attributes(len(outcomes), label, item, received_at, max_depth))
    return outcomes


def _braze_event(
    index: int, label: str, item: Any, received_at: datetime, max_depth: int
) -> Outcome:
    if not isinstance(item, dict):
        return _not_an_object(index, label, item)
    draft = _Draft(index, label, BRAZE_ROUTE, canonical(item), max_depth)
    name = item.get("name")
    if name not in EVENT_TYPES:
        return draft.reject("unknown_event_type", "name", _event_type_message("name"))
    fields = {k: v for k, v in item.items() if k not in ("name", "properties")}
    properties = item.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            return draft.reject("schema_violation", "properties", "properties is not an object")
        clash = _merge_without_clash(fields, properties)
        if clash:
            return draft.reject(
                "schema_violation", clash[0], f"{_names(clash)} given twice (also in properties)"
            )
    return draft.finish(
        str(name), fields, member="external_id", occurred=("time", "issued_date"), at=received_at
    )


def _braze_attributes(
    index: int, label: str, item: Any, received_at: datetime, max_depth: int
) -> Outcome:
    if not isinstance(item, dict):
        return _not_an_object(index, label, item)
    draft = _Draft(index, label, BRAZE_ROUTE, canonical(item), max_depth)
    return draft.finish(
        "member_enrolled",
        dict(item),
        member="external_id",
        occurred=ENROLLED_AT_FIELDS,
        at=received_at,
        renames=BRAZE_ATTRIBUTE_FIELDS,
        occurred_stays_in_data=True,
    )


# --- POST /v1/webhooks/kognitiv/moengage ---------------------------------------------------


def moengage_webhook(
    document: Any, received_at: datetime, max_depth: int = MAX_NESTING_DEPTH
) -> list[Outcome]:
    """Seed 001's body: each of ``actions[]`` becomes an event of the ``action``'s type."""
    if not isinstance(document, dict):
        raise BodyError(
            f"the body is a JSON {type(document).__name__}, not an object", "not_an_object"
        )
    if document.get("type") != "event":
        raise BodyError(
            'type must be "event" (this route takes MoEngage event bodies)',
            "schema_violation",
            422,
        )
    actions = _array(document, "actions")
    if not actions:
        raise BodyError("the body has no actions", "empty_value", 422)
    shared = {k: v for k, v in document.items() if k not in ("type", "actions")}
    outcomes: list[Outcome] = []
    for position, action in enumerate(actions):
        label = f"actions[{position}]"
        outcomes.append(
            _moengage_action(len(outcomes), label, shared, action, received_at, max_depth)
        )
    return outcomes


def _moengage_action(
    index: int,
    label: str,
    shared: Mapping[str, Any],
    action: Any,
    received_at: datetime,
    max_depth: int,
) -> Outcome:
    if not isinstance(action, dict):
        return _not_an_object(index, label, action)
    # the customer and the rest of the body are part of what identifies this action
    draft = _Draft(index, label, MOENGAGE_ROUTE, canonical({**shared, "action": action}), max_depth)
    name = action.get("action")
    if name not in EVENT_TYPES:
        return draft.reject("unknown_event_type", "action", _event_type_message("action"))
    attributes = action.get("attributes", {})
    if not isinstance(attributes, dict):
        return draft.reject("schema_violation", "attributes", "attributes is not an object")
    fields: dict[str, Any] = dict(attributes)
    others = {k: v for k, v in {**shared, **action}.items() if k not in ("action", "attributes")}
    clash = _merge_without_clash(fields, others)
    if clash:
        return draft.reject(
            "schema_violation", clash[0], f"{_names(clash)} given twice (also in attributes)"
        )
    return draft.finish(
        str(name), fields, member="customer_id", occurred=("time", "current_time"), at=received_at
    )


# --- shared ----------------------------------------------------------------------------------


@dataclass
class _Draft:
    """One template item on its way to an envelope; remembers which field became which."""

    index: int
    label: str
    route: str
    identity: bytes  # the item's bytes the derived event_id is made from
    max_depth: int
    names: dict[str, str] = field(default_factory=dict)  # envelope path → template field

    def reject(self, reason: str, name: str | None, error: str) -> Rejection:
        where = f"{self.label}.{name}" if name else self.label
        return Rejection(self.index, self.label, reason, f"{where}: {error}", name)

    def finish(
        self,
        event_type: str,
        fields: dict[str, Any],
        *,
        member: str,
        occurred: Iterable[str],
        at: datetime,
        renames: Mapping[str, str] | None = None,
        occurred_stays_in_data: bool = False,
    ) -> Outcome:
        for name, value in fields.items():
            if isinstance(value, str) and _PLACEHOLDER.match(value):
                return self.reject(
                    "schema_violation", name, "the template placeholder was not filled in"
                )
        member_id = fields.pop(member, None)
        if isinstance(member_id, int | float) and not isinstance(member_id, bool):
            member_id = str(member_id)
        if not isinstance(member_id, str) or not member_id.strip():
            return self.reject("missing_member_id", member, "missing or not a non-empty string")
        self.names["member_id"] = member
        event_id = fields.pop("event_id", None)
        if event_id is None or event_id == "":
            event_id = derive_event_id(self.route, self.identity)
        else:
            self.names["event_id"] = "event_id"

        occurred_at: str | None = None
        for name in occurred:
            value = fields.get(name)
            if _blank(value):
                continue
            try:
                occurred_at = coerce(value, _DATE_TIME)
            except _NotCoercible as exc:
                return self.reject("schema_violation", name, f"not {exc}")
            self.names["occurred_at"] = name
            if name not in _properties(event_type) and not occurred_stays_in_data:
                fields.pop(name)
            break
        if occurred_at is None:
            occurred_at = _rfc3339(at)

        data: dict[str, Any] = {}
        properties = _properties(event_type)
        required = _required(event_type)
        for name, value in fields.items():
            target = (renames or {}).get(name, name)
            if target in data:
                return self.reject("schema_violation", name, f"gives {target} a second time")
            spec = properties.get(target)
            if spec is not None:
                if _blank(value) and target not in required:
                    continue  # an empty template value means "not set"
                try:
                    value = coerce(value, spec)
                except _NotCoercible as exc:
                    return self.reject("schema_violation", name, f"not {exc}")
            data[target] = value
            self.names[f"data.{target}"] = name
        envelope = {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": occurred_at,
            "source": WEBHOOK_SOURCE,
            "member_id": member_id.strip(),
            "data": data,
        }
        value = orjson.dumps(envelope)
        return _validated(self.index, self.label, value, self.names, self.max_depth)


def coerce(value: Any, spec: Mapping[str, Any]) -> Any:
    """``value`` converted to the JSON Schema property ``spec``'s type, or _NotCoercible."""
    kind = spec.get("type")
    if kind in ("number", "integer"):
        if isinstance(value, bool):
            raise _NotCoercible(f"a{'n' if kind == 'integer' else ''} {kind}")
        if isinstance(value, str):
            text = value.strip()
            if _INTEGER.match(text):
                return int(text)
            if kind == "number" and _DECIMAL.match(text):
                number = float(text)
                if math.isfinite(number):
                    return number
        elif isinstance(value, int) or (kind == "number" and isinstance(value, float)):
            return value
        raise _NotCoercible("an integer" if kind == "integer" else "a number")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _NotCoercible("a boolean (true or false)")
    if kind == "string":
        if spec.get("format") == "date-time":
            return _date_time(value)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _NotCoercible("a string")
    return value  # enums and objects: the schema check that follows has the last word


def _date_time(value: Any) -> str:
    """RFC 3339 as the schema wants it; no offset means UTC, digits are epoch (s or ms)."""
    if isinstance(value, str) and _RFC3339.match(value.strip()):
        return value.strip()
    epoch: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        epoch = float(value)
    elif isinstance(value, str) and _INTEGER.match(value.strip()):
        epoch = float(value.strip())
    try:
        if epoch is not None:
            moment = datetime.fromtimestamp(epoch / 1000 if epoch > 1e11 else epoch, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError):
        raise _NotCoercible("an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _rfc3339(moment)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _validated(
    index: int, item: str, value: bytes, names: Mapping[str, str], max_depth: int
) -> Outcome:
    try:
        event = decode(Consumed("", 0, 0, None, value), max_depth)
    except DecodeError as exc:
        return _rejection(index, item, exc, names)
    return Record(index, item, event.event_id, event.event_type, event.member_id, value)


def _rejection_from(index: int, item: str, raw: bytes) -> Rejection:
    """The decoder's reason for bytes that are not JSON (invalid_json or invalid_utf8)."""
    try:
        decode(Consumed("", 0, 0, None, raw))
    except DecodeError as exc:
        return _rejection(index, item, exc, {})
    raise AssertionError("a value that orjson refused decoded")  # pragma: no cover


def _rejection(index: int, item: str, exc: DecodeError, names: Mapping[str, str]) -> Rejection:
    """The decoder's message, with envelope paths put back into the template's field names."""
    message = str(exc)
    where, _, rest = message.partition(" ")
    if where in names:
        name: str | None = names[where]
        message = f"{item}.{name} {rest}"
    else:
        name = where if rest.startswith("violates") else None
        message = f"{item}: {message}"
    return Rejection(index, item, exc.reason, message, name)


def _not_an_object(index: int, item: str, value: Any) -> Rejection:
    kind = type(value).__name__
    return Rejection(index, item, "not_an_object", f"{item} is a JSON {kind}, not an object")


def _array(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise BodyError(f"{key} must be an array", "schema_violation", 422)
    return value


def _names(names: Iterable[str]) -> str:
    shown = [name[:64] for name in sorted(names)]
    more = len(shown) - _MAX_NAMES_SHOWN
    return ", ".join(shown[:_MAX_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _event_type_message(key: str) -> str:
    return f"{key} is not one of " + ", ".join(EVENT_TYPES)


@functools.cache
def _schemas() -> Mapping[str, Any]:
    return load_schemas()


def _properties(event_type: str) -> Mapping[str, Any]:
    properties: Mapping[str, Any] = _schemas()[event_type].get("properties", {})
    return properties


def _required(event_type: str) -> frozenset[str]:
    return frozenset(_schemas()[event_type].get("required", ()))


def _merge_without_clash(fields: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """Add ``extra`` to ``fields`` unless a key is in both; return the keys given twice."""
    clash = [key for key in extra if key in fields]
    if not clash:
        fields.update(extra)
    return clash
