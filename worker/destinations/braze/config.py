"""Braze settings, their environment variables and Braze's delivery defaults."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.destinations.base import DeliverySettings, Family, Meter

ENVIRONMENT: Final = {
    "BRAZE_REST_ENDPOINT": "rest_endpoint",
    "BRAZE_API_KEY": "api_key",
    "BRAZE_APP_ID": "app_id",
    "BRAZE_REQUIRE_IDENTIFIER": "require_identifier",
}


class BrazeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rest_endpoint: str
    api_key: SecretStr
    app_id: str | None = None
    # BRAZE_REQUIRE_IDENTIFIER: an event without identifiers.braze is dead-lettered
    # (destination_validation, missing_identifier) instead of falling back to member_id
    require_identifier: bool = False
    # destination-apis.md §1.2: 75 objects combined is safe under every version of the docs;
    # set 50 for the older MAU-plan wording.
    max_objects_per_request: int = Field(default=75, ge=1, le=75)
    max_body_bytes: int = Field(default=4_000_000, ge=1024)
    max_recipients_per_send: int = Field(default=50, ge=1, le=50)


class BrazeDelivery(DeliverySettings):
    """Braze limits each request family on its own (destination-apis.md §1.4, §6.2).

    Rates are for this replica before adaptation; the ``X-RateLimit-*`` window of each family's
    responses paces a pool of replicas (``worker.deliver.flow``).
    """

    # /users/track: 3,000 requests per 3 seconds per workspace
    concurrency: int = Field(default=16, ge=1)
    rate_limit: float = Field(default=1000.0, ge=0)
    # non-broadcast /campaigns/trigger/send + /canvas/trigger/send: 250,000 requests per hour
    messaging_concurrency: int = Field(default=8, ge=1)
    messaging_per_hour: float = Field(default=250_000, ge=0)
    # broadcast trigger sends: 250 requests per minute
    broadcast_concurrency: int = Field(default=2, ge=1)
    broadcast_per_minute: float = Field(default=250, ge=0)


def families(delivery: BrazeDelivery) -> tuple[Family, ...]:
    return (
        Family("track", delivery.concurrency, (delivery.meter(),)),
        Family(
            "messaging",
            delivery.messaging_concurrency,
            (Meter("requests", delivery.messaging_per_hour / 3600),),
        ),
        Family(
            "broadcast",
            delivery.broadcast_concurrency,
            (Meter("requests", delivery.broadcast_per_minute / 60),),
        ),
    )
