"""Checks every destination applies to values taken from events. Pure.

Each raises :class:`~worker.errors.TransformError` with ``reason="destination_validation"`` for
a value the destination cannot carry, so that a transform only ever raises typed errors:

* :func:`identifier`: the member's id at one destination (``identifiers.<name>`` or
  ``member_id``), or ``missing_identifier`` when the destination requires its own id;
* :func:`path_segment`: a URL path segment built from event data, percent-encoded with nothing
  kept (``/`` included) and refused when a client or server would normalise or mangle it
  (empty, ``.``, ``..``, control characters, lone surrogates, over 255 characters);
* :func:`utc_datetime`: an RFC 3339 string as an aware UTC datetime, refused when it is not
  representable in UTC (``0001-01-01T00:00:00+01:00`` is year 0 in UTC);
* :func:`check_nesting`: a bounded, iterative depth check (no recursion), so that deep input
  is refused before anything recursive (orjson's 254-level limit, a property walk) sees it;
* :func:`encode`: :func:`~worker.destinations.base.encode_item` with JSON encoding failures
  (integers over 64 bits, too deep) turned into the typed error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import orjson

from worker.destinations.base import Item, encode_item
from worker.errors import TransformError
from worker.events import LoyaltyEvent

MAX_SEGMENT_CHARS: Final = 255
# RFC 3339 date-time (the schemas' "format": "date-time"); a plain date is not a datetime
RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$"
)
_LEAP_SECOND: Final = re.compile(r"(?<=\d{2}:\d{2}:)60(?=\D|$)")
# what check_nesting walks into (a tuple of types: an `X | Y` union is built on every call)
CONTAINERS: Final = (dict, list, tuple)
_MAPPINGS: Final = (dict, Mapping)


def invalid(destination: str, message: str) -> TransformError:
    return TransformError(f"{destination}: {message}", reason="destination_validation")


def identifier(event: LoyaltyEvent, destination: str, *, required: bool) -> str:
    """``identifiers.<destination>`` when the event carries it, else ``member_id``.

    With ``required`` (``<DEST>_REQUIRE_IDENTIFIER=true``) a missing identifier is a
    ``destination_validation`` dead letter whose error text says ``missing_identifier``.
    """
    identifiers = event.identifiers
    # dict first: it is what decoding gives, and far cheaper to test than the ABC
    own = identifiers.get(destination) if isinstance(identifiers, _MAPPINGS) else None
    if isinstance(own, str) and own:
        return own
    if required:
        raise invalid(destination, f"missing_identifier: no identifiers.{destination} in the event")
    return event.member_id


def path_segment(value: object, what: str, destination: str) -> str:
    """``value`` percent-encoded as one URL path segment, or a destination_validation error."""
    if not isinstance(value, str) or not value:
        raise invalid(destination, f"{what} is empty or not a string")
    if value in (".", ".."):
        # quote() keeps dots, and URL normalisation would turn ".../members/.." into the parent
        raise invalid(destination, f"{what} is {value!r}, which a URL path cannot carry")
    if len(value) > MAX_SEGMENT_CHARS:
        raise invalid(destination, f"{what} is over {MAX_SEGMENT_CHARS} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise invalid(destination, f"{what} contains a control character or a lone surrogate")
    return quote(value, safe="")


def utc_datetime(value: str, what: str, destination: str) -> datetime:
    """An RFC 3339 string as an aware datetime in UTC (naive values are taken as UTC)."""
    if isinstance(value, str):
        # RFC 3339 allows a lower-case "z" and a leap second, which Python does not parse
        if value.endswith("z"):
            value = value[:-1] + "Z"
        if ":60" in value:  # the leap-second pattern needs this; most values skip the regex
            value = _LEAP_SECOND.sub("59", value, 1)
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise invalid(destination, f"{what} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise invalid(destination, f"{what} is outside the years 1..9999 in UTC") from None


def check_nesting(value: Any, limit: int, what: str, destination: str) -> None:
    """Refuse objects and arrays nested deeper than ``limit`` levels (iterative walk)."""
    if not isinstance(value, CONTAINERS):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            raise invalid(destination, f"{what} nests deeper than {limit} levels")
        # only containers go on the stack: scalars cannot nest, and most values are scalars
        for child in current.values() if isinstance(current, dict) else current:
            if isinstance(child, CONTAINERS):
                stack.append((child, depth + 1))


def encode(
    destination: str, group: str, kind: str, payload: Mapping[str, Any], event: LoyaltyEvent
) -> Item:
    """An Item with its payload serialised once; unencodable values are a typed error."""
    try:
        return encode_item(group, kind, payload, event, orjson.dumps)
    except orjson.JSONEncodeError as exc:
        raise invalid(destination, f"the payload cannot be encoded as JSON ({exc})") from None
