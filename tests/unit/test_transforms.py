"""Each destination's pure functions against the documented shapes (destination-apis.md)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from worker.destinations.base import Response
from worker.destinations.braze import DESTINATION as BRAZE
from worker.destinations.braze.config import BrazeSettings
from worker.destinations.kognitiv import DESTINATION as KOGNITIV
from worker.destinations.kognitiv.config import KognitivSettings
from worker.destinations.kognitiv.response import TokenRejected
from worker.destinations.moengage import DESTINATION as MOENGAGE
from worker.destinations.moengage.config import MoEngageSettings
from worker.destinations.sessionm import DESTINATION as SESSIONM
from worker.destinations.sessionm.config import SessionMSettings
from worker.errors import Rejected, Retryable, Throttled, TransformError
from worker.events import LoyaltyEvent

BRAZE_SETTINGS = BrazeSettings(rest_endpoint="https://rest.iad-01.braze.com/", api_key="bk-secret")
MOENGAGE_SETTINGS = MoEngageSettings(
    api_endpoint="https://api-01.moengage.com", workspace_id="WS", api_key="mk-secret"
)
SESSIONM_SETTINGS = SessionMSettings(
    core_endpoint="https://api-x.ent-sessionm.com", api_key="sk/key", api_secret="ss-secret"
)
KOGNITIV_SETTINGS = KognitivSettings(
    api_base_url="https://app.kognitivloyalty.com", client_id="c", client_secret="ks"
)


def _event(
    event_type: str, data: dict[str, Any], member: str = "m-1", eid: str = "e-1"
) -> LoyaltyEvent:
    return LoyaltyEvent(eid, event_type, 1, "2026-11-20T10:00:00+01:00", member, "kognitiv", data)


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, orjson.dumps(body) if body is not None else b"")


def test_braze_track_request_golden_body() -> None:
    """Attributes come before events in one /users/track body built from pre-encoded items."""
    reward = BRAZE.transform(
        _event("rewards_issued", {"reward_type": "r", "points": 5}), BRAZE_SETTINGS
    )
    enrolled = BRAZE.transform(
        _event("member_enrolled", {"email": "a@b.co", "points_available": 9}, "m-2", "e-2"),
        BRAZE_SETTINGS,
    )
    request = BRAZE.build("users/track", reward + enrolled, BRAZE_SETTINGS)
    assert request.url == "https://rest.iad-01.braze.com/users/track"
    assert orjson.loads(request.body or b"") == {
        "attributes": [{"external_id": "m-2", "email": "a@b.co", "total_points_balance": 9}],
        "events": [
            {
                "external_id": "m-1",
                "name": "rewards_issued",
                "time": "2026-11-20T10:00:00+01:00",
                "properties": {"reward_type": "r", "points": 5, "event_id": "e-1"},
            }
        ],
    }
    assert request.items == tuple(reward + enrolled)
    assert BRAZE.auth_headers(BRAZE_SETTINGS) == {"Authorization": "Bearer bk-secret"}
    assert "bk-secret" not in repr(request)


def test_braze_campaign_recipients_and_broadcast() -> None:
    """Campaign offers become recipients with trigger_properties; broadcast has none."""
    offer = {"offer_id": "o", "braze_campaign_id": "c-1", "offer_title": "t"}
    (recipient,) = BRAZE.transform(_event("offer_issued", offer), BRAZE_SETTINGS)
    assert recipient.group == "campaign:c-1"
    request = BRAZE.build(recipient.group, [recipient], BRAZE_SETTINGS)
    assert request.url.endswith("/campaigns/trigger/send")
    assert orjson.loads(request.body or b"") == {
        "campaign_id": "c-1",
        "broadcast": False,
        "recipients": [
            {
                "external_user_id": "m-1",
                "trigger_properties": {"offer_id": "o", "offer_title": "t", "event_id": "e-1"},
            }
        ],
    }
    assert BRAZE.batch_rule("campaign:c-1", BRAZE_SETTINGS).max_items == 50
    canvas = {"offer_id": "o", "braze_canvas_id": "v-1", "broadcast": True}
    (broadcast,) = BRAZE.transform(_event("offer_issued", canvas), BRAZE_SETTINGS)
    request = BRAZE.build(broadcast.group, [broadcast], BRAZE_SETTINGS)
    assert request.url.endswith("/canvas/trigger/send")
    assert orjson.loads(request.body or b"") == {
        "canvas_id": "v-1",
        "broadcast": True,
        "canvas_entry_properties": {"offer_id": "o", "event_id": "e-1"},
    }


@pytest.mark.parametrize(
    "data",
    [
        {"offer_id": "o", "description": "x" * 256},
        {"offer_id": "o", "campaign": {"custom_data": {"$set": 1}}},
        {"offer_id": "o", "campaign": {"custom_data": {"k": ["x"] * 20_000}}},
    ],
    ids=["string-over-255", "dollar-name", "nested-over-50kb"],
)
def test_braze_refuses_values_braze_would_drop(data: dict[str, Any]) -> None:
    """Values Braze rejects become a destination_validation error, never a silent truncation."""
    with pytest.raises(TransformError) as caught:
        BRAZE.transform(_event("offer_issued", data), BRAZE_SETTINGS)
    assert caught.value.reason == "destination_validation"


def test_braze_partial_failure_maps_back_to_items() -> None:
    """errors[] naming input_array and index mark exactly those items as rejected."""
    items = []
    for i in range(3):
        items += BRAZE.transform(
            _event("rewards_issued", {"reward_type": "r"}, f"m-{i}", f"e-{i}"), BRAZE_SETTINGS
        )
    items += BRAZE.transform(
        _event("member_enrolled", {"first_name": "A"}, "m-9", "e-9"), BRAZE_SETTINGS
    )
    request = BRAZE.build("users/track", items, BRAZE_SETTINGS)
    body = {
        "message": "success",
        "errors": [
            {"type": "'quantity' is not valid", "input_array": "events", "index": 1},
            {"type": "bad email", "input_array": "attributes", "index": 0},
        ],
    }
    accepted = BRAZE.check(_response(201, body), request)
    assert accepted.rejected == {1: "'quantity' is not valid", 3: "bad email"}


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "retry_after"),
    [
        (429, {"X-Ratelimit-Retry-After": "7"}, {"message": "Rate Limited"}, Throttled, 7.0),
        (429, {"X-RateLimit-Reset": "12"}, None, Throttled, 12.0),
        (503, {}, None, Retryable, None),
        (408, {}, None, Retryable, None),
        (401, {}, {"message": "Invalid API Key"}, Rejected, None),
        (400, {}, {"message": "Valid data must be provided"}, Rejected, None),
        (200, {}, {"message": "something else"}, Rejected, None),
    ],
)
def test_braze_status_table(
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[Exception],
    retry_after: float | None,
) -> None:
    """429/408/5xx are retryable (with the server's wait), other 4xx permanent."""
    request = BRAZE.build(
        "users/track",
        BRAZE.transform(_event("rewards_issued", {"reward_type": "r"}), BRAZE_SETTINGS),
        BRAZE_SETTINGS,
    )
    with pytest.raises(error) as caught:
        BRAZE.check(_response(status, body, headers), request)
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert type(caught.value) is error


def test_braze_queued_is_accepted() -> None:
    """202 queued during maintenance counts as accepted."""
    request = BRAZE.build(
        "users/track",
        BRAZE.transform(_event("rewards_issued", {"reward_type": "r"}), BRAZE_SETTINGS),
        BRAZE_SETTINGS,
    )
    assert BRAZE.check(_response(202, {"message": "queued"}), request).rejected == {}


def test_moengage_elements_and_bulk_body() -> None:
    """Events become event elements with UTC current_time; enrollments become customers."""
    (action,) = MOENGAGE.transform(
        _event("rewards_issued", {"reward_type": "r"}), MOENGAGE_SETTINGS
    )
    (customer,) = MOENGAGE.transform(
        _event("member_enrolled", {"home_city": "Lyon", "email": "a@b.co"}, "m-2"),
        MOENGAGE_SETTINGS,
    )
    (audience,) = MOENGAGE.transform(
        _event("audience_membership_changed", {"audience": "vip", "action": "remove"}),
        MOENGAGE_SETTINGS,
    )
    request = MOENGAGE.build("transition", [action, customer, audience], MOENGAGE_SETTINGS)
    assert request.url == "https://api-01.moengage.com/v1/transition/WS"
    assert orjson.loads(request.body or b"") == {
        "type": "transition",
        "elements": [
            {
                "type": "event",
                "customer_id": "m-1",
                "actions": [
                    {
                        "action": "rewards_issued",
                        "attributes": {"reward_type": "r", "event_id": "e-1"},
                        "current_time": "2026-11-20T09:00:00Z",
                    }
                ],
            },
            {
                "type": "customer",
                "customer_id": "m-2",
                "attributes": {"city": "Lyon", "email": "a@b.co"},
            },
            {
                "type": "customer",
                "customer_id": "m-1",
                "attributes": {"removeValueFromArrayField": {"loyalty_audiences": ["vip"]}},
            },
        ],
    }
    auth = MOENGAGE.auth_headers(MOENGAGE_SETTINGS)["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"WS:mk-secret"
    rule = MOENGAGE.batch_rule("transition", MOENGAGE_SETTINGS)
    assert rule.max_bytes == 100_000


@pytest.mark.parametrize("member", ["null", "0", " Unknown ", "x"])
def test_moengage_blocked_customer_ids(member: str) -> None:
    """MoEngage's blocked ids are refused before sending."""
    with pytest.raises(TransformError) as caught:
        MOENGAGE.transform(
            _event("rewards_issued", {"reward_type": "r"}, member), MOENGAGE_SETTINGS
        )
    assert caught.value.reason == "destination_validation"


def test_moengage_status_table() -> None:
    """success is accepted; 429 carries the reset wait; 413 and 401 are permanent."""
    request = MOENGAGE.build(
        "transition",
        MOENGAGE.transform(_event("rewards_issued", {"reward_type": "r"}), MOENGAGE_SETTINGS),
        MOENGAGE_SETTINGS,
    )
    assert MOENGAGE.check(_response(200, {"status": "success"}), request).rejected == {}
    with pytest.raises(Throttled) as caught:
        MOENGAGE.check(_response(429, {"status": "fail"}, {"x-ratelimit-reset": "30"}), request)
    assert caught.value.retry_after == 30.0
    for status in (413, 401, 409):
        with pytest.raises(Rejected):
            MOENGAGE.check(_response(status, {"status": "fail"}), request)


def test_sessionm_tags_call_and_skipped_remove() -> None:
    """add → one tags call with ttl only when given; remove → nothing (skipped)."""
    (item,) = SESSIONM.transform(
        _event(
            "audience_membership_changed",
            {"audience": "vip", "action": "add", "ttl_seconds": 60},
            "m/1",
        ),
        SESSIONM_SETTINGS,
    )
    request = SESSIONM.build(item.group, [item], SESSIONM_SETTINGS)
    # no identifiers.sessionm: member_id is SessionM's external id
    assert request.url == (
        "https://api-x.ent-sessionm.com/priv/v1/apps/sk%2Fkey/external/users/m%2F1/tags"
    )
    assert orjson.loads(request.body or b"") == {"tags": ["vip"], "ttl": 60}
    assert request.endpoint == "external/tags"
    (plain,) = SESSIONM.transform(
        _event("audience_membership_changed", {"audience": "vip", "action": "add"}),
        SESSIONM_SETTINGS,
    )
    assert orjson.loads(plain.encoded) == {"tags": ["vip"]}
    assert (
        SESSIONM.transform(
            _event("audience_membership_changed", {"audience": "vip", "action": "remove"}),
            SESSIONM_SETTINGS,
        )
        == []
    )
    assert (
        SESSIONM.transform(_event("rewards_issued", {"reward_type": "r"}), SESSIONM_SETTINGS) == []
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"status": "error", "errors": {"code": "user_not_found"}}, Rejected),
        ({"status": "error", "errors": {"code": "MISSING_DATA"}}, Rejected),
        ({"status": "error", "errors": {"code": "validation"}}, Rejected),
        ({"status": "error", "errors": {"code": "argument_error"}}, Rejected),
        ({"status": "error", "errors": {"code": "not_available"}}, Retryable),
        ({"unexpected": True}, Retryable),
    ],
)
def test_sessionm_status_error_bodies(body: dict[str, Any], error: type[Exception]) -> None:
    """HTTP 200 with status error: four codes are permanent, the rest retried."""
    (item,) = SESSIONM.transform(
        _event("audience_membership_changed", {"audience": "v", "action": "add"}), SESSIONM_SETTINGS
    )
    request = SESSIONM.build(item.group, [item], SESSIONM_SETTINGS)
    with pytest.raises(error) as caught:
        SESSIONM.check(_response(200, body), request)
    assert type(caught.value) is error
    assert "sk" not in str(caught.value).replace("sessionm", "")


def test_kognitiv_membership_calls_and_statuses() -> None:
    """add → PUT, remove → DELETE on the promotional member path; 401 asks for a new token."""
    (add,) = KOGNITIV.transform(
        _event("audience_membership_changed", {"audience": "VIP 1", "action": "add"}),
        KOGNITIV_SETTINGS,
    )
    put = KOGNITIV.build(add.group, [add], KOGNITIV_SETTINGS)
    assert (put.method, put.url, put.body) == (
        "PUT",
        "https://app.kognitivloyalty.com/api/groups/promotionalMember/VIP%201/members/m-1",
        None,
    )
    (remove,) = KOGNITIV.transform(
        _event("audience_membership_changed", {"audience": "vip", "action": "remove"}),
        KOGNITIV_SETTINGS,
    )
    assert KOGNITIV.build(remove.group, [remove], KOGNITIV_SETTINGS).method == "DELETE"
    with pytest.raises(TokenRejected):
        KOGNITIV.check(_response(401, None), put)
    with pytest.raises(Rejected):
        KOGNITIV.check(_response(404, None), put)
    assert KOGNITIV.check(_response(204, None), put).rejected == {}
    assert (
        KOGNITIV.transform(_event("rewards_issued", {"reward_type": "r"}), KOGNITIV_SETTINGS) == []
    )
