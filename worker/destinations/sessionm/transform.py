"""Audience changes → SessionM Core customer tags (destination-apis.md §3.2, §6.1). Pure.

``add`` → ``POST /priv/v1/apps/{api_key}/users/{identifiers.sessionm}/tags`` when the event
carries SessionM's own user id, else ``POST /priv/v1/apps/{api_key}/external/users/{member_id}
/tags`` (the brand's id is SessionM's external id), with ``{"tags": [audience]}`` (plus ``ttl``
when given). ``remove`` has no documented call: no item, so the pipeline counts and logs it as
skipped. One user per call; the pipeline sends calls concurrently. The user segment is checked
and percent-encoded here, in the transform, so that a bad one is dead-lettered.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from worker.destinations.base import BatchRule, Item, Request
from worker.destinations.values import encode, identifier, path_segment
from worker.events import LoyaltyEvent

from .config import SessionMSettings

NAME: Final = "sessionm"
# item kind → (path below /priv/v1/apps/{api_key}/, endpoint label for logs and metrics)
PATHS: Final = {"user": ("users", "users/tags"), "external": ("external/users", "external/tags")}


def transform(event: LoyaltyEvent, settings: SessionMSettings) -> list[Item]:
    if event.event_type != "audience_membership_changed" or event.data.get("action") != "add":
        return []
    own = event.identifiers.get(NAME)
    user = identifier(event, NAME, required=settings.require_identifier)
    kind = "user" if own else "external"
    body: dict[str, Any] = {"tags": [event.data.get("audience")]}
    if "ttl_seconds" in event.data:
        body["ttl"] = event.data["ttl_seconds"]
    # the group carries the checked, encoded path segment to build (one call per item)
    group = f"{kind}:{path_segment(user, 'user id', NAME)}"
    return [encode(NAME, group, kind, body, event)]


def batch_rule(group: str, settings: SessionMSettings) -> BatchRule:
    return BatchRule(max_items=1, max_bytes=1_000_000)


def build(group: str, items: Sequence[Item], settings: SessionMSettings) -> Request:
    (item,) = items
    kind, _, user = group.partition(":")
    path, endpoint = PATHS[kind]
    key = quote(settings.api_key.get_secret_value(), safe="")
    base = settings.core_endpoint.rstrip("/")
    url = f"{base}/priv/v1/apps/{key}/{path}/{user}/tags"
    return Request("POST", url, item.encoded, (item,), endpoint)


def auth_headers(settings: SessionMSettings) -> dict[str, str]:
    raw = f"{settings.api_key.get_secret_value()}:{settings.api_secret.get_secret_value()}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
