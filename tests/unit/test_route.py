"""The router alone: a consumed batch in, one outcome per record out, in order; no I/O."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson

from worker.decode import decode
from worker.destinations.braze import DESTINATION as BRAZE
from worker.destinations.braze.config import BrazeSettings
from worker.destinations.sessionm import DESTINATION as SESSIONM
from worker.destinations.sessionm.config import SessionMSettings
from worker.events import EVENT_TYPES, Consumed, LoyaltyEvent
from worker.route import INVALID, Route, route

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
BRAZE_SETTINGS = BrazeSettings(rest_endpoint="https://rest.iad-01.braze.com/", api_key="bk-secret")
SESSIONM_SETTINGS = SessionMSettings(
    core_endpoint="https://api-x.ent-sessionm.com", api_key="sk/key", api_secret="ss-secret"
)
BRAZE_ROUTE = Route(BRAZE, BRAZE_SETTINGS, frozenset(EVENT_TYPES), True, decode)


def _example(event_type: str, **data: Any) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((EXAMPLES / f"{event_type}.json").read_bytes())
    document["data"].update(data)
    return document


def _record(
    offset: int,
    value: bytes | dict[str, Any] | None,
    key: bytes | None = b"member-000042",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Consumed:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return Consumed("loyalty.rewards_issued", 0, offset, key, raw, headers)


def test_each_record_gets_its_outcome_in_order() -> None:
    records = [
        _record(0, _example("rewards_issued")),
        _record(1, b"{not json"),
        _record(2, _example("rewards_issued", reward_type="x" * 300)),  # property over 255
        _record(3, _example("audience_membership_changed"), key=b"someone-else"),
    ]
    out = route(BRAZE_ROUTE, records)
    assert [o.record.offset for o in out] == [0, 1, 2, 3]
    assert [o.event_type for o in out] == [
        "rewards_issued",
        INVALID,
        "rewards_issued",
        "audience_membership_changed",
    ]
    assert out[0].items and out[0].items[0].group == "users/track" and out[0].letter is None
    assert out[1].letter == ("*", "invalid_json", out[1].letter[2] if out[1].letter else "")
    assert out[1].event is None and out[1].items is None
    assert out[2].letter is not None and out[2].letter[:2] == ("braze", "destination_validation")
    assert out[2].items is None
    assert out[3].key_mismatch and not out[0].key_mismatch and out[3].items


def test_input_errors_are_left_to_the_pipeline_that_writes_them() -> None:
    quiet = dataclasses.replace(BRAZE_ROUTE, writes_input_errors=False)
    (outcome,) = route(quiet, [_record(0, b"[]")])
    assert outcome.event_type == INVALID and outcome.letter is None and outcome.crash is None


def test_filtered_unrouted_and_replayed_elsewhere_records_carry_nothing() -> None:
    only_rewards = dataclasses.replace(
        BRAZE_ROUTE, routed=frozenset({"rewards_issued"}), accept=lambda r: r.offset != 0
    )
    replay_for_moengage = (("relay.replay_id", b"r-1"), ("relay.replay_destination", b"moengage"))
    out = route(
        only_rewards,
        [
            _record(0, _example("rewards_issued")),
            _record(1, _example("offer_issued")),
            _record(2, _example("rewards_issued"), headers=replay_for_moengage),
            _record(3, _example("rewards_issued"), headers=(("relay.replay_id", b"r-2"),)),
        ],
    )
    assert out[0].event_type is None
    assert out[1].event_type == "offer_issued" and out[1].items is None and out[1].letter is None
    assert out[2].items is None and out[2].letter is None
    assert out[3].items  # replayed without a destination: every destination takes it


def test_no_call_for_the_event_is_a_skip() -> None:
    sessionm = Route(SESSIONM, SESSIONM_SETTINGS, frozenset(EVENT_TYPES), False, decode)
    remove = _example("audience_membership_changed", action="remove")
    (outcome,) = route(sessionm, [_record(0, remove)])
    assert outcome.skipped and outcome.items is None and outcome.letter is None


def test_an_unforeseen_exception_touches_only_its_record() -> None:
    def transform(event: LoyaltyEvent, settings: Any) -> list[Any]:
        if event.event_type == "offer_issued":
            raise KeyError("nobody foresaw this")
        return BRAZE.transform(event, settings)

    def decode_or_crash(record: Consumed) -> LoyaltyEvent:
        if record.offset == 1:
            raise RuntimeError("decoder bug")
        return decode(record)

    rule = dataclasses.replace(
        BRAZE_ROUTE,
        destination=dataclasses.replace(BRAZE, transform=transform),
        decode=decode_or_crash,
    )
    out = route(
        rule,
        [
            _record(0, _example("offer_issued")),
            _record(1, _example("rewards_issued")),
            _record(2, _example("rewards_issued")),
        ],
    )
    assert isinstance(out[0].crash, KeyError) and out[0].event is not None
    assert out[0].letter == ("braze", "transform_error", "")
    assert isinstance(out[1].crash, RuntimeError) and out[1].event is None
    assert out[1].letter == ("braze", "internal_error", "")
    assert out[2].items and out[2].crash is None
