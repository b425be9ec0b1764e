"""Loyalty events → MoEngage bulk ``/v1/transition`` elements (destination-apis.md §2). Pure.

Events become ``event`` elements with one action each; enrollments and audience changes become
``customer`` elements. Everything shares one group and is packed within the 100 KB bulk limit.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from worker.destinations.base import BatchRule, Item, Request, encode_item
from worker.errors import TransformError
from worker.events import LoyaltyEvent

from .config import MoEngageSettings

GROUP: Final = "transition"
# §2.1: ids MoEngage refuses as customer_id
BLOCKED_IDS: Final = frozenset(
    {
        "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id", "",
        "na", "n/a", "''", "dummy_seller_code", "user_id", "id", "customer_id", "uid", "userid",
        "none", "-2", "-1", "2",
    }
)  # fmt: skip
_CUSTOMER_ATTRIBUTES: Final[Mapping[str, str]] = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "country": "country",
    "home_city": "city",
    "time_zone": "time_zone",
    "points_available": "points_available",
    "email_contact_allowed": "email_contact_allowed",
    "sms_contact_allowed": "sms_contact_allowed",
    "email_subscribe": "email_subscribe",
    "date_joined": "date_joined",
}
_ENVELOPE: Final = b'{"type":"transition","elements":[]}'


def transform(event: LoyaltyEvent, settings: MoEngageSettings) -> list[Item]:
    customer_id = event.member_id.strip()
    if customer_id.lower() in BLOCKED_IDS or len(customer_id) < 2:
        raise TransformError(
            "moengage: member_id is on MoEngage's blocked customer_id list or too short",
            reason="destination_validation",
        )
    data = event.data
    element: dict[str, Any]
    match event.event_type:
        case "rewards_issued" | "offer_issued":
            attributes = {k: v for k, v in data.items() if not k.startswith("braze_")}
            attributes["event_id"] = event.event_id
            _check_names(attributes)
            action = {
                "action": event.event_type,
                "attributes": attributes,
                "current_time": moengage_time(event.occurred_at),
            }
            element = {"type": "event", "customer_id": customer_id, "actions": [action]}
        case "member_enrolled":
            attributes = {
                _CUSTOMER_ATTRIBUTES[k]: v for k, v in data.items() if k in _CUSTOMER_ATTRIBUTES
            }
            element = {"type": "customer", "customer_id": customer_id, "attributes": attributes}
        case "audience_membership_changed":
            operation = (
                "addValueToArrayField" if data["action"] == "add" else "removeValueFromArrayField"
            )
            attributes = {operation: {"loyalty_audiences": [data["audience"]]}}
            element = {"type": "customer", "customer_id": customer_id, "attributes": attributes}
        case _:
            return []
    kind = element["type"]
    return [encode_item(GROUP, kind, element, event, orjson.dumps)]


def batch_rule(group: str, settings: MoEngageSettings) -> BatchRule:
    return BatchRule(
        settings.max_elements_per_request, settings.max_body_bytes, overhead_bytes=len(_ENVELOPE)
    )


def build(group: str, items: Sequence[Item], settings: MoEngageSettings) -> Request:
    url = f"{settings.api_endpoint.rstrip('/')}/v1/transition/{settings.workspace_id}"
    body = b'{"type":"transition","elements":[' + b",".join(i.encoded for i in items) + b"]}"
    return Request("POST", url, body, tuple(items), "transition")


def auth_headers(settings: MoEngageSettings) -> dict[str, str]:
    raw = f"{settings.workspace_id}:{settings.api_key.get_secret_value()}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def moengage_time(value: str) -> str:
    """RFC 3339 → ``YYYY-MM-DDTHH:mm:ssZ`` in UTC, the format MoEngage documents (§2.1)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_names(attributes: Mapping[str, Any]) -> None:
    for name in attributes:
        if name.startswith("moe_") or name in ("id", "_id", ""):
            raise TransformError(
                f"moengage: attribute name {name!r} is reserved", reason="destination_validation"
            )
