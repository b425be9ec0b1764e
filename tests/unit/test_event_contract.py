"""Decoding against schemas/: every example decodes, every kind of bad input has its reason."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.decode import decode
from worker.errors import DecodeError
from worker.events import Consumed

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "schemas" / "examples").glob("*.json"))
GOOD = orjson.loads((EXAMPLES[-1]).read_bytes())


def _record(value: bytes | None) -> Consumed:
    return Consumed("loyalty.rewards_issued", 0, 0, b"m", value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_schema_example_decodes(path: Path) -> None:
    """Each example in schemas/examples is a valid event of the type it is named after."""
    event = decode(_record(path.read_bytes()))
    assert event.event_type == path.stem
    assert event.schema_version == 1


def _with(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (None, "empty_value", "the record has no value"),
        (b"", "empty_value", "the record has no value"),
        (b"x" * 1_048_577, "too_large", "value is 1048577 bytes, over the 1048576 byte limit"),
        (b"\xff\xfe", "invalid_utf8", "value is not UTF-8"),
        (b'{"a": ', "invalid_json", None),
        (b"[" * 5000 + b"]" * 5000, "invalid_json", None),
        (b'"just a string"', "not_an_object", "value is a JSON str, not an object"),
        (_with(member_id=""), "missing_member_id", None),
        (_with(member_id=7), "missing_member_id", None),
        (_with(member_id="."), "schema_violation", None),
        (_with(member_id=".."), "schema_violation", None),
        (_with(member_id="m\n"), "schema_violation", None),
        (_with(member_id="m\x00"), "schema_violation", None),
        (_with(identifiers={"kognitiv": ".."}), "schema_violation", None),
        (_with(identifiers={"sessionm": ""}), "schema_violation", None),
        (_with(identifiers={"Braze": "b-1"}), "schema_violation", None),
        (_with(identifiers=["b-1"]), "schema_violation", None),
        (_with(event_type="points_moved"), "unknown_event_type", None),
        (
            _with(schema_version=2),
            "unknown_schema_version",
            "schema_version 2 is not supported (this worker knows 1)",
        ),
        (_with(schema_version="1"), "schema_violation", None),
        (
            _with(occurred_at="yesterday"),
            "schema_violation",
            "occurred_at violates format date-time",
        ),
        (_with(data={"reward_type": "x", "issued_date": 5}), "schema_violation", None),
    ],
)
def test_bad_input_reasons(value: bytes | None, reason: str, message: str | None) -> None:
    """Each kind of bad record raises DecodeError with the documented dlq.reason."""
    rewards = orjson.loads(EXAMPLES[-1].read_bytes())
    assert rewards["event_type"] == "rewards_issued"
    with pytest.raises(DecodeError) as caught:
        decode(_record(value))
    assert caught.value.reason == reason
    if message is not None:
        assert str(caught.value) == message


def test_violation_message_names_the_path_not_the_value() -> None:
    """Schema messages name the field and the rule, never the (possibly personal) value."""
    bad = orjson.loads(EXAMPLES[1].read_bytes())
    bad["data"]["email"] = "not-an-address-of-ada-lovelace"
    with pytest.raises(DecodeError) as caught:
        decode(_record(orjson.dumps(bad)))
    assert str(caught.value) == "data.email violates format email"


def test_offer_with_campaign_and_canvas_is_refused() -> None:
    """At most one of braze_campaign_id and braze_canvas_id may be present."""
    offer = orjson.loads(EXAMPLES[2].read_bytes())
    offer["data"]["braze_canvas_id"] = "v-1"
    with pytest.raises(DecodeError, match="both braze_campaign_id and braze_canvas_id"):
        decode(_record(orjson.dumps(offer)))


def test_identifiers_are_decoded_and_path_unsafe_audiences_refused() -> None:
    """identifiers reach the event; an audience of . or .. is refused by the schema."""
    event = decode(_record(_with(identifiers={"sessionm": "8c1f/2a", "kognitiv": "100234"})))
    assert event.identifiers == {"sessionm": "8c1f/2a", "kognitiv": "100234"}
    assert decode(_record(_with())).identifiers == {}
    audience = orjson.loads(EXAMPLES[0].read_bytes())
    assert audience["event_type"] == "audience_membership_changed"
    for bad in (".", "..", "a\tb"):
        audience["data"]["audience"] = bad
        with pytest.raises(DecodeError, match=r"data\.audience violates pattern"):
            decode(_record(orjson.dumps(audience)))
    audience["data"]["audience"] = "..."
    assert decode(_record(orjson.dumps(audience))).data["audience"] == "..."


def test_unknown_extra_fields_are_allowed() -> None:
    """Extra fields in the envelope and in data do not fail validation."""
    event = decode(_record(_with(extra="x", data={**GOOD["data"], "tier": "gold"})))
    assert event.data["tier"] == "gold"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_decode_errors(value: bytes) -> None:
    """No byte string makes decode raise anything but DecodeError."""
    with contextlib.suppress(DecodeError):
        decode(_record(value))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "x"]), JSON, max_size=8))
def test_arbitrary_envelopes_only_raise_decode_errors(document: dict[str, object]) -> None:
    """Any JSON object, however wrong, yields an event or a DecodeError."""
    with contextlib.suppress(DecodeError):
        decode(_record(orjson.dumps({**GOOD, **document})))


SEGMENT = st.one_of(
    st.sampled_from(["", ".", "..", "...", "a/b", "%2E%2E", "ü ñ", "a\x00b", "x" * 300]),
    st.text(min_size=1, max_size=40),
)
DATETIME = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-11-20T10:00:00z",
            "2026-12-31T23:59:60+01:00",
            "2026-11-20T10:00:00.123456+05:45",
            "2099-01-01T00:00:00Z",
        ]
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.integers(-840, 840).map(lambda m: timezone(timedelta(minutes=m))),
    ).map(datetime.isoformat),
)


def _nest(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = {"k": leaf}
    return leaf


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from(
        ["rewards_issued", "member_enrolled", "offer_issued", "audience_membership_changed"]
    ),
    member=SEGMENT,
    audience=SEGMENT,
    identifiers=st.dictionaries(
        st.sampled_from(["braze", "moengage", "sessionm", "kognitiv"]), SEGMENT, max_size=4
    ),
    occurred_at=DATETIME,
    extra=st.dictionaries(st.text(max_size=300), JSON | DATETIME, max_size=4),
    depth=st.integers(0, 200),
    huge=st.integers(0, 900_000),
)
def test_decode_then_transform_raises_only_typed_errors(
    event_type: str,
    member: str,
    audience: str,
    identifiers: dict[str, str],
    occurred_at: str,
    extra: dict[str, object],
    depth: int,
    huge: int,
) -> None:
    """Any member id, identifiers, datetime, nesting or size: typed errors or exact URLs only."""
    import random

    from tests.unit.destinations.request_checks import assert_urls_exact, requests_for
    from worker.devtools.sample import make_event
    from worker.errors import WorkerError

    document = make_event(event_type, "m", 1, random.Random(3))
    document["member_id"] = member
    document["occurred_at"] = occurred_at
    document["identifiers"] = identifiers
    document["data"] = {**extra, **document["data"], "padding": "p" * huge}
    if event_type == "offer_issued":
        document["data"]["campaign"] = {"custom_data": _nest(depth, extra.get("x"))}
    if event_type == "audience_membership_changed":
        document["data"]["audience"] = audience
    try:
        event = decode(_record(orjson.dumps(document)))
        built = requests_for(event)
    except WorkerError:
        return
    assert_urls_exact(event, built)


def test_shared_decoder_decodes_once_for_all_readers_and_forgets() -> None:
    """The second pipeline gets the first one's result; the entry goes once both took it."""
    from worker.decode import SharedDecoder

    decoder = SharedDecoder(readers=2)
    record = _record(EXAMPLES[-1].read_bytes())
    first = decoder.decode(record)
    assert decoder.decode(record) is first
    assert not decoder._entries
    bad = _record(b"nope")
    for _ in range(2):
        with pytest.raises(DecodeError, match="not JSON"):
            decoder.decode(bad)
    assert not decoder._entries
