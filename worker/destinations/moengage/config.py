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
    # destination-apis.md §2.4: bulk /transition takes at most 100 KB per call.
    max_body_bytes: int = Field(default=100_000, ge=1024, le=102_400)
    max_elements_per_request: int = Field(default=1000, ge=1)
