"""The destination contract: plain data and pure functions. Nothing here does I/O.

A destination turns a :class:`LoyaltyEvent` into :class:`Item` objects (``transform``), groups
items into :class:`Request` objects within the API's limits (``BatchRule`` + ``build``), and
judges each :class:`Response` (``check``). Sending, retrying, rate limiting and dead-lettering
are the pipeline's job and live in ``worker/deliver``.

A :class:`Destination` value also declares everything else about its vendor, so that nothing
outside its package names it: the environment variables of its settings (secrets are its
``SecretStr`` fields), its delivery defaults and request families (:class:`Family`, each with
its own concurrency and rate limits in the vendor's units), its ``check --connect`` probe and
any credentials fetched at send time (:class:`SendTimeAuth`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from worker.events import LoyaltyEvent

if TYPE_CHECKING:
    from worker.errors import Retryable

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


def per_request(_request: Request) -> float:
    return 1.0


def per_item(request: Request) -> float:
    return float(len(request.items))


UNIT_COSTS: Final[Mapping[str, Callable[[Request], float]]] = {
    "requests": per_request,
    "items": per_item,
}


@dataclass(frozen=True, slots=True)
class Meter:
    """One rate limit: ``per_second`` units for this replica; a request spends ``cost(request)``.

    ``per_second <= 0`` means no limit of its own (the server's Retry-After is still obeyed).
    """

    unit: str  # "requests", "items", or the vendor's word ("users", "events")
    per_second: float
    cost: Callable[[Request], float] = per_request


@dataclass(frozen=True, slots=True)
class Family:
    """Requests that share one vendor rate limit: their own concurrency slots and limiters.

    Each family's limiters learn only from its own responses (429s and ``X-RateLimit-*``).
    """

    name: str
    concurrency: int
    meters: tuple[Meter, ...] = ()


class DeliverySettings(BaseModel):
    """How one destination is driven. Destinations subclass it to change defaults or add their
    own families' settings; every field is also the variable ``<DEST>_<FIELD>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # the first request family's concurrency and rate (0 = no limit of our own)
    concurrency: int = Field(default=8, ge=1)
    rate_limit: float = Field(default=0.0, ge=0)
    rate_unit: Literal["requests", "items"] = "requests"
    max_attempts: int = Field(default=50, ge=1)
    # long enough to ride out a 15-minute outage before anything is dead-lettered
    max_retry_seconds: float = Field(default=1800.0, gt=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    backoff_base_seconds: float = Field(default=0.5, gt=0)
    backoff_cap_seconds: float = Field(default=60.0, gt=0)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=5.0, gt=0)

    def meter(self) -> Meter:
        """``rate_limit`` per second in ``rate_unit``."""
        return Meter(self.rate_unit, self.rate_limit, UNIT_COSTS[self.rate_unit])


DEFAULT_FAMILY: Final = "default"


def one_family(delivery: DeliverySettings) -> tuple[Family, ...]:
    """Every request in one family, driven by ``concurrency`` and ``rate_limit``."""
    return (Family(DEFAULT_FAMILY, delivery.concurrency, (delivery.meter(),)),)


def the_default_family(_request: Request) -> str:
    return DEFAULT_FAMILY


class DynamicAuth(Protocol):
    """Credentials fetched at send time (an OAuth token)."""

    async def headers(self) -> Mapping[str, str]: ...

    async def invalidate(self, headers_used: Mapping[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class SendTimeAuth(Generic[S]):
    """How to build the destination's :class:`DynamicAuth` from its settings and the HTTP
    session, and which error means "the credential in use was refused: refresh, retry once"."""

    provider: Callable[[S, Any], DynamicAuth]  # (settings, aiohttp.ClientSession)
    rejected: type[Retryable]


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
    # environment variable → settings key; SecretStr fields also accept <VARIABLE>_FILE
    environment: Mapping[str, str] = field(default_factory=dict)
    # delivery defaults; [delivery.<name>] in the file, <NAME>_<FIELD> in the environment
    delivery_type: type[DeliverySettings] = DeliverySettings
    # the request families built from the delivery settings, and which one a request is in
    families: Callable[[Any], tuple[Family, ...]] = one_family
    family_of: Callable[[Request], str] = the_default_family
    # `check --connect`: a harmless call that valid credentials get anything but 401/403 for;
    # None when fetching the send-time credentials is the probe
    probe: Callable[[S], Request] | None = None
    send_time_auth: SendTimeAuth[S] | None = None

    def request_families(self, delivery: DeliverySettings) -> tuple[Family, ...]:
        """The families for ``delivery``; settings of another type (plain DeliverySettings)
        get this destination's defaults for everything they do not set."""
        if not isinstance(delivery, self.delivery_type):
            own = delivery.model_dump(exclude_unset=True)
            delivery = self.delivery_type.model_validate(own)
        return self.families(delivery)


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
