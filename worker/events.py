"""The values that flow through the worker: a consumed Kafka record and a decoded loyalty event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

EVENT_TYPES: Final = (
    "rewards_issued",
    "member_enrolled",
    "offer_issued",
    "audience_membership_changed",
)


@dataclass(frozen=True, slots=True)
class Consumed:
    """One Kafka record exactly as it was read; dead letters are built from these bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class LoyaltyEvent:
    """A loyalty event that passed the envelope and per-type JSON Schemas in ``schemas/``.

    ``data`` is the validated ``data`` object; unknown extra fields are kept but ignored by the
    transformers. ``identifiers`` maps a destination name to that destination's own id for the
    member (the envelope's optional ``identifiers``); destinations fall back to ``member_id``.
    """

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: str
    member_id: str
    source: str | None
    data: Mapping[str, Any]
    identifiers: Mapping[str, str] = field(default_factory=dict)
