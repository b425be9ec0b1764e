"""MoEngage settings.

Environment: MOENGAGE_API_ENDPOINT, MOENGAGE_WORKSPACE_ID, MOENGAGE_API_KEY.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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
