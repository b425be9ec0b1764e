"""Braze settings (environment: BRAZE_REST_ENDPOINT, BRAZE_API_KEY, BRAZE_APP_ID)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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
