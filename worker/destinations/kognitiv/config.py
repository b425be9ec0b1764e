"""Kognitiv Inspire settings.

Environment: KOGNITIV_API_BASE_URL, KOGNITIV_CLIENT_ID, KOGNITIV_CLIENT_SECRET.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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
