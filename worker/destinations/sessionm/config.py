"""SessionM Core settings.

Environment: SESSIONM_CORE_ENDPOINT, SESSIONM_API_KEY, SESSIONM_API_SECRET.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class SessionMSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    core_endpoint: str
    # SESSIONM_REQUIRE_IDENTIFIER: an event without identifiers.sessionm is dead-lettered
    # (destination_validation, missing_identifier) instead of falling back to member_id
    require_identifier: bool = False
    # The key is part of every URL path, so URLs are never logged (only endpoint labels are).
    api_key: SecretStr
    api_secret: SecretStr
