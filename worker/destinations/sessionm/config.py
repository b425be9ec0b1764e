"""SessionM Core settings, their environment variables and delivery defaults."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.destinations.base import DeliverySettings

ENVIRONMENT: Final = {
    "SESSIONM_CORE_ENDPOINT": "core_endpoint",
    "SESSIONM_API_KEY": "api_key",
    "SESSIONM_API_SECRET": "api_secret",
    "SESSIONM_REQUIRE_IDENTIFIER": "require_identifier",
}


class SessionMSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    core_endpoint: str
    # SESSIONM_REQUIRE_IDENTIFIER: an event without identifiers.sessionm is dead-lettered
    # (destination_validation, missing_identifier) instead of falling back to member_id
    require_identifier: bool = False
    # The key is part of every URL path, so URLs are never logged (only endpoint labels are).
    api_key: SecretStr
    api_secret: SecretStr


class SessionMDelivery(DeliverySettings):
    """SessionM publishes no rate limit (destination-apis.md §3.4): bounded concurrency only."""

    concurrency: int = Field(default=16, ge=1)
