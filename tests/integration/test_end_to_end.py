"""The delivery spine end to end: real broker, the `run` command, Braze and MoEngage simulators."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.support import (
    committed_and_highwater,
    event,
    produce,
    read_all,
    topic_for,
    unique_topics,
    wait_for,
)

pytestmark = pytest.mark.integration

REWARD = {"reward_type": "free_coffee", "issued_date": "2026-11-20T10:00:00Z", "points": 100}
ENROLL = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "country": "GB",
    "home_city": "London",
    "time_zone": "Europe/London",
    "points_available": 250,
    "email_contact_allowed": True,
    "sms_contact_allowed": False,
    "email_subscribe": "opted_in",
    "date_joined": "2026-11-20T10:00:00Z",
}


def _record(topics: tuple[str, ...], ev: dict[str, Any]) -> tuple[str, bytes, bytes]:
    return topic_for(topics, ev["event_type"]), ev["member_id"].encode(), orjson.dumps(ev)


def _worker_env(sims: Any, bootstrap: str, topics: tuple[str, ...], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in sims.env().items() if k.startswith(("BRAZE_", "MOENGAGE_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPICS": ",".join(topics),
            "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "BRAZE_BACKOFF_BASE_SECONDS": "0.05",
            "MOENGAGE_BACKOFF_BASE_SECONDS": "0.05",
        }
    )
    env.update(extra)
    return env


async def test_every_event_type_reaches_braze_and_moengage_and_bad_input_is_dead_lettered(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Good events arrive exactly as documented, bad ones land in .dlq, offsets reach the end."""
    topics = unique_topics()
    simulators.braze.state.blocked_external_ids = {"m-blocked"}
    events = [
        event("rewards_issued", "m-1", "e-1", REWARD),
        event("member_enrolled", "m-1", "e-2", ENROLL),
        event("offer_issued", "m-5", "e-3", {"offer_id": "o-1", "offer_title": "20% off"}),
        event("offer_issued", "m-2", "e-4", {"offer_id": "o-2", "braze_campaign_id": "c-1"}),
        event("offer_issued", "m-3", "e-5", {"offer_id": "o-2", "braze_campaign_id": "c-1"}),
        event("offer_issued", "m-3", "e-6", {"offer_id": "o-3", "braze_canvas_id": "v-1"}),
        event(
            "offer_issued",
            "m-4",
            "e-7",
            {"offer_id": "o-4", "braze_campaign_id": "c-2", "broadcast": True},
        ),
        event("audience_membership_changed", "m-1", "e-8", {"audience": "vip", "action": "add"}),
        event("audience_membership_changed", "m-1", "e-9", {"audience": "vip", "action": "remove"}),
        event("rewards_issued", "null", "e-10", REWARD),  # MoEngage refuses this customer_id
        event("rewards_issued", "m-blocked", "e-11", REWARD),  # Braze drops this one object
        event("rewards_issued", "m-1", "e-12", REWARD),
    ]
    bad = [
        (topics[0], b"m-x", b"{not json"),
        (topics[0], b"m-x", b"\xff\xfe"),
        (topics[0], b"m-x", orjson.dumps({**events[0], "event_type": "points_moved"})),
        (topics[0], b"m-x", orjson.dumps({**events[0], "schema_version": 2})),
        (topics[0], b"m-x", orjson.dumps({**events[0], "data": {"reward_type": "x"}})),
        (topics[0], None, b""),
    ]
    await produce(kafka_bootstrap, [_record(topics, e) for e in events] + bad)
    worker = worker_factory(_worker_env(simulators, kafka_bootstrap, topics))
    braze, moengage = simulators.braze.state, simulators.moengage.state

    def braze_done() -> bool:
        return len(braze.received) >= 11 and len(moengage.received) >= 11

    await wait_for(braze_done, 60, "deliveries at both simulators")
    dlq = await _wait_dead_letters(kafka_bootstrap, topics[0] + ".dlq", 8)

    tracked = list(braze.events())
    assert sorted((e["name"], e["properties"]["event_id"]) for e in tracked) == [
        ("offer_issued", "e-3"),
        ("rewards_issued", "e-1"),
        ("rewards_issued", "e-10"),
        ("rewards_issued", "e-12"),
    ]
    # one member's events arrive in produce order (e-1 before e-12, across requests)
    member_one = [e["properties"]["event_id"] for e in tracked if e["external_id"] == "m-1"]
    assert member_one == ["e-1", "e-12"]
    assert next(e for e in tracked if e["properties"]["event_id"] == "e-1") == {
        "external_id": "m-1",
        "name": "rewards_issued",
        "time": "2026-11-20T10:00:00Z",
        "properties": {**REWARD, "event_id": "e-1"},
    }
    attributes = braze.attributes()
    # order is kept per member within a topic partition; across topics Kafka promises none
    enrolled = next(a for a in attributes if "email" in a)
    assert enrolled == {
        "external_id": "m-1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "country": "GB",
        "home_city": "London",
        "time_zone": "Europe/London",
        "total_points_balance": 250,
        "email_contact_allowed": True,
        "sms_contact_allowed": False,
        "email_subscribe": "opted_in",
        "date_joined": "2026-11-20T10:00:00Z",
    }
    assert [a for a in attributes if "loyalty_audiences" in a] == [
        {"external_id": "m-1", "loyalty_audiences": {"add": ["vip"]}},
        {"external_id": "m-1", "loyalty_audiences": {"remove": ["vip"]}},
    ]
    sends = [
        (
            s["array"],
            s["kind"],
            s["id"],
            s.get("recipient", {}).get("external_user_id"),
            s["properties"]["event_id"],
        )
        for s in braze.sends()
    ]
    assert sorted(sends) == sorted(
        [
            ("recipients", "campaign", "c-1", "m-2", "e-4"),
            ("recipients", "campaign", "c-1", "m-3", "e-5"),
            ("recipients", "canvas", "v-1", "m-3", "e-6"),
            ("broadcast", "campaign", "c-2", None, "e-7"),
        ]
    )
    campaign_requests = [r for r in braze.requests if r.endpoint == "/campaigns/trigger/send"]
    assert [r.items for r in campaign_requests if r.status == 201].count(2) == 1  # batched

    actions = moengage.actions()
    assert sorted(
        (a["customer_id"], a["action"], a["attributes"]["event_id"]) for a in actions
    ) == sorted(
        [
            ("m-1", "rewards_issued", "e-1"),
            ("m-5", "offer_issued", "e-3"),
            ("m-2", "offer_issued", "e-4"),
            ("m-3", "offer_issued", "e-5"),
            ("m-3", "offer_issued", "e-6"),
            ("m-4", "offer_issued", "e-7"),
            ("m-blocked", "rewards_issued", "e-11"),
            ("m-1", "rewards_issued", "e-12"),
        ]
    )
    first = next(a for a in actions if a["attributes"]["event_id"] == "e-1")
    assert first["current_time"] == "2026-11-20T10:00:00Z"
    assert first["attributes"] == {**REWARD, "event_id": "e-1"}
    customers = moengage.customers()
    assert next(c["attributes"] for c in customers if "email" in c["attributes"]) == {
        **{("city" if k == "home_city" else k): v for k, v in ENROLL.items()},
        # MoEngage's standard consent fields, next to the custom ones (issue 12)
        "moe_unsubscribe": False,
        "moe_email_optin_status": "OPTIN",
        "moe_sms_subscription": "OPTOUT",
    }
    assert [c["attributes"] for c in customers if "email" not in c["attributes"]] == [
        {"addValueToArrayField": {"loyalty_audiences": ["vip"]}},
        {"removeValueFromArrayField": {"loyalty_audiences": ["vip"]}},
    ]

    reasons = sorted((d.headers["dlq.destination"], d.headers["dlq.reason"]) for d in dlq)
    assert reasons == sorted(
        [
            ("*", "invalid_json"),
            ("*", "invalid_utf8"),
            ("*", "unknown_event_type"),
            ("*", "unknown_schema_version"),
            ("*", "schema_violation"),
            ("*", "empty_value"),
            ("moengage", "destination_validation"),
            ("braze", "partial_failure"),
        ]
    )
    blocked = next(d for d in dlq if d.headers["dlq.reason"] == "partial_failure")
    assert blocked.value == orjson.dumps(events[10])
    assert blocked.key == b"m-blocked"
    assert blocked.headers["dlq.event_id"] == "e-11"
    assert blocked.headers["dlq.http_status"] == "201"
    assert "blacklisted" in blocked.headers["dlq.error"]
    for letter in dlq:
        assert set(letter.headers) >= {
            "dlq.reason",
            "dlq.error",
            "dlq.destination",
            "dlq.http_status",
            "dlq.attempts",
            "dlq.original_topic",
            "dlq.original_partition",
            "dlq.original_offset",
            "dlq.failed_at",
        }
        assert letter.headers["dlq.original_topic"] == topics[0]

    assert await worker.stop() == 0
    for dest in ("braze", "moengage"):
        group = f"g-{topics[0].split('.')[0]}.{dest}"
        positions = await committed_and_highwater(kafka_bootstrap, group, topics)
        assert positions and all((c or 0) == h for c, h in positions.values()), (dest, positions)
    logs = worker.logs()
    for secret in ("sim-braze-key", "sim-moengage-key", "ada@example.com"):
        assert secret not in logs
    assert '"event":"routing_table"' in logs


async def test_permanent_and_exhausted_failures_are_dead_lettered_for_that_destination_only(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A refused Braze key and a MoEngage that keeps failing dead-letter per destination."""
    topics = unique_topics()
    simulators.moengage.state.faults.update({"status": 500, "status_probability": 1.0})
    events = [event("rewards_issued", f"m-{i}", f"e-{i}", REWARD) for i in range(3)]
    await produce(kafka_bootstrap, [_record(topics, e) for e in events])
    env = _worker_env(
        simulators,
        kafka_bootstrap,
        topics,
        BRAZE_API_KEY="wrong-key-123",
        MOENGAGE_MAX_ATTEMPTS="3",
    )
    worker = worker_factory(env)
    dlq = await _wait_dead_letters(kafka_bootstrap, topics[0] + ".dlq", 6)
    by_destination = sorted(
        (
            d.headers["dlq.destination"],
            d.headers["dlq.reason"],
            d.headers["dlq.http_status"],
            d.headers["dlq.attempts"],
            d.headers["dlq.event_id"],
        )
        for d in dlq
    )
    assert by_destination == sorted(
        [("braze", "permanent_http_error", "401", "1", f"e-{i}") for i in range(3)]
        + [("moengage", "retries_exhausted", "500", "3", f"e-{i}") for i in range(3)]
    )
    assert "wrong-key-123" not in "".join(d.headers["dlq.error"] for d in dlq)
    assert await worker.stop() == 0
    assert "wrong-key-123" not in worker.logs()


async def _wait_dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    letters: list[Any] = []
    for _ in range(60):
        letters = await read_all(bootstrap, topic, settle=0.3)
        if len(letters) >= count:
            await asyncio.sleep(0.5)
            return await read_all(bootstrap, topic, settle=0.3)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{topic}: {len(letters)} dead letters, expected {count}")
