"""worker.ingest.mapping: Kognitiv's template bodies and native events → validated records."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.decode import decode
from worker.destinations.braze import transform as braze_transform
from worker.events import Consumed
from worker.ingest.mapping import (
    BRAZE_ATTRIBUTE_FIELDS,
    BRAZE_ROUTE,
    MOENGAGE_ROUTE,
    BodyError,
    Record,
    Rejection,
    braze_webhook,
    coerce,
    derive_event_id,
    moengage_webhook,
    native_events,
)

RECEIVED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
REWARD_ITEM = {
    "external_id": "KLS-1",
    "app_id": "93ec5a59-3752-4a45-8559-55b61209ba38",
    "name": "rewards_issued",
    "time": "2026-11-20T09:30:00Z",
    "issued_date": "2026-11-20T09:30:00Z",
    "issued_location_name": "Store #12",
    "reward_type": "free_coffee",
}
ENROLLMENT_ITEM = {
    "app_id": "93ec5a59-3752-4a45-855b6109ba38",
    "bio": "Software Architect",
    "country": "US",
    "email": "ada@example.com",
    "email_subscribe": "opted_in",
    "external_id": "KLS-2",
    "first_name": "Ada",
    "home_city": "Chicago",
    "time_zone": "America/Chicago",
    "total_points_balance": "1200",
    "CreatedKLS": "2026-11-20T09:31:12Z",
    "email_contact_allowed": "True",
    "sms_contact_allowed": "false",
    "date_joined": "2026-11-20T09:31:00",
}
MOENGAGE_BODY = {
    "type": "event",
    "customer_id": "KLS-3",
    "actions": [
        {
            "action": "rewards_issued",
            "attributes": {
                "time": "2026-11-20T09:32:00Z",
                "issued_date": "2026-11-20T09:32:00Z",
                "issued_location_name": "Store #7",
                "reward_type": "birthday_treat",
            },
        }
    ],
}


def envelope(outcome: Any) -> dict[str, Any]:
    assert isinstance(outcome, Record), outcome
    value: dict[str, Any] = orjson.loads(outcome.value)
    return value


def only(outcomes: list[Any]) -> Any:
    (outcome,) = outcomes
    return outcome


def test_braze_reward_event_becomes_rewards_issued() -> None:
    """external_id → member_id, time → occurred_at, everything else → data, source kognitiv."""
    event = envelope(only(braze_webhook({"events": [REWARD_ITEM]}, RECEIVED)))
    assert event == {
        "event_id": event["event_id"],
        "event_type": "rewards_issued",
        "schema_version": 1,
        "occurred_at": "2026-11-20T09:30:00Z",
        "source": "kognitiv",
        "member_id": "KLS-1",
        "data": {
            "app_id": REWARD_ITEM["app_id"],
            "issued_date": "2026-11-20T09:30:00Z",
            "issued_location_name": "Store #12",
            "reward_type": "free_coffee",
        },
    }
    assert event["event_id"].startswith("ing-")


def test_braze_enrollment_attributes_are_renamed_and_typed() -> None:
    """Strings become the schema's numbers and booleans; unknown fields stay, as sent."""
    record = only(braze_webhook({"attributes": [ENROLLMENT_ITEM]}, RECEIVED))
    event = envelope(record)
    assert event["event_type"] == "member_enrolled"
    assert event["member_id"] == "KLS-2"
    assert event["occurred_at"] == "2026-11-20T09:31:00Z"  # date_joined, no offset → UTC
    assert event["data"] == {
        "app_id": ENROLLMENT_ITEM["app_id"],
        "bio": "Software Architect",
        "country": "US",
        "email": "ada@example.com",
        "email_subscribe": "opted_in",
        "first_name": "Ada",
        "home_city": "Chicago",
        "time_zone": "America/Chicago",
        "points_available": 1200,
        "CreatedKLS": "2026-11-20T09:31:12Z",
        "email_contact_allowed": True,
        "sms_contact_allowed": False,
        "date_joined": "2026-11-20T09:31:00Z",
    }
    # what the ingest accepts, the worker decodes (the same function checks both)
    decoded = decode(Consumed("t", 0, 0, b"KLS-2", record.value))
    assert decoded.data["points_available"] == 1200


def test_enrollment_time_falls_back_to_created_kls_then_the_receive_time() -> None:
    """date_joined, else CreatedKLS, else when the webhook arrived."""
    item = {k: v for k, v in ENROLLMENT_ITEM.items() if k != "date_joined"}
    assert envelope(only(braze_webhook({"attributes": [item]}, RECEIVED)))["occurred_at"] == (
        "2026-11-20T09:31:12Z"
    )
    del item["CreatedKLS"]
    assert envelope(only(braze_webhook({"attributes": [item]}, RECEIVED)))["occurred_at"] == (
        "2026-12-01T15:00:00Z"
    )


def test_braze_attribute_names_are_the_inverse_of_the_braze_transform() -> None:
    """An enrollment posted in Braze's names reaches Braze under the same names."""
    to_braze = braze_transform._ATTRIBUTES
    for braze_name, field in BRAZE_ATTRIBUTE_FIELDS.items():
        assert to_braze[field] == braze_name
    renamed = {braze: field for field, braze in to_braze.items() if braze != field}
    assert renamed == dict(BRAZE_ATTRIBUTE_FIELDS)


def test_moengage_action_becomes_an_event_of_its_type() -> None:
    """customer_id → member_id, attributes.time → occurred_at, attributes → data."""
    event = envelope(only(moengage_webhook(MOENGAGE_BODY, RECEIVED)))
    assert event["event_type"] == "rewards_issued"
    assert event["member_id"] == "KLS-3"
    assert event["source"] == "kognitiv"
    assert event["occurred_at"] == "2026-11-20T09:32:00Z"
    assert event["data"] == {
        "issued_date": "2026-11-20T09:32:00Z",
        "issued_location_name": "Store #7",
        "reward_type": "birthday_treat",
    }


def test_derived_event_id_is_stable_for_a_retry_and_differs_between_items() -> None:
    """Same route and item bytes → same event_id; another member or route → another id."""
    first = only(braze_webhook({"events": [REWARD_ITEM]}, RECEIVED))
    retry = only(braze_webhook(copy.deepcopy({"events": [REWARD_ITEM]}), datetime.now(UTC)))
    assert first.event_id == retry.event_id
    other = only(braze_webhook({"events": [{**REWARD_ITEM, "external_id": "KLS-9"}]}, RECEIVED))
    assert other.event_id != first.event_id
    moe = only(moengage_webhook(MOENGAGE_BODY, RECEIVED))
    moe_other = only(moengage_webhook({**MOENGAGE_BODY, "customer_id": "KLS-4"}, RECEIVED))
    assert moe.event_id != moe_other.event_id  # the customer is part of the action's identity
    assert derive_event_id(BRAZE_ROUTE, b"x") != derive_event_id(MOENGAGE_ROUTE, b"x")


def test_an_event_id_in_the_body_is_kept() -> None:
    """A sender that has its own ids keeps them (and they leave data)."""
    event = envelope(
        only(braze_webhook({"events": [{**REWARD_ITEM, "event_id": "k-1"}]}, RECEIVED))
    )
    assert event["event_id"] == "k-1"
    assert "event_id" not in event["data"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("total_points_balance", "lots", "attributes[0].total_points_balance: not a number"),
        ("email_contact_allowed", "maybe", "attributes[0].email_contact_allowed: not a boolean"),
        ("date_joined", "20/11/2026", "attributes[0].date_joined: not an ISO 8601 date-time"),
        ("country", "usa", "attributes[0].country violates pattern"),
        ("email_subscribe", "opted_out", "attributes[0].email_subscribe violates enum"),
        ("email", "not-an-address", "attributes[0].email violates format"),
        ("first_name", "{{memberFirstName}}", "placeholder was not filled in"),
    ],
)
def test_values_the_schema_cannot_hold_are_rejected_naming_the_template_field(
    field: str, value: str, message: str
) -> None:
    """Coercion failures and schema violations name the field as the template calls it."""
    rejection = only(braze_webhook({"attributes": [{**ENROLLMENT_ITEM, field: value}]}, RECEIVED))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "schema_violation"
    assert rejection.field == field
    assert message in rejection.error
    assert value not in rejection.error.replace(message, "")  # values are not echoed


def test_empty_template_values_mean_not_set() -> None:
    """Kognitiv renders a missing member value as "": optional fields are left out."""
    item = {**ENROLLMENT_ITEM, "total_points_balance": "", "sms_contact_allowed": " "}
    data = envelope(only(braze_webhook({"attributes": [item]}, RECEIVED)))["data"]
    assert "points_available" not in data and "sms_contact_allowed" not in data
    rejection = only(braze_webhook({"events": [{**REWARD_ITEM, "reward_type": ""}]}, RECEIVED))
    assert isinstance(rejection, Rejection) and rejection.field == "reward_type"


def test_item_level_problems_use_the_dead_letter_reasons() -> None:
    """Missing member, unknown event name, non-object items: one rejection each, with index."""
    body = {
        "events": [
            {k: v for k, v in REWARD_ITEM.items() if k != "external_id"},
            {**REWARD_ITEM, "name": "points_moved"},
            "not an object",
            REWARD_ITEM,
        ]
    }
    outcomes = braze_webhook(body, RECEIVED)
    assert [(o.index, o.item, getattr(o, "reason", "ok")) for o in outcomes] == [
        (0, "events[0]", "missing_member_id"),
        (1, "events[1]", "unknown_event_type"),
        (2, "events[2]", "not_an_object"),
        (3, "events[3]", "ok"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ([], 400, "not_an_object"),
        ({"purchases": [{"product_id": "x"}]}, 422, "schema_violation"),
        ({"events": {"name": "rewards_issued"}}, 422, "schema_violation"),
        ({"events": [], "attributes": []}, 422, "empty_value"),
    ],
)
def test_braze_bodies_of_the_wrong_shape_are_refused_whole(
    body: Any, status: int, reason: str
) -> None:
    """Fields no loyalty event can hold (e.g. purchases) are a 422 naming them."""
    with pytest.raises(BodyError) as caught:
        braze_webhook(body, RECEIVED)
    assert (caught.value.status, caught.value.reason) == (status, reason)
    if "purchases" in body:
        assert "purchases" in str(caught.value)


def test_moengage_bodies_of_the_wrong_shape_are_refused() -> None:
    """Only type "event" bodies; a field given in attributes and on the action is ambiguous."""
    with pytest.raises(BodyError):
        moengage_webhook({**MOENGAGE_BODY, "type": "customer"}, RECEIVED)
    with pytest.raises(BodyError):
        moengage_webhook({**MOENGAGE_BODY, "actions": []}, RECEIVED)
    action = {**MOENGAGE_BODY["actions"][0], "reward_type": "x"}  # type: ignore[index]
    clash = only(moengage_webhook({**MOENGAGE_BODY, "actions": [action]}, RECEIVED))
    assert isinstance(clash, Rejection) and clash.field == "reward_type"
    missing = only(moengage_webhook({**MOENGAGE_BODY, "customer_id": ""}, RECEIVED))
    assert isinstance(missing, Rejection) and missing.reason == "missing_member_id"


def test_native_events_object_array_and_ndjson() -> None:
    """The envelope as one object, an array or NDJSON; event_id derived when absent."""
    event = {
        "event_type": "rewards_issued",
        "schema_version": 1,
        "occurred_at": "2026-11-20T10:00:00Z",
        "member_id": "m-1",
        "data": {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z"},
    }
    one = only(native_events(orjson.dumps(event), ndjson=False))
    assert isinstance(one, Record) and one.event_id.startswith("ing-")
    assert one.event_id == only(native_events(orjson.dumps(event), ndjson=False)).event_id
    given_id = only(native_events(orjson.dumps({**event, "event_id": "e-1"}), ndjson=False))
    assert given_id.event_id == "e-1"
    assert orjson.loads(given_id.value) == {**event, "event_id": "e-1"}
    array = native_events(orjson.dumps([event, {**event, "member_id": ""}]), ndjson=False)
    assert [type(o).__name__ for o in array] == ["Record", "Rejection"]
    lines = b"\n".join([orjson.dumps(event), b"", b"{", orjson.dumps({**event, "data": {}})])
    outcomes = native_events(lines + b"\n", ndjson=True)
    assert [(o.index, o.item, getattr(o, "reason", "ok")) for o in outcomes] == [
        (0, "line 1", "ok"),
        (1, "line 3", "invalid_json"),
        (2, "line 4", "schema_violation"),
    ]
    for body, reason in [(b"", "empty_value"), (b"[]", "empty_value"), (b"3", "not_an_object")]:
        with pytest.raises(BodyError) as caught:
            native_events(body, ndjson=False)
        assert caught.value.reason == reason


def test_native_events_are_not_coerced() -> None:
    """Producers of the native format send typed values, exactly as the worker checks them."""
    event = {
        "event_id": "e-1",
        "event_type": "member_enrolled",
        "schema_version": 1,
        "occurred_at": "2026-11-20T10:00:00Z",
        "member_id": "m-1",
        "data": {"points_available": "1200"},
    }
    rejection = only(native_events(orjson.dumps(event), ndjson=False))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "schema_violation"
    assert rejection.field == "data.points_available"


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        ("1200", {"type": "number"}, 1200),
        (" 12.5 ", {"type": "number"}, 12.5),
        (7, {"type": "number"}, 7),
        ("30", {"type": "integer"}, 30),
        ("TRUE", {"type": "boolean"}, True),
        ("no", {"type": "boolean"}, False),
        (0, {"type": "boolean"}, False),
        (42, {"type": "string"}, "42"),
        ("2026-11-20", {"type": "string", "format": "date-time"}, "2026-11-20T00:00:00Z"),
        ("2026-11-20 10:00:00+01:00", {"type": "string", "format": "date-time"}, None),
        ("1763631000", {"type": "string", "format": "date-time"}, "2025-11-20T09:30:00Z"),
        (1763631000000, {"type": "string", "format": "date-time"}, "2025-11-20T09:30:00Z"),
    ],
)
def test_coerce_converts_template_strings(value: Any, spec: dict[str, Any], expected: Any) -> None:
    """Numbers, booleans, strings and date-times as templates render them."""
    result = coerce(value, spec)
    if expected is None:
        assert result == "2026-11-20T10:00:00+01:00"
    else:
        assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("NaN", {"type": "number"}),
        ("1e999", {"type": "number"}),
        (True, {"type": "number"}),
        ("12.5", {"type": "integer"}),
        ("yes please", {"type": "boolean"}),
        (2, {"type": "boolean"}),
        ({"a": 1}, {"type": "string"}),
        ("next tuesday", {"type": "string", "format": "date-time"}),
    ],
)
def test_coerce_refuses_what_does_not_convert(value: Any, spec: dict[str, Any]) -> None:
    """Nothing is guessed: a value that is not clearly the type is refused."""
    with pytest.raises(Exception, match=r"^(a|an) "):
        coerce(value, spec)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_any_extra_string_fields_keep_an_event_valid_or_name_a_field(extra: dict[str, str]) -> None:
    """Whatever extra fields a template carries, the outcome is a record or a named rejection."""
    item = {**extra, **REWARD_ITEM}
    outcome = only(braze_webhook({"events": [item]}, RECEIVED))
    if isinstance(outcome, Record):
        decode(Consumed("t", 0, 0, None, outcome.value))
    else:
        assert outcome.reason in ("schema_violation",)
        assert outcome.field is not None


def test_nesting_is_limited_as_the_worker_limits_it() -> None:
    """Deeper than the worker's RELAY_MAX_NESTING_DEPTH is a schema_violation here too."""
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    body = {"events": [{**REWARD_ITEM, "extra": nested}]}
    rejection = only(braze_webhook(body, RECEIVED))
    assert isinstance(rejection, Rejection) and rejection.reason == "schema_violation"
    assert isinstance(only(braze_webhook(body, RECEIVED, max_depth=60)), Record)
