"""Property tests: any event a transform is handed yields typed errors only and exact URLs.

Events are built directly (not through decode), so values the schemas or the decoder's nesting
cap would stop still reach the transforms: a transform must hold on its own (issue 10).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.destinations.request_checks import SETTINGS, assert_urls_exact, requests_for
from worker.destinations.registry import REGISTRY
from worker.errors import TransformError
from worker.events import LoyaltyEvent

SEGMENT = st.one_of(
    st.sampled_from(
        ["", ".", "..", "...", "./", "a/b", "%2E%2E", "%", "?x#y", "ü ñ", "\x00", "a\nb", "\ud800"]
    ),
    st.text(max_size=12),
    st.integers(200, 400).map(lambda n: "x" * n),
)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
DATETIME = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-11-20T10:00:00z",
            "2026-12-31T23:59:60+01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-20T10:00:00.123456+14:00",
            "2999-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "not a date",
        ]
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=OFFSETS,
    ).map(datetime.isoformat),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    DATETIME,
    st.integers(250, 150_000).map(lambda n: "y" * n),
)
NESTED = st.recursive(
    SCALAR,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def _deep(depth: int, leaf: Any, as_list: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


DEEP = st.builds(_deep, st.integers(0, 120), NESTED, st.booleans())
IDENTIFIERS = st.dictionaries(
    st.sampled_from(["braze", "moengage", "sessionm", "kognitiv", "other"]), SEGMENT, max_size=4
)


@st.composite
def events(draw: st.DrawFn) -> LoyaltyEvent:
    event_type = draw(
        st.sampled_from(
            ["rewards_issued", "member_enrolled", "offer_issued", "audience_membership_changed"]
        )
    )
    extra = draw(st.dictionaries(st.text(max_size=8), DEEP, max_size=3))
    data: dict[str, Any]
    if event_type == "rewards_issued":
        data = {"reward_type": draw(SEGMENT), "issued_date": draw(DATETIME), **extra}
    elif event_type == "member_enrolled":
        data = {
            "date_joined": draw(DATETIME),
            "email_subscribe": draw(st.sampled_from(["opted_in", "subscribed", "unsubscribed"])),
            "sms_contact_allowed": draw(st.booleans()),
            "first_name": draw(SCALAR),
            **extra,
        }
    elif event_type == "offer_issued":
        data = {"offer_id": draw(SEGMENT), "campaign": {"custom_data": draw(DEEP)}, **extra}
        target = draw(st.sampled_from([None, "braze_campaign_id", "braze_canvas_id"]))
        if target:
            data[target] = draw(SEGMENT)
            data["broadcast"] = draw(st.booleans())
            data["enrollment"] = draw(st.fixed_dictionaries({}, optional={"email": SCALAR}))
    else:
        data = {"audience": draw(SEGMENT), "action": draw(st.sampled_from(["add", "remove"]))}
        if draw(st.booleans()):
            data["ttl_seconds"] = draw(st.integers(1, 2**70))
    return LoyaltyEvent(
        event_id=draw(st.text(min_size=1, max_size=20)),
        event_type=event_type,
        schema_version=1,
        occurred_at=draw(DATETIME),
        member_id=draw(SEGMENT),
        source=None,
        data=data,
        identifiers=draw(IDENTIFIERS),
    )


def _edge(event_type: str, data: dict[str, Any], **fields: Any) -> LoyaltyEvent:
    base: dict[str, Any] = {
        "event_id": "e",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-20T10:00:00+01:00",
        "member_id": "m-1",
        "source": None,
        "data": data,
    }
    return LoyaltyEvent(**{**base, **fields})


AUDIENCE = {"audience": "gold", "action": "remove"}
# the inputs issue 10 names, always run in addition to the generated ones
EDGES = [
    _edge("audience_membership_changed", AUDIENCE, member_id=".."),
    _edge("audience_membership_changed", {"audience": "..", "action": "add"}),
    _edge("audience_membership_changed", AUDIENCE, identifiers={"kognitiv": "."}),
    _edge("audience_membership_changed", AUDIENCE, identifiers={"sessionm": "a/b"}),
    _edge("rewards_issued", {"reward_type": "r"}, occurred_at="0001-01-01T00:00:00+01:00"),
    _edge("rewards_issued", {"reward_type": "r"}, occurred_at="9999-12-31T23:59:59-01:00"),
    _edge("offer_issued", {"offer_id": "o", "campaign": {"custom_data": _deep(900, 1, False)}}),
    _edge("rewards_issued", {"reward_type": "r", "extra": _deep(300, 1, True)}),
    _edge("rewards_issued", {"reward_type": "r", "note": "z" * 500_000}),
]


@settings(max_examples=400, deadline=None)
@given(events())
def test_transforms_raise_only_typed_errors_and_build_exact_urls(event: LoyaltyEvent) -> None:
    """Deep nesting, extreme and offset datetimes, odd segments, huge values: typed or exact."""
    _typed_or_exact(event)


def _typed_or_exact(event: LoyaltyEvent) -> None:
    try:
        built = requests_for(event)
    except TransformError as exc:
        reason = exc.reason
    else:
        assert_urls_exact(event, built)
        return
    assert reason == "destination_validation"


# hypothesis pretty-prints explicit examples, which recursion-fails on 900 levels: plain cases
@pytest.mark.parametrize("event", EDGES, ids=range(len(EDGES)))
def test_the_inputs_issue_10_names_are_typed_or_exact(event: LoyaltyEvent) -> None:
    """Dot segments, year-0/10000 datetimes, 900-level nesting, half-megabyte strings."""
    _typed_or_exact(event)
    _each_alone(event)


@settings(max_examples=200, deadline=None)
@given(events())
def test_each_destination_alone_raises_only_typed_errors(event: LoyaltyEvent) -> None:
    """One destination's refusal never hides another's crash: each is tried on its own."""
    _each_alone(event)


def _each_alone(event: LoyaltyEvent) -> None:
    for name, destination in REGISTRY.items():
        dest_settings = destination.settings_type.model_validate(SETTINGS[name])
        try:
            items = destination.transform(event, dest_settings)
        except TransformError:
            continue
        for item in items:
            request = destination.build(item.group, [item], dest_settings)
            assert_urls_exact(event, {name: [request]})
