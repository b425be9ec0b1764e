"""SessionM and Kognitiv end to end: audience fan-out, OAuth token life, unknown members."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.support import event, produce, read_all, topic_for, unique_topics, wait_for

pytestmark = pytest.mark.integration


def _env(sims: Any, bootstrap: str, topics: tuple[str, ...]) -> dict[str, str]:
    return {
        **sims.env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics),
        "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }


def _audience(topics: tuple[str, ...], member: str, event_id: str, action: str, **extra: Any):
    ev = event(
        "audience_membership_changed",
        member,
        event_id,
        {"audience": "vip", "action": action, **extra},
    )
    return topic_for(topics, ev["event_type"]), member.encode(), orjson.dumps(ev)


async def test_audience_events_fan_out_to_all_four_destinations(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """add/remove reach Braze, MoEngage and Kognitiv; SessionM gets the adds and skips removes."""
    topics = unique_topics()
    records = [
        _audience(topics, "m-1", "e-1", "add", ttl_seconds=3600),
        _audience(topics, "m-2", "e-2", "add"),
        _audience(topics, "m-1", "e-3", "remove"),
    ]
    await produce(kafka_bootstrap, records)
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    kognitiv, sessionm = simulators.kognitiv.state, simulators.sessionm.state

    await wait_for(
        lambda: (
            len(kognitiv.received) == 3
            and len(sessionm.received) == 2
            and len(simulators.braze.state.received) == 3
            and len(simulators.moengage.state.received) == 3
        ),
        60,
        "audience changes at all four simulators",
    )
    assert [
        (r["op"], r["group"], r["member"]) for r in kognitiv.received if r["member"] == "m-1"
    ] == [
        ("add", "vip", "m-1"),
        ("remove", "vip", "m-1"),
    ]
    assert kognitiv.members["vip"] == {"m-2"}
    assert sorted((r["user_id"], r["tags"], r["ttl"]) for r in sessionm.received) == [
        ("m-1", ["vip"], 3600),
        ("m-2", ["vip"], None),
    ]
    assert kognitiv.token_requests == 1
    assert await worker.stop() == 0
    logs = worker.log_lines()
    skipped = [line for line in logs if line.get("event") == "skipped"]
    assert [(s["destination"], s["event_id"]) for s in skipped] == [("sessionm", "e-3")]
    text = worker.logs()
    for secret in ("sim-sessionm-secret", "sim-kognitiv-secret", "sim-sessionm-key"):
        assert secret not in text
    routing = next(line for line in logs if line.get("event") == "routing_table")
    assert routing["enabled"] == ["braze", "moengage", "sessionm", "kognitiv"]


async def test_token_expiring_mid_run_is_refreshed_without_dead_letters(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Tokens that expire (and are revoked) mid-run are refreshed; nothing is dead-lettered."""
    topics = unique_topics()
    kognitiv = simulators.kognitiv.state
    kognitiv.token_lifetime = 3.0  # the worker refreshes at half-life (margin 60 s > 1.5 s)
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    for batch in range(3):
        if batch == 2:
            kognitiv.tokens.clear()  # revoked server-side: the next call gets a 401
        await produce(
            kafka_bootstrap,
            [_audience(topics, f"m-{batch}-{i}", f"e-{batch}-{i}", "add") for i in range(5)],
        )
        await wait_for(lambda n=batch: len(kognitiv.received) == 5 * (n + 1), 60, "Kognitiv")
        if batch == 0:
            await asyncio.sleep(2.0)  # past the 1.5 s refresh point of the first token
    assert kognitiv.token_requests >= 3
    assert kognitiv.statuses[401] >= 1
    assert await worker.stop() == 0
    assert await read_all(kafka_bootstrap, topics[3] + ".dlq", settle=0.5) == []


async def test_revoked_secret_pauses_kognitiv_without_loss_and_resumes_when_fixed(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """invalid_client stops Kognitiv deliveries (no dead letters) until the secret works again."""
    topics = unique_topics()
    kognitiv = simulators.kognitiv.state
    kognitiv.clients = {"sim-kognitiv-client": "rotated-elsewhere"}
    await produce(kafka_bootstrap, [_audience(topics, f"m-{i}", f"e-{i}", "add") for i in range(6)])
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    await wait_for(lambda: len(simulators.braze.state.received) == 6, 60, "Braze deliveries")
    await asyncio.sleep(3)
    assert kognitiv.received == []
    assert any(line.get("event") == "credentials_refused" for line in worker.log_lines())
    kognitiv.clients = {"sim-kognitiv-client": "sim-kognitiv-secret"}
    await wait_for(lambda: len(kognitiv.received) == 6, 60, "Kognitiv catching up")
    assert sorted(r["member"] for r in kognitiv.received) == [f"m-{i}" for i in range(6)]
    assert await worker.stop() == 0
    assert await read_all(kafka_bootstrap, topics[3] + ".dlq", settle=0.5) == []
    assert "rotated-elsewhere" not in worker.logs()
    assert "sim-kognitiv-secret" not in worker.logs()


async def test_unknown_members_are_dead_lettered_for_kognitiv_only(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A 404 for one member dead-letters it for kognitiv; others and other destinations flow."""
    topics = unique_topics()
    simulators.kognitiv.state.known_members = {"m-1", "m-3"}
    records = [_audience(topics, f"m-{i}", f"e-{i}", "add") for i in range(1, 4)]
    await produce(kafka_bootstrap, records)
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    await wait_for(
        lambda: (
            len(simulators.kognitiv.state.received) == 2
            and len(simulators.sessionm.state.received) == 3
        ),
        60,
        "deliveries",
    )
    dlq: list[Any] = []
    for _ in range(40):
        dlq = await read_all(kafka_bootstrap, topics[3] + ".dlq", settle=0.3)
        if dlq:
            break
        await asyncio.sleep(0.3)
    assert [
        (d.headers["dlq.destination"], d.headers["dlq.reason"], d.headers["dlq.http_status"], d.key)
        for d in dlq
    ] == [("kognitiv", "permanent_http_error", "404", b"m-2")]
    assert dlq[0].value == records[1][2]
    assert sorted(r["member"] for r in simulators.kognitiv.state.received) == ["m-1", "m-3"]
    braze_members = sorted(o["external_id"] for o in simulators.braze.state.attributes())
    assert braze_members == ["m-1", "m-2", "m-3"]
    moengage_members = sorted(c["customer_id"] for c in simulators.moengage.state.customers())
    assert moengage_members == ["m-1", "m-2", "m-3"]
    assert await worker.stop() == 0
