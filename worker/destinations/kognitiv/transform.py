"""Audience changes → Kognitiv promotional member groups (destination-apis.md §4). Pure.

``add`` → ``PUT {base}/api/groups/promotionalMember/{audience}/members/{member_id}``,
``remove`` → ``DELETE`` of the same path. No body; one member per call. The bearer token is
added at send time by :class:`~worker.destinations.kognitiv.token.TokenProvider`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

import orjson

from worker.destinations.base import BatchRule, Item, Request, encode_item
from worker.events import LoyaltyEvent

from .config import KognitivSettings

ENDPOINT: Final = "groups/promotionalMember"


def transform(event: LoyaltyEvent, settings: KognitivSettings) -> list[Item]:
    if event.event_type != "audience_membership_changed":
        return []
    payload = {"group": event.data["audience"], "action": event.data["action"]}
    return [encode_item(f"member:{event.member_id}", "membership", payload, event, orjson.dumps)]


def batch_rule(group: str, settings: KognitivSettings) -> BatchRule:
    return BatchRule(max_items=1, max_bytes=1_000_000)


def build(group: str, items: Sequence[Item], settings: KognitivSettings) -> Request:
    (item,) = items
    group_ref = quote(str(item.payload["group"]), safe="")
    member = quote(item.member_id, safe="")
    base = settings.api_base_url.rstrip("/")
    url = f"{base}/api/groups/promotionalMember/{group_ref}/members/{member}"
    if item.payload["action"] == "add":
        return Request("PUT", url, None, (item,), ENDPOINT)
    return Request("DELETE", url, None, (item,), ENDPOINT)
