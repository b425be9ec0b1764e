"""Loyalty events → Braze objects and requests (destination-apis.md §1.2, §1.3, §6.2). Pure.

Groups: ``users/track`` (attributes and events, up to 75 objects combined and 4 MB),
``campaign:<id>`` / ``canvas:<id>`` (trigger sends, up to 50 recipients), and one group per
broadcast event (``broadcast:<event_id>``: no recipients, one per request).

Identity: ``external_id`` (``external_user_id`` in sends) is ``identifiers.braze`` when the event
carries it, else ``member_id``. ``app_id`` goes on events only: in an attributes object it
would create a custom attribute and cost a data point on every write (§6.2). A trigger send for
an offer that carries ``enrollment`` attributes creates the profile when Braze does not have it
yet (per recipient ``send_to_existing_only: false`` with those ``attributes``, §1.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from worker.destinations.base import BatchRule, Item, Request
from worker.destinations.values import (
    CONTAINERS,
    RFC3339,
    check_nesting,
    encode,
    identifier,
    invalid,
    utc_datetime,
)
from worker.errors import TransformError
from worker.events import LoyaltyEvent

from .config import BrazeSettings

NAME: Final = "braze"
TRACK: Final = "users/track"
# Braze documents no depth limit for properties; this keeps every walk and orjson (limit 254)
# far from trouble while allowing any realistic nesting
MAX_NESTING: Final = 50
MAX_STRING: Final = 255
MAX_NESTED_BYTES: Final = 50 * 1024
MAX_ITEM_BYTES: Final = 100 * 1024
_KIND_ORDER: Final = ("attributes", "events", "purchases")
SEND_ENDPOINTS: Final = {"campaign": "campaigns/trigger/send", "canvas": "canvas/trigger/send"}
# member_enrolled data field → Braze attribute (standard names where Braze has one)
_ATTRIBUTES: Final[Mapping[str, str]] = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "country": "country",
    "home_city": "home_city",
    "time_zone": "time_zone",
    "email_subscribe": "email_subscribe",
    "points_available": "total_points_balance",
    "date_joined": "date_joined",
    "email_contact_allowed": "email_contact_allowed",
    "sms_contact_allowed": "sms_contact_allowed",
}
_OFFER_FIELDS: Final = (
    "offer_id",
    "user_offer_id",
    "offer_title",
    "description",
    "terms_and_conditions",
    "logo_url",
    "pos_discount_id",
    "expires_at",
    "points_award_amount",
    "point_account_name",
    "campaign",
)
_REWARD_FIELDS: Final = (
    "reward_type",
    "issued_date",
    "issued_location_name",
    "reward_id",
    "points",
)


def transform(event: LoyaltyEvent, settings: BrazeSettings) -> list[Item]:
    data = event.data
    match event.event_type:
        case "rewards_issued":
            return [_custom_event(event, "rewards_issued", _pick(data, _REWARD_FIELDS), settings)]
        case "member_enrolled":
            # No event_id here: every attribute written costs a Braze data point, and
            # attribute updates are idempotent anyway.
            return [_attributes(event, _enrollment_attributes(data), settings)]
        case "offer_issued":
            return [_offer(event, settings)]
        case "audience_membership_changed":
            change = {data["action"]: [data["audience"]]}
            return [_attributes(event, {"loyalty_audiences": change}, settings)]
    return []


def batch_rule(group: str, settings: BrazeSettings) -> BatchRule:
    if group == TRACK:
        return BatchRule(settings.max_objects_per_request, settings.max_body_bytes, 64)
    if group.startswith(("campaign:", "canvas:")):
        return BatchRule(settings.max_recipients_per_send, settings.max_body_bytes, 256)
    return BatchRule(1, settings.max_body_bytes)


def build(group: str, items: Sequence[Item], settings: BrazeSettings) -> Request:
    base = settings.rest_endpoint.rstrip("/")
    if group == TRACK:
        parts = []
        for kind in _KIND_ORDER:
            encoded = [item.encoded for item in items if item.kind == kind]
            if encoded:
                parts.append(b'"' + kind.encode() + b'":[' + b",".join(encoded) + b"]")
        body = b"{" + b",".join(parts) + b"}"
        return Request("POST", f"{base}/users/track", body, tuple(items), TRACK)
    kind, _, target = group.partition(":")
    if kind in ("campaign", "canvas"):
        head = orjson.dumps({f"{kind}_id": target, "broadcast": False})[:-1]
        body = head + b',"recipients":[' + b",".join(i.encoded for i in items) + b"]}"
        endpoint = SEND_ENDPOINTS[kind]
        return Request("POST", f"{base}/{endpoint}", body, tuple(items), endpoint)
    (item,) = items  # broadcast: the payload is the whole body
    endpoint = SEND_ENDPOINTS[item.kind]
    return Request("POST", f"{base}/{endpoint}", item.encoded, (item,), endpoint)


def auth_headers(settings: BrazeSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}


def _external_id(event: LoyaltyEvent, settings: BrazeSettings) -> str:
    return identifier(event, NAME, required=settings.require_identifier)


def _custom_event(
    event: LoyaltyEvent, name: str, properties: dict[str, Any], settings: BrazeSettings
) -> Item:
    properties["event_id"] = event.event_id
    _check_properties(properties)
    utc_datetime(event.occurred_at, "occurred_at", NAME)  # Braze cannot take what UTC cannot
    payload: dict[str, Any] = {"external_id": _external_id(event, settings), "name": name}
    if settings.app_id:
        payload["app_id"] = settings.app_id
    payload["time"] = event.occurred_at
    payload["properties"] = properties
    return _item(TRACK, "events", payload, event)


def _attributes(event: LoyaltyEvent, fields: dict[str, Any], settings: BrazeSettings) -> Item:
    # no app_id: the attributes object has no such field (it would become a custom attribute)
    payload: dict[str, Any] = {"external_id": _external_id(event, settings)}
    _check_attribute_values(fields)
    payload.update(fields)
    return _item(TRACK, "attributes", payload, event)


def _enrollment_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    return {_ATTRIBUTES[k]: v for k, v in data.items() if k in _ATTRIBUTES}


def _check_attribute_values(fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise invalid(NAME, f"attribute {key} is over {MAX_STRING} characters")
        _check_datetime(key, value)


def _check_datetime(name: str, value: Any) -> None:
    """A datetime value must be one UTC can hold (Braze stores datetimes in UTC)."""
    if isinstance(value, str) and RFC3339.match(value):
        utc_datetime(value, str(name)[:40], NAME)


def _offer(event: LoyaltyEvent, settings: BrazeSettings) -> Item:
    data = event.data
    properties = _pick(data, _OFFER_FIELDS)
    campaign_id = data.get("braze_campaign_id")
    canvas_id = data.get("braze_canvas_id")
    if not campaign_id and not canvas_id:
        return _custom_event(event, "offer_issued", properties, settings)
    properties["event_id"] = event.event_id
    _check_properties(properties)
    kind, target = ("campaign", campaign_id) if campaign_id else ("canvas", canvas_id)
    property_key = "trigger_properties" if kind == "campaign" else "canvas_entry_properties"
    if data.get("broadcast"):
        body = {f"{kind}_id": target, "broadcast": True, property_key: properties}
        return _item(f"broadcast:{event.event_id}", kind, body, event)
    recipient: dict[str, Any] = {"external_user_id": _external_id(event, settings)}
    enrollment = data.get("enrollment")
    attributes = _enrollment_attributes(enrollment) if isinstance(enrollment, Mapping) else {}
    if attributes:
        # a member enrolled moments ago may not exist in Braze yet; with attributes at hand the
        # send creates (or updates) the profile first instead of skipping them (§1.3, §6.2)
        _check_attribute_values(attributes)
        recipient["send_to_existing_only"] = False
        recipient["attributes"] = attributes
    recipient[property_key] = properties
    return _item(f"{kind}:{target}", "recipients", recipient, event)


def _item(group: str, kind: str, payload: dict[str, Any], event: LoyaltyEvent) -> Item:
    item = encode(NAME, group, kind, payload, event)
    if len(item.encoded) > MAX_ITEM_BYTES:
        size = len(item.encoded)
        raise invalid(NAME, f"one object would be {size} bytes, over {MAX_ITEM_BYTES}")
    return item


def _pick(data: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {field: data[field] for field in fields if field in data}


def _check_properties(properties: Mapping[str, Any]) -> None:
    """Braze's property rules (§1.2): names 1..255 chars not starting with $, strings ≤ 255."""
    try:
        for name, value in properties.items():
            if type(name) is not str or isinstance(value, CONTAINERS):
                break
            # flat so far: the general walk's checks, inline (most properties are flat)
            if not name or len(name) > MAX_STRING or name[0] == "$":
                raise invalid(
                    NAME, f"property name {name[:40]!r} is empty, too long or starts with $"
                )
            if isinstance(value, str):
                if len(value) > MAX_STRING:
                    raise invalid(NAME, f"property {name[:40]} is over {MAX_STRING} characters")
                if RFC3339.match(value):
                    utc_datetime(value, name[:40], NAME)
        else:
            return
    except TransformError:
        # the general walk's nesting rule goes first: only flat properties fail here
        if not any(type(n) is not str or isinstance(v, CONTAINERS) for n, v in properties.items()):
            raise
    _check_nested_properties(properties)


def _check_nested_properties(properties: Mapping[str, Any]) -> None:
    """:func:`_check_properties` for properties holding objects or arrays (or odd keys)."""
    check_nesting(properties, MAX_NESTING, "properties", NAME)
    nested = False
    for name, value in _walk(properties):
        if not name or len(name) > MAX_STRING or name.startswith("$"):
            raise invalid(NAME, f"property name {name[:40]!r} is empty, too long or starts with $")
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise invalid(NAME, f"property {name[:40]} is over {MAX_STRING} characters")
        _check_datetime(name, value)
        nested = nested or isinstance(value, dict | list)
    if nested and len(_dumps(properties)) > MAX_NESTED_BYTES:
        raise invalid(NAME, "properties with nested values are over 50 KB")


def _walk(properties: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every (name, value) pair, nested objects included (their keys follow the same rules).

    Iterative, so nesting depth costs memory, not stack (the depth is bounded before anyway).
    """
    out: list[tuple[str, Any]] = []
    stack: list[Mapping[str, Any]] = [properties]
    while stack:
        for name, value in stack.pop().items():
            out.append((str(name), value))
            if isinstance(value, dict):
                stack.append(value)
    return out


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise invalid(NAME, f"properties cannot be encoded as JSON ({exc})") from None
