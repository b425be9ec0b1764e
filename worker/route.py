"""Consumed records → what one destination does with each. Pure: no I/O, no metrics, no logs.

For every record of a fetched batch, in order, :func:`route` says one of: not this pipeline's
(``filtered``), an input error (a dead letter for ``*``, written by the one pipeline marked
``writes_input_errors``), not routed here, a destination dead letter (``TransformError``), a
skip (the destination has no call for it), items to batch, or an exception nobody foresaw
(``crash``: the caller logs its traceback and dead-letters the record). An exception while
routing one record never touches the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.deadletter import REPLAY_DESTINATION_HEADER, header, replayed
from worker.destinations.base import Destination, Item
from worker.errors import DecodeError, TransformError
from worker.events import Consumed, LoyaltyEvent

INVALID = "invalid"  # the event_type label of records that are not valid events


@dataclass(frozen=True, slots=True)
class Route:
    """What routing needs to know about one destination pipeline."""

    destination: Destination[Any]
    settings: Any  # the destination's settings
    routed: frozenset[str]  # event types routed to this destination
    writes_input_errors: bool
    decode: Callable[[Consumed], LoyaltyEvent]
    accept: Callable[[Consumed], bool] | None = None


@dataclass(slots=True)
class Routed:
    """The outcome for one record. ``event_type`` is None only for a filtered record."""

    record: Consumed
    event_type: str | None
    event: LoyaltyEvent | None = None
    items: list[Item] | None = None  # items to batch (never empty)
    skipped: bool = False
    # a dead letter: its destination ("*" for input errors), reason and error text
    letter: tuple[str, str, str] | None = None
    crash: BaseException | None = None  # unexpected; reason in ``letter`` without a text
    key_mismatch: bool = False


def route(rule: Route, records: Sequence[Consumed]) -> list[Routed]:
    """Route a fetched batch, record by record, in order."""
    out = []
    for record in records:
        try:
            out.append(_route_one(rule, record))
        except Exception as exc:  # a bug or an input nobody foresaw: this record only
            letter = (rule.destination.name, "internal_error", "")
            out.append(Routed(record, INVALID, crash=exc, letter=letter))
    return out


def _route_one(rule: Route, record: Consumed) -> Routed:
    if rule.accept is not None and not rule.accept(record):
        return Routed(record, None)
    try:
        event = rule.decode(record)
    except DecodeError as exc:
        letter = ("*", exc.reason, str(exc)) if rule.writes_input_errors else None
        return Routed(record, INVALID, letter=letter)
    outcome = Routed(record, event.event_type, event)
    outcome.key_mismatch = record.key is None or record.key != event.member_id.encode()
    if event.event_type not in rule.routed or (
        record.headers and not replayed_to(record.headers, rule.destination.name)
    ):
        return outcome
    name = rule.destination.name
    try:
        items = rule.destination.transform(event, rule.settings)
    except TransformError as exc:
        outcome.letter = (name, exc.reason, str(exc))
        return outcome
    except Exception as exc:
        outcome.letter = (name, TransformError.reason, "")
        outcome.crash = exc
        return outcome
    if items:
        outcome.items = items
    else:
        outcome.skipped = True
    return outcome


def replayed_to(headers: Sequence[tuple[str, bytes]], name: str) -> bool:
    """False when a replayed record is meant for another destination only."""
    if not replayed(headers):
        return True
    target = header(headers, REPLAY_DESTINATION_HEADER)
    return target is None or target.decode(errors="replace") in (name, "*")
