"""Kognitiv Inspire settings, their environment variables and delivery defaults."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.destinations.base import DeliverySettings

ENVIRONMENT: Final = {
    "KOGNITIV_API_BASE_URL": "api_base_url",
    "KOGNITIV_CLIENT_ID": "client_id",
    "KOGNITIV_CLIENT_SECRET": "client_secret",
    "KOGNITIV_REQUIRE_IDENTIFIER": "require_identifier",
}


class KognitivSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    api_base_url: str
    client_id: str
    client_secret: SecretStr
    # KOGNITIV_REQUIRE_IDENTIFIER: an event without identifiers.kognitiv is dead-lettered
    # (destination_validation, missing_identifier) instead of falling back to member_id
    require_identifier: bool = False
    # refresh the OAuth token this many seconds before it expires
    token_refresh_margin_seconds: float = Field(default=60.0, ge=0)


class KognitivDelivery(DeliverySettings):
    """Kognitiv publishes no rate limit (destination-apis.md §4): bounded concurrency only."""

    concurrency: int = Field(default=16, ge=1)
