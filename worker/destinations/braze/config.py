"""Braze settings (environment: BRAZE_REST_ENDPOINT, BRAZE_API_KEY, BRAZE_APP_ID)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class BrazeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rest_endpoint: str
    api_key: SecretStr
    app_id: str | None = None
    # destination-apis.md §1.2: 75 objects combined is safe under every version of the docs;
    # "per_array" allows 75 attributes + 75 events + 75 purchases (legacy contracts).
    max_objects_per_request: int = Field(default=75, ge=1, le=75)
    batch_mode: Literal["combined", "per_array"] = "combined"
    max_body_bytes: int = Field(default=4_000_000, ge=1024)
    max_recipients_per_send: int = Field(default=50, ge=1, le=50)
