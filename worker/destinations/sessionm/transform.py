"""Audience changes → SessionM Core customer tags (destination-apis.md §3.2). Pure.

``add`` → ``POST /priv/v1/apps/{api_key}/users/{member_id}/tags`` with ``{"tags": [audience]}``
(plus ``ttl`` when given). ``remove`` has no documented call: no item, so the pipeline counts
and logs it as skipped. One user per call; the pipeline sends calls concurrently.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

import orjson

from worker.destinations.base import BatchRule, Item, Request, encode_item
from worker.events import LoyaltyEvent

from .config import SessionMSettings

ENDPOINT: Final = "users/tags"


def transform(event: LoyaltyEvent, settings: SessionMSettings) -> list[Item]:
    if event.event_type != "audience_membership_changed" or event.data["action"] != "add":
        return []
    body: dict[str, Any] = {"tags": [event.data["audience"]]}
    if "ttl_seconds" in event.data:
        body["ttl"] = event.data["ttl_seconds"]
    return [encode_item(f"user:{event.member_id}", "tags", body, event, orjson.dumps)]


def batch_rule(group: str, settings: SessionMSettings) -> BatchRule:
    return BatchRule(max_items=1, max_bytes=1_000_000)


def build(group: str, items: Sequence[Item], settings: SessionMSettings) -> Request:
    (item,) = items
    key = quote(settings.api_key.get_secret_value(), safe="")
    member = quote(item.member_id, safe="")
    base = settings.core_endpoint.rstrip("/")
    url = f"{base}/priv/v1/apps/{key}/users/{member}/tags"
    return Request("POST", url, item.encoded, (item,), ENDPOINT)


def auth_headers(settings: SessionMSettings) -> dict[str, str]:
    raw = f"{settings.api_key.get_secret_value()}:{settings.api_secret.get_secret_value()}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
