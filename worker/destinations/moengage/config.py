"""MoEngage settings, their environment variables and MoEngage's delivery defaults."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.destinations.base import DeliverySettings, Family, Meter, Request

ENVIRONMENT: Final = {
    "MOENGAGE_API_ENDPOINT": "api_endpoint",
    "MOENGAGE_WORKSPACE_ID": "workspace_id",
    "MOENGAGE_API_KEY": "api_key",
    "MOENGAGE_REQUIRE_IDENTIFIER": "require_identifier",
    "MOENGAGE_OBJECT_ATTRIBUTES": "object_attributes",
    "MOENGAGE_BULK_SPLIT_MAX_REQUESTS": "bulk_split_max_requests",
}


class MoEngageSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    api_endpoint: str
    workspace_id: str
    api_key: SecretStr
    # MOENGAGE_OBJECT_ATTRIBUTES: the workspace has the Object data type enabled (§6.3); without
    # it object values are flattened to dot-joined keys
    object_attributes: bool = False
    # MOENGAGE_BULK_SPLIT_MAX_REQUESTS: a bulk refused with 400 as a whole is bisected to isolate
    # the bad elements with at most this many extra requests (two per halving: 18 for 500)
    bulk_split_max_requests: int = Field(default=32, ge=0)
    # MOENGAGE_REQUIRE_IDENTIFIER: an event without identifiers.moengage is dead-lettered
    # (destination_validation, missing_identifier) instead of falling back to member_id
    require_identifier: bool = False
    # destination-apis.md §2.4: bulk /transition takes at most 100 KB per call.
    max_body_bytes: int = Field(default=100_000, ge=1024, le=102_400)
    max_elements_per_request: int = Field(default=1000, ge=1)


class MoEngageDelivery(DeliverySettings):
    """MoEngage limits bulk imports in users and events per minute (destination-apis.md §6.3).

    The current rate-limits page says 60,000 users and 60,000 events per minute per workspace;
    an older version of the API reference says 10,000 users and 30,000 events. The defaults
    follow the current page; set the older figures if your workspace gets 429s below them.
    ``rate_limit`` (``rate_unit`` items per second) is an optional extra cap, off by default.
    """

    rate_unit: Literal["requests", "items"] = "items"
    users_per_minute: float = Field(default=60_000, ge=0)
    events_per_minute: float = Field(default=60_000, ge=0)


def customers(request: Request) -> float:
    """Users a bulk request updates: one per customer element."""
    return float(sum(1 for item in request.items if item.kind == "customer"))


def events(request: Request) -> float:
    """Events a bulk request tracks: the actions of its event elements (one each here)."""
    return float(sum(1 for item in request.items if item.kind == "event"))


def families(delivery: MoEngageDelivery) -> tuple[Family, ...]:
    meters = [
        Meter("users", delivery.users_per_minute / 60, customers),
        Meter("events", delivery.events_per_minute / 60, events),
    ]
    if delivery.rate_limit > 0:
        meters.append(delivery.meter())
    return (Family("transition", delivery.concurrency, tuple(meters)),)
