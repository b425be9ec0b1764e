"""The destination contract: plain data and pure functions. Nothing here does I/O.

A destination turns a :class:`LoyaltyEvent` into :class:`Item` objects (``transform``), groups
items into :class:`Request` objects within the API's limits (``BatchRule`` + ``build``), and
judges each :class:`Response` (``check``). Sending, retrying, rate limiting and dead-lettering
are the pipeline's job and live in ``worker/deliver``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from worker.events import LoyaltyEvent

S = TypeVar("S")
Method = Literal["GET", "POST", "PUT", "DELETE"]


@dataclass(slots=True)
class Item:
    """One thing to send (a Braze event object, a MoEngage element, one SessionM call...).

    ``group`` decides which items may share a request (for Braze: ``users/track``,
    ``campaign:<id>``, ``canvas:<id>``); ``encoded`` is ``payload`` serialised once with orjson,
    so a batch body is assembled by joining bytes. ``ticket`` is set by the pipeline to track
    the Kafka offset the item came from; destinations never touch it.
    """

    group: str
    kind: str
    payload: Mapping[str, Any]
    encoded: bytes
    member_id: str
    event_id: str
    ticket: Any = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class BatchRule:
    """How many items of one group fit in one request."""

    max_items: int
    max_bytes: int
    # bytes of the request body beyond the items themselves (brackets, commas, envelope keys)
    overhead_bytes: int = 64
    per_item_overhead: int = 1


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP call, fully built; ``items`` are what it carries, in order."""

    method: Method
    url: str = field(repr=False)  # SessionM's carries the API key: log ``endpoint`` instead
    body: bytes | None
    items: tuple[Item, ...]
    endpoint: str  # a short label for logs and metrics, e.g. "users/track"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry secrets


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request was accepted; ``rejected`` maps item indexes that failed on their own
    (Braze partial failures) to a readable reason. Those are dead-lettered as
    ``partial_failure``; every other item counts as delivered."""

    rejected: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Destination(Generic[S]):
    """A destination is a value: a name, its settings type and its pure functions."""

    name: str
    settings_type: type[S]
    # [] means "nothing to send for this event" (counted as skipped); raises TransformError
    transform: Callable[[LoyaltyEvent, S], list[Item]]
    batch_rule: Callable[[str, S], BatchRule]
    build: Callable[[str, Sequence[Item], S], Request]
    # returns Accepted, or raises the DeliveryError the response means
    check: Callable[[Response, Request], Accepted]
    # event types this destination can take, for the default routing table
    event_types: tuple[str, ...] = ()
    # a multi-item request refused as a whole with this HTTP status, which one bad item can
    # cause (MoEngage's bulk 400): how many extra requests the sender may spend bisecting it so
    # that only the bad items are dead-lettered (0: dead-letter the whole request)
    split_budget: Callable[[int | None, S], int] = field(default=lambda _status, _s: 0)
    # static request headers (auth); OAuth destinations add theirs at send time
    auth_headers: Callable[[S], Mapping[str, str]] = field(default=lambda _s: {})


def encode_item(
    group: str,
    kind: str,
    payload: Mapping[str, Any],
    event: LoyaltyEvent,
    dumps: Callable[[Any], bytes],
) -> Item:
    """Build an Item with its payload serialised once."""
    return Item(
        group=group,
        kind=kind,
        payload=payload,
        encoded=dumps(payload),
        member_id=event.member_id,
        event_id=event.event_id,
    )
