"""Per-destination identity, path segments, datetimes, nesting and payload rules (issues 10, 12)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from yarl import URL

from worker.destinations.base import Item, Request, Response
from worker.destinations.braze import DESTINATION as BRAZE
from worker.destinations.braze.config import BrazeSettings
from worker.destinations.kognitiv import DESTINATION as KOGNITIV
from worker.destinations.kognitiv.config import KognitivSettings
from worker.destinations.moengage import DESTINATION as MOENGAGE
from worker.destinations.moengage import transform as moengage_transform
from worker.destinations.moengage.config import MoEngageSettings
from worker.destinations.sessionm import DESTINATION as SESSIONM
from worker.destinations.sessionm.config import SessionMSettings
from worker.errors import AuthFailed, Rejected, Retryable, TransformError
from worker.events import LoyaltyEvent

BRAZE_SETTINGS = BrazeSettings(rest_endpoint="https://b", api_key="bk", app_id="app-1")
MOENGAGE_SETTINGS = MoEngageSettings(api_endpoint="https://m", workspace_id="WS", api_key="mk")
SESSIONM_SETTINGS = SessionMSettings(core_endpoint="https://s", api_key="key", api_secret="ss")
KOGNITIV_SETTINGS = KognitivSettings(api_base_url="https://k", client_id="c", client_secret="cs")
AUDIENCE_ADD = {"audience": "vip", "action": "add"}


def _event(
    event_type: str,
    data: dict[str, Any],
    member: str = "m-1",
    identifiers: dict[str, str] | None = None,
    occurred_at: str = "2026-11-20T10:00:00+01:00",
) -> LoyaltyEvent:
    return LoyaltyEvent(
        "e-1", event_type, 1, occurred_at, member, "kognitiv", data, identifiers or {}
    )


def _requests(destination: Any, settings: Any, event: LoyaltyEvent) -> list[Request]:
    items: list[Item] = destination.transform(event, settings)
    return [destination.build(item.group, [item], settings) for item in items]


def _segments(url: str) -> list[str]:
    """The decoded path segments the HTTP client (yarl, under aiohttp) will request."""
    return list(URL(url).parts[1:])


def _invalid(call: Any) -> TransformError:
    with pytest.raises(TransformError) as caught:
        call()
    assert caught.value.reason == "destination_validation"
    return caught.value


IDENTIFIED = {"braze": "b-9", "moengage": "mo-9", "sessionm": "s-9", "kognitiv": "1009"}


def test_each_destination_uses_its_own_identifier_or_member_id() -> None:
    """identifiers.<dest> wins where present; otherwise member_id (and SessionM's external path)."""
    for identifiers, expected in ((IDENTIFIED, "own"), ({}, "member")):
        audience = _event("audience_membership_changed", AUDIENCE_ADD, "m-1", identifiers)
        reward = _event("rewards_issued", {"reward_type": "r"}, "m-1", identifiers)
        own = expected == "own"
        (braze,) = _requests(BRAZE, BRAZE_SETTINGS, reward)
        assert orjson.loads(braze.body or b"")["events"][0]["external_id"] == (
            "b-9" if own else "m-1"
        )
        (moengage,) = _requests(MOENGAGE, MOENGAGE_SETTINGS, reward)
        assert orjson.loads(moengage.body or b"")["elements"][0]["customer_id"] == (
            "mo-9" if own else "m-1"
        )
        (sessionm,) = _requests(SESSIONM, SESSIONM_SETTINGS, audience)
        assert _segments(sessionm.url) == (
            ["priv", "v1", "apps", "key", "users", "s-9", "tags"]
            if own
            else ["priv", "v1", "apps", "key", "external", "users", "m-1", "tags"]
        )
        (kognitiv,) = _requests(KOGNITIV, KOGNITIV_SETTINGS, audience)
        assert _segments(kognitiv.url) == [
            "api",
            "groups",
            "promotionalMember",
            "vip",
            "members",
            "1009" if own else "m-1",
        ]


@pytest.mark.parametrize("name", ["braze", "moengage", "sessionm", "kognitiv"])
def test_require_identifier_dead_letters_only_that_destination(name: str) -> None:
    """<DEST>_REQUIRE_IDENTIFIER refuses an event without identifiers.<dest>: missing_identifier."""
    destinations = {
        "braze": (BRAZE, BRAZE_SETTINGS),
        "moengage": (MOENGAGE, MOENGAGE_SETTINGS),
        "sessionm": (SESSIONM, SESSIONM_SETTINGS),
        "kognitiv": (KOGNITIV, KOGNITIV_SETTINGS),
    }
    destination, settings = destinations[name]
    strict = settings.model_copy(update={"require_identifier": True})
    anonymous = _event("audience_membership_changed", AUDIENCE_ADD)
    error = _invalid(lambda: destination.transform(anonymous, strict))
    assert "missing_identifier" in str(error)
    others = {k: v for k, v in IDENTIFIED.items() if k != name}
    only_others = _event("audience_membership_changed", AUDIENCE_ADD, identifiers=others)
    _invalid(lambda: destination.transform(only_others, strict))
    identified = _event("audience_membership_changed", AUDIENCE_ADD, identifiers=IDENTIFIED)
    assert destination.transform(identified, strict)
    for other, (other_destination, other_settings) in destinations.items():
        if other != name:
            assert other_destination.transform(anonymous, other_settings)


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "a\x00b", "tab\there", "x\x85y", "\ud800", "x" * 256], ids=repr
)
def test_path_segments_that_a_url_cannot_carry_are_destination_validation(bad: str) -> None:
    """Empty, dot segments, control characters, lone surrogates and huge ids never reach a URL."""
    as_member = _event("audience_membership_changed", AUDIENCE_ADD, bad)
    as_audience = _event("audience_membership_changed", {"audience": bad, "action": "remove"})
    as_identifier = _event("audience_membership_changed", AUDIENCE_ADD, "m", {"sessionm": bad})
    _invalid(lambda: SESSIONM.transform(as_member, SESSIONM_SETTINGS))
    _invalid(lambda: KOGNITIV.transform(as_member, KOGNITIV_SETTINGS))
    _invalid(lambda: KOGNITIV.transform(as_audience, KOGNITIV_SETTINGS))
    if bad:  # an empty identifier falls back to member_id
        _invalid(lambda: SESSIONM.transform(as_identifier, SESSIONM_SETTINGS))


@pytest.mark.parametrize("odd", ["...", "a/b", "ü ñ", "%2E%2E", "?x#y", "x" * 255])
def test_unusual_ids_are_encoded_as_exactly_one_segment(odd: str) -> None:
    """Slashes, dots, percent signs and unicode stay inside their one segment."""
    event = _event("audience_membership_changed", {"audience": odd, "action": "remove"}, odd)
    (kognitiv,) = _requests(KOGNITIV, KOGNITIV_SETTINGS, event)
    assert kognitiv.method == "DELETE"
    assert _segments(kognitiv.url) == ["api", "groups", "promotionalMember", odd, "members", odd]
    add = _event("audience_membership_changed", AUDIENCE_ADD, odd)
    (sessionm,) = _requests(SESSIONM, SESSIONM_SETTINGS, add)
    assert _segments(sessionm.url) == [
        "priv",
        "v1",
        "apps",
        "key",
        "external",
        "users",
        odd,
        "tags",
    ]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_datetimes_utc_cannot_hold_are_destination_validation(stamp: str) -> None:
    """occurred_at or a datetime attribute outside years 1..9999 in UTC: typed, no OverflowError."""
    reward = _event("rewards_issued", {"reward_type": "r"}, occurred_at=stamp)
    _invalid(lambda: MOENGAGE.transform(reward, MOENGAGE_SETTINGS))
    _invalid(lambda: BRAZE.transform(reward, BRAZE_SETTINGS))
    joined = _event("member_enrolled", {"date_joined": stamp})
    _invalid(lambda: MOENGAGE.transform(joined, MOENGAGE_SETTINGS))
    _invalid(lambda: BRAZE.transform(joined, BRAZE_SETTINGS))
    expiring = _event("offer_issued", {"offer_id": "o", "expires_at": stamp})
    _invalid(lambda: BRAZE.transform(expiring, BRAZE_SETTINGS))
    nested = _event("offer_issued", {"offer_id": "o", "campaign": {"custom_data": {"at": stamp}}})
    _invalid(lambda: MOENGAGE.transform(nested, MOENGAGE_SETTINGS))


def _deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("levels", [60, 3000])
def test_deep_nesting_is_a_typed_error_not_a_recursion_error(levels: int) -> None:
    """Braze's property walk and MoEngage's flattening refuse deep values without recursing."""
    offer = _event("offer_issued", {"offer_id": "o", "campaign": {"custom_data": _deep(levels)}})
    _invalid(lambda: BRAZE.transform(offer, BRAZE_SETTINGS))
    _invalid(lambda: MOENGAGE.transform(offer, MOENGAGE_SETTINGS))
    shallow = {"offer_id": "o", "campaign": {"custom_data": {"x": [[[[[]]]]] * 2}}}
    assert BRAZE.transform(_event("offer_issued", shallow), BRAZE_SETTINGS)
    assert MOENGAGE.transform(_event("offer_issued", shallow), MOENGAGE_SETTINGS)
    lists = {"offer_id": "o", "campaign": {"custom_data": {"x": _deep_list(levels)}}}
    _invalid(lambda: BRAZE.transform(_event("offer_issued", lists), BRAZE_SETTINGS))
    _invalid(lambda: MOENGAGE.transform(_event("offer_issued", lists), MOENGAGE_SETTINGS))


def _deep_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def test_unencodable_numbers_are_destination_validation() -> None:
    """An integer beyond 64 bits (orjson cannot encode it) is a typed error, not a TypeError."""
    reward = _event("rewards_issued", {"reward_type": "r", "points": 2**70})
    _invalid(lambda: BRAZE.transform(reward, BRAZE_SETTINGS))
    _invalid(lambda: MOENGAGE.transform(reward, MOENGAGE_SETTINGS))


def test_braze_app_id_on_events_never_in_attributes() -> None:
    """app_id travels on events (and sends need none); an attributes object never carries it."""
    (event_item,) = BRAZE.transform(_event("rewards_issued", {"reward_type": "r"}), BRAZE_SETTINGS)
    assert event_item.payload["app_id"] == "app-1"
    for data in ({"email": "a@b.co"}, {"audience": "vip", "action": "add"}):
        kind = "member_enrolled" if "email" in data else "audience_membership_changed"
        (attributes,) = BRAZE.transform(_event(kind, data), BRAZE_SETTINGS)
        assert attributes.kind == "attributes"
        assert "app_id" not in attributes.payload


def test_braze_offer_with_enrollment_creates_the_profile_in_the_send() -> None:
    """enrollment attributes at hand → send_to_existing_only false with attributes; else default."""
    enrolled = {"email": "a@b.co", "first_name": "Ada", "points_available": 5}
    offer = {"offer_id": "o", "braze_campaign_id": "c-1", "enrollment": enrolled}
    (item,) = BRAZE.transform(_event("offer_issued", offer), BRAZE_SETTINGS)
    assert item.payload == {
        "external_user_id": "m-1",
        "send_to_existing_only": False,
        "attributes": {"email": "a@b.co", "first_name": "Ada", "total_points_balance": 5},
        "trigger_properties": {"offer_id": "o", "event_id": "e-1"},
    }
    plain = {"offer_id": "o", "braze_canvas_id": "v-1"}
    (item,) = BRAZE.transform(_event("offer_issued", plain), BRAZE_SETTINGS)
    assert "send_to_existing_only" not in item.payload and "attributes" not in item.payload
    too_long = {**offer, "enrollment": {"first_name": "x" * 256}}
    _invalid(lambda: BRAZE.transform(_event("offer_issued", too_long), BRAZE_SETTINGS))


def test_moengage_flattens_objects_unless_the_workspace_has_object_attributes() -> None:
    """campaign.custom_data.* become dot-joined keys by default; kept as objects when enabled."""
    data = {
        "offer_id": "o",
        "campaign": {"id": "c", "custom_data": {"tier": "gold", "skus": [{"a": 1}], "n": [1, 2]}},
        "enrollment": {"email": "a@b.co"},
    }
    (flat,) = MOENGAGE.transform(_event("offer_issued", data), MOENGAGE_SETTINGS)
    attributes = flat.payload["actions"][0]["attributes"]
    assert attributes == {
        "offer_id": "o",
        "campaign.id": "c",
        "campaign.custom_data.tier": "gold",
        "campaign.custom_data.skus.0.a": 1,
        "campaign.custom_data.n": [1, 2],
        "event_id": "e-1",
    }
    objects = MOENGAGE_SETTINGS.model_copy(update={"object_attributes": True})
    (kept,) = MOENGAGE.transform(_event("offer_issued", data), objects)
    assert kept.payload["actions"][0]["attributes"]["campaign"] == data["campaign"]


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("2026-11-20T10:00:00z", "2026-11-20T10:00:00Z"),
        ("2025-12-31T23:59:60Z", "2025-12-31T23:59:59Z"),
        ("2026-11-20T10:00:00+0100", "2026-11-20T09:00:00Z"),
        ("2026-11-20t10:00:00.1234567-05:30", "2026-11-20T15:30:00Z"),
    ],
)
def test_rfc3339_forms_python_does_not_parse_still_convert(stamp: str, utc: str) -> None:
    """Lower-case z, a leap second, a colon-less offset: schema-valid, so never refused."""
    reward = _event("rewards_issued", {"reward_type": "r", "at": stamp}, occurred_at=stamp)
    (item,) = MOENGAGE.transform(reward, MOENGAGE_SETTINGS)
    action = item.payload["actions"][0]
    assert (action["current_time"], action["attributes"]["at"]) == (utc, utc)
    assert BRAZE.transform(reward, BRAZE_SETTINGS)[0].payload["time"] == stamp


def test_moengage_datetimes_are_utc_z_and_future_events_are_clamped() -> None:
    """Every datetime becomes YYYY-MM-DDTHH:mm:ssZ; a future event's current_time is now."""
    data = {"reward_type": "r", "issued_date": "2026-11-20T10:00:00.250+01:00", "day": "2026-11-20"}
    (item,) = MOENGAGE.transform(_event("rewards_issued", data), MOENGAGE_SETTINGS)
    action = item.payload["actions"][0]
    assert action["current_time"] == "2026-11-20T09:00:00Z"
    assert action["attributes"]["issued_date"] == "2026-11-20T09:00:00Z"
    assert action["attributes"]["day"] == "2026-11-20"
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    future = _event("rewards_issued", {"reward_type": "r"}, occurred_at="2027-01-01T00:00:00Z")
    (item,) = moengage_transform.transform(future, MOENGAGE_SETTINGS, lambda: now)
    action = item.payload["actions"][0]
    assert action["current_time"] == "2026-12-01T12:00:00Z"
    assert action["attributes"]["occurred_at"] == "2027-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("data", "consent"),
    [
        (
            {"email_subscribe": "unsubscribed", "sms_contact_allowed": True},
            {
                "moe_unsubscribe": True,
                "moe_email_optin_status": "OPTOUT",
                "moe_sms_subscription": "OPTIN",
            },
        ),
        (
            {"email_subscribe": "opted_in", "email_contact_allowed": True},
            {"moe_unsubscribe": False, "moe_email_optin_status": "OPTIN"},
        ),
        (
            {"email_subscribe": "opted_in", "email_contact_allowed": False},
            {"moe_unsubscribe": True, "moe_email_optin_status": "OPTOUT"},
        ),
        ({"email_subscribe": "subscribed"}, {"moe_unsubscribe": False}),
        ({"sms_contact_allowed": False}, {"moe_sms_subscription": "OPTOUT"}),
        ({"first_name": "Ada"}, {}),
    ],
)
def test_moengage_consent_goes_to_standard_fields_too(
    data: dict[str, Any], consent: dict[str, Any]
) -> None:
    """moe_unsubscribe / moe_email_optin_status / moe_sms_subscription next to the custom ones."""
    (item,) = MOENGAGE.transform(_event("member_enrolled", data), MOENGAGE_SETTINGS)
    attributes = item.payload["attributes"]
    assert {k: v for k, v in attributes.items() if k.startswith("moe_")} == consent
    for key in ("email_subscribe", "email_contact_allowed", "sms_contact_allowed"):
        if key in data:
            assert attributes[key] == data[key]


def test_moengage_sends_moe_appkey_and_refuses_oversized_elements() -> None:
    """MOE-APPKEY carries the workspace id; one element over the bulk limit is refused early."""
    headers = MOENGAGE.auth_headers(MOENGAGE_SETTINGS)
    assert headers["MOE-APPKEY"] == "WS"
    huge = _event("rewards_issued", {"reward_type": "r", "note": ["x" * 1000] * 120})
    _invalid(lambda: MOENGAGE.transform(huge, MOENGAGE_SETTINGS))


def _sessionm_request() -> Request:
    (request,) = _requests(
        SESSIONM, SESSIONM_SETTINGS, _event("audience_membership_changed", AUDIENCE_ADD)
    )
    return request


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (200, "user_not_found", Rejected),
        (200, "REQUIRES_REGISTERED_USER", Rejected),
        (200, "not_found", Rejected),
        (404, "NOT_FOUND", Rejected),
        (200, "Missing_Data", Rejected),
        (200, "validation", Rejected),
        (200, "ARGUMENT_ERROR", Rejected),
        (200, "invalid_api_key", AuthFailed),
        (401, "INVALID_API_KEY", AuthFailed),
        (401, "access_denied", AuthFailed),
        (200, "not_available", Retryable),
        (500, "internal_server_error", Retryable),
        (200, "something_new", Retryable),
    ],
)
def test_sessionm_error_codes(status: int, code: str, error: type[Exception]) -> None:
    """Per-user codes are permanent, credential codes pause, the rest retry (any letter case)."""
    body = orjson.dumps({"status": "error", "errors": {"code": code}})
    with pytest.raises(error) as caught:
        SESSIONM.check(Response(status, {}, body), _sessionm_request())
    assert type(caught.value) is error
    assert "key" not in str(caught.value).replace("api_key", "")


def test_kognitiv_remove_of_a_non_member_counts_as_delivered() -> None:
    """DELETE answered 404 (already out of the group) is accepted; PUT answered 404 is not."""
    remove = _event("audience_membership_changed", {"audience": "vip", "action": "remove"})
    (delete,) = _requests(KOGNITIV, KOGNITIV_SETTINGS, remove)
    not_member = Response(404, {}, b'{"error":"member_not_in_group"}')
    assert KOGNITIV.check(not_member, delete).rejected == {}
    (put,) = _requests(
        KOGNITIV, KOGNITIV_SETTINGS, _event("audience_membership_changed", AUDIENCE_ADD)
    )
    with pytest.raises(Rejected):
        KOGNITIV.check(Response(404, {}, b'{"error":"member_not_found"}'), put)
    with pytest.raises(Retryable):
        KOGNITIV.check(Response(503, {}, b""), delete)


def test_the_new_settings_come_from_the_environment() -> None:
    """<DEST>_REQUIRE_IDENTIFIER and the MoEngage switches are read; a bad value is one line."""
    from worker.config import load_settings
    from worker.errors import ConfigError

    env = {
        "BRAZE_REST_ENDPOINT": "https://b",
        "BRAZE_API_KEY": "k",
        "BRAZE_REQUIRE_IDENTIFIER": "true",
        "MOENGAGE_API_ENDPOINT": "https://m",
        "MOENGAGE_WORKSPACE_ID": "w",
        "MOENGAGE_API_KEY": "k",
        "MOENGAGE_OBJECT_ATTRIBUTES": "true",
        "MOENGAGE_BULK_SPLIT_MAX_REQUESTS": "0",
    }
    loaded = load_settings(environ=env)
    braze, moengage = loaded.destinations["braze"], loaded.destinations["moengage"]
    assert isinstance(braze, BrazeSettings) and braze.require_identifier
    assert isinstance(moengage, MoEngageSettings)
    assert (moengage.require_identifier, moengage.object_attributes) == (False, True)
    assert moengage.bulk_split_max_requests == 0
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**env, "BRAZE_REQUIRE_IDENTIFIER": "maybe"})
    assert "BRAZE_REQUIRE_IDENTIFIER" in str(caught.value) and "\n" not in str(caught.value)
