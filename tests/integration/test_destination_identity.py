"""Each destination's own identity and payload rules, end to end (issue 12; issue 10 Kognitiv).

Real broker, `loyalty-relay run`, the four simulators (which check the reference's rules, not
the worker's). Half the members carry ``identifiers``, half do not.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest

from tests.integration.harness import dead_letters, statuses
from tests.support import event, produce, topic_for, unique_topics, wait_for

pytestmark = pytest.mark.integration

MEMBERS = [f"m-{i}" for i in range(8)]


def _identifiers(i: int) -> dict[str, str] | None:
    if i % 2:
        return None  # odd members: every destination falls back to member_id
    return {
        "braze": f"b-{i}",
        "moengage": f"mo-{i}",
        "sessionm": f"s-{i}",
        "kognitiv": f"{1000 + i}",
    }


def _record(topics: tuple[str, ...], ev: dict[str, Any], i: int) -> tuple[str, bytes, bytes]:
    identifiers = _identifiers(i)
    if identifiers:
        ev["identifiers"] = identifiers
    return topic_for(topics, ev["event_type"]), ev["member_id"].encode(), orjson.dumps(ev)


def _env(sims: Any, bootstrap: str, topics: tuple[str, ...], **extra: str) -> dict[str, str]:
    return {
        **sims.env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics),
        "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "BRAZE_APP_ID": "app-1",
        "MOENGAGE_RATE_LIMIT": "20000",
        **extra,
    }


def _expected(name: str, i: int) -> str:
    identifiers = _identifiers(i)
    return identifiers[name] if identifiers else f"m-{i}"


async def test_identifiers_reach_all_four_destinations_half_with_half_without(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Each destination gets its own id where given, member_id (SessionM: external) otherwise."""
    topics = unique_topics()
    records = []
    for i, member in enumerate(MEMBERS):
        reward = {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00.5+01:00"}
        records.append(_record(topics, event("rewards_issued", member, f"r-{i}", reward), i))
        add = {"audience": "vip", "action": "add"}
        records.append(
            _record(topics, event("audience_membership_changed", member, f"a-{i}", add), i)
        )
    # a remove for someone never in the group: Kognitiv answers 404 "not a member"
    gone = {"audience": "gold", "action": "remove"}
    records.append(_record(topics, event("audience_membership_changed", "m-1", "x-1", gone), 1))
    await produce(kafka_bootstrap, records)
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    braze, moengage = simulators.braze.state, simulators.moengage.state
    sessionm, kognitiv = simulators.sessionm.state, simulators.kognitiv.state
    await wait_for(
        lambda: (
            len(braze.events()) == 8
            and len(braze.attributes()) == 9
            and len(moengage.received) == 17
            and len(sessionm.received) == 8
            and len(kognitiv.received) == 8
            and kognitiv.statuses[404] == 1
        ),
        90,
        "every member at all four simulators",
    )
    by_event = {e["properties"]["event_id"]: e for e in braze.events()}
    for i in range(8):
        tracked = by_event[f"r-{i}"]
        assert (tracked["external_id"], tracked["app_id"]) == (_expected("braze", i), "app-1")
    assert sorted(a["external_id"] for a in braze.attributes()) == sorted(
        [_expected("braze", i) for i in range(8)] + ["m-1"]
    )
    assert all("app_id" not in a for a in braze.attributes())
    assert braze.defects == []
    assert sorted(r["customer_id"] for r in moengage.received) == sorted(
        [_expected("moengage", i) for i in range(8) for _ in range(2)] + ["m-1"]
    )
    actions = moengage.actions()
    assert {a["current_time"] for a in actions} == {"2026-11-20T10:00:00Z"}
    assert {a["attributes"]["issued_date"] for a in actions} == {"2026-11-20T09:00:00Z"}
    assert moengage.string_datetimes == []
    assert moengage.appkey_requests >= 1
    assert sorted((r["path"], r["user_id"]) for r in sessionm.received) == sorted(
        ("users", f"s-{i}") if i % 2 == 0 else ("external", f"m-{i}") for i in range(8)
    )
    assert sorted(r["member"] for r in kognitiv.received) == sorted(
        _expected("kognitiv", i) for i in range(8)
    )
    assert kognitiv.members["vip"] == {_expected("kognitiv", i) for i in range(8)}
    assert await worker.stop() == 0
    assert await dead_letters(kafka_bootstrap, topics[0]) == []
    assert await dead_letters(kafka_bootstrap, topics[3]) == []


async def test_require_identifier_dead_letters_for_that_destination_only(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """SESSIONM_REQUIRE_IDENTIFIER: members without identifiers.sessionm fail at SessionM only."""
    topics = unique_topics()
    records = [
        _record(
            topics,
            event("audience_membership_changed", m, f"a-{i}", {"audience": "vip", "action": "add"}),
            i,
        )
        for i, m in enumerate(MEMBERS[:4])
    ]
    await produce(kafka_bootstrap, records)
    env = _env(simulators, kafka_bootstrap, topics, SESSIONM_REQUIRE_IDENTIFIER="true")
    worker = worker_factory(env)
    await wait_for(
        lambda: (
            len(simulators.kognitiv.state.received) == 4
            and len(simulators.sessionm.state.received) == 2
        ),
        90,
        "deliveries",
    )
    letters: list[Any] = []
    for _ in range(40):
        letters = await dead_letters(kafka_bootstrap, topics[3])
        if len(letters) >= 2:
            break
        await asyncio.sleep(0.3)
    assert sorted(
        (d.key, d.headers["dlq.destination"], d.headers["dlq.reason"]) for d in letters
    ) == [
        (b"m-1", "sessionm", "destination_validation"),
        (b"m-3", "sessionm", "destination_validation"),
    ]
    assert all("missing_identifier" in d.headers["dlq.error"] for d in letters)
    assert sorted(r["user_id"] for r in simulators.sessionm.state.received) == ["s-0", "s-2"]
    assert await worker.stop() == 0


async def test_moengage_bulk_with_one_bad_element_dead_letters_only_it(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A bulk refused with 400 for one element is bisected: it alone is dead-lettered."""
    topics = unique_topics()
    count, bad = 200, 117
    records = []
    for i in range(count):
        data: dict[str, Any] = {
            "reward_type": "c",
            "issued_date": "2026-11-20T10:00:00Z",
            "points": i,
        }
        if i == bad:
            data["tier"] = {"level": 3}  # an object value; this workspace has no Object type
        ev = event("rewards_issued", f"m-{i % 40}", f"e-{i}", data)
        records.append((topics[0], ev["member_id"].encode(), orjson.dumps(ev)))
    await produce(kafka_bootstrap, records)
    # the worker is told the workspace has the Object data type; the simulator's has not
    env = _env(simulators, kafka_bootstrap, topics, MOENGAGE_OBJECT_ATTRIBUTES="true")
    worker = worker_factory(env)
    moengage = simulators.moengage.state

    def delivered() -> set[str]:
        return {a["attributes"]["event_id"] for a in moengage.actions()}

    await wait_for(lambda: len(delivered()) == count - 1, 90, "the good elements at MoEngage")
    letters: list[Any] = []
    for _ in range(40):
        letters = await dead_letters(kafka_bootstrap, topics[0])
        if letters:
            break
        await asyncio.sleep(0.3)
    assert [
        (d.headers["dlq.destination"], d.headers["dlq.reason"], d.headers["dlq.http_status"])
        for d in letters
    ] == [("moengage", "permanent_http_error", "400")]
    assert orjson.loads(letters[0].value)["event_id"] == f"e-{bad}"
    assert delivered() == {f"e-{i}" for i in range(count)} - {f"e-{bad}"}
    assert len(simulators.braze.state.events()) == count
    refused = statuses(simulators.moengage)[400]
    accepted = statuses(simulators.moengage)[200]
    # one refused bulk, then at most two requests per halving down to the bad element
    assert refused <= 1 + math.ceil(math.log2(count))
    assert refused + accepted <= count  # far fewer requests than one per element
    splits = [line for line in worker.log_lines() if line.get("event") == "bulk_split"]
    assert len(splits) == 1
    print(f"moengage requests: {accepted} accepted, {refused} refused; split={splits[0]}")
    assert await worker.stop() == 0


async def test_an_offer_with_enrollment_reaches_a_member_braze_does_not_have_yet(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """send_to_existing_only false + attributes creates the profile; without them Braze skips."""
    topics = unique_topics()
    braze = simulators.braze.state
    braze.existing_users = {"m-old"}  # enrolled moments ago: not visible to sends yet
    enrollment = {"email": "new@example.com", "first_name": "Nia"}
    offers = [
        ("m-new", {"offer_id": "o-1", "braze_campaign_id": "c-1", "enrollment": enrollment}),
        ("m-bare", {"offer_id": "o-1", "braze_campaign_id": "c-1"}),
        ("m-old", {"offer_id": "o-1", "braze_campaign_id": "c-1"}),
    ]
    await produce(
        kafka_bootstrap,
        [
            _record(topics, event("offer_issued", member, f"o-{member}", data), 1)
            for member, data in offers
        ],
    )
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    await wait_for(
        lambda: len(braze.sends()) + len(braze.skipped_recipients) == 3, 90, "the three sends"
    )
    sent = {s["recipient"]["external_user_id"]: s["recipient"] for s in braze.sends()}
    assert sorted(sent) == ["m-new", "m-old"]
    assert sent["m-new"]["attributes"] == {"email": "new@example.com", "first_name": "Nia"}
    assert sent["m-new"]["send_to_existing_only"] is False
    assert braze.skipped_recipients == ["m-bare"]  # the documented limit without enrollment
    assert braze.defects == []
    assert await worker.stop() == 0
