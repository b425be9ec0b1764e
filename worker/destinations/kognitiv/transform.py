"""Audience changes → Kognitiv promotional member groups (destination-apis.md §4, §6.1). Pure.

``add`` → ``PUT {base}/api/groups/promotionalMember/{audience}/members/{member}``, ``remove``
→ ``DELETE`` of the same path, where ``member`` is ``identifiers.kognitiv`` (Kognitiv's internal
member id) when the event carries it, else ``member_id``. No body; one member per call. Both
path segments are checked and percent-encoded by :func:`~worker.destinations.values.path_segment`
here, in the transform, so that a bad one is dead-lettered and never reaches ``build``. The
bearer token is added at send time by :class:`~worker.destinations.kognitiv.token.TokenProvider`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from worker.destinations.base import BatchRule, Item, Request
from worker.destinations.values import encode, identifier, path_segment
from worker.events import LoyaltyEvent

from .config import KognitivSettings

NAME: Final = "kognitiv"
ENDPOINT: Final = "groups/promotionalMember"


def transform(event: LoyaltyEvent, settings: KognitivSettings) -> list[Item]:
    if event.event_type != "audience_membership_changed":
        return []
    member = identifier(event, NAME, required=settings.require_identifier)
    payload = {
        "group": path_segment(event.data.get("audience"), "audience", NAME),
        "member": path_segment(member, "member id", NAME),
        "action": event.data.get("action"),
    }
    return [encode(NAME, f"member:{event.member_id}", "membership", payload, event)]


def batch_rule(group: str, settings: KognitivSettings) -> BatchRule:
    return BatchRule(max_items=1, max_bytes=1_000_000)


def build(group: str, items: Sequence[Item], settings: KognitivSettings) -> Request:
    (item,) = items
    base = settings.api_base_url.rstrip("/")
    # both segments were checked and encoded by transform
    group_ref, member = item.payload["group"], item.payload["member"]
    url = f"{base}/api/groups/promotionalMember/{group_ref}/members/{member}"
    if item.payload["action"] == "add":
        return Request("PUT", url, None, (item,), ENDPOINT)
    return Request("DELETE", url, None, (item,), ENDPOINT)
