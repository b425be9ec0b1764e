"""`loyalty-relay ingest` against a real broker: Kognitiv's templates end to end, auth, outages.

The end-to-end test runs `python -m worker ingest` and `python -m worker run` as an operator
would; the others run the service in-process (same code) to look at its answers closely.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from tests.integration.harness import worker_env
from tests.support import REPO, read_all, topic_for, unique_topics, wait_for
from worker.devtools.embedded_broker import EmbeddedBroker, free_port
from worker.ingest.config import load_ingest_config
from worker.ingest.service import IngestService

pytestmark = pytest.mark.integration

TOKEN = "kognitiv-webhook-token-0001"
OLD_TOKEN = "kognitiv-webhook-token-0000"
BRAZE_APP_ID = "93ec5a59-3752-4a45-8559-55b61209ba38"
# seed 000, "Distribution de récompenses Braze", filled in as Kognitiv renders it
BRAZE_REWARD = {
    "events": [
        {
            "external_id": "KLS-100234",
            "app_id": BRAZE_APP_ID,
            "name": "rewards_issued",
            "time": "2026-11-20T09:30:00Z",
            "issued_date": "2026-11-20T09:30:00Z",
            "issued_location_name": "Store #12 Lincoln Park",
            "reward_type": "free_coffee",
        }
    ]
}
# seed 000, "Créer un utilisateur et envoyer un e-mail de bienvenue": every value a string
BRAZE_ENROLLMENT = {
    "attributes": [
        {
            "app_id": "93ec5a59-3752-4a45-855b6109ba38",
            "bio": "Software Architect",
            "country": "US",
            "email": "grace.hopper@example.com",
            "email_subscribe": "opted_in",
            "external_id": "KLS-100235",
            "first_name": "Grace",
            "home_city": "Chicago",
            "time_zone": "America/Chicago",
            "total_points_balance": "1200",
            "CreatedKLS": "2026-11-20T09:31:12Z",
            "email_contact_allowed": "true",
            "sms_contact_allowed": "false",
            "date_joined": "2026-11-20T09:31:00Z",
        }
    ]
}
# seed 001: MoEngage event body
MOENGAGE_REWARD = {
    "type": "event",
    "customer_id": "KLS-100236",
    "actions": [
        {
            "action": "rewards_issued",
            "attributes": {
                "time": "2026-11-20T09:32:00Z",
                "issued_date": "2026-11-20T09:32:00Z",
                "issued_location_name": "Store #7 Wicker Park",
                "reward_type": "birthday_treat",
            },
        }
    ],
}
BRAZE_PATH = "/v1/webhooks/kognitiv/braze"
MOENGAGE_PATH = "/v1/webhooks/kognitiv/moengage"
EVENTS_PATH = "/v1/events"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def basic(token: str = TOKEN, user: str = "MOE-APP-ID") -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {
        "Authorization": f"Basic {encoded}",
        "Content-Type": "application/json",
        "MOE-APPKEY": user,
    }


def ingest_env(bootstrap: str, topics: tuple[str, ...], port: int, **extra: str) -> dict[str, str]:
    routes = ("rewards_issued", "member_enrolled", "offer_issued", "audience_membership_changed")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INGEST_PORT": str(port),
        "INGEST_HOST": "127.0.0.1",
        "INGEST_TOKEN": f"{OLD_TOKEN},{TOKEN}",
        "INGEST_TOPICS": ",".join(f"{t}={topic_for(topics, t)}" for t in routes),
    }
    env.update(extra)
    return env


class Client:
    """Posts to one ingest service and reads its answers."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def post(
        self, path: str, body: Any, headers: dict[str, str], *, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        data = raw if raw is not None else orjson.dumps(body)
        async with self.session.post(self.base + path, data=data, headers=headers) as response:
            text = await response.read()
            payload = orjson.loads(text) if text else {}
            return response.status, payload, response.headers

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base + path) as response:
            return response.status, await response.text()

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await self.get("/readyz")
                return status == 200
            return False

        await wait_for(ready, timeout, "ingest /readyz")


@pytest.fixture
async def ingest_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start in-process ingest services (with a client each); all are stopped afterwards."""
    services: list[IngestService] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(env: dict[str, str], ready: bool = True) -> tuple[IngestService, Client]:
        service = IngestService(load_ingest_config(environ=env))
        await service.start()
        services.append(service)
        session = aiohttp.ClientSession()
        sessions.append(session)
        assert service.port is not None
        client = Client(session, service.port)
        if ready:
            await client.wait_ready()
        return service, client

    yield start
    for session in sessions:
        await session.close()
    for service in services:
        await service.stop()


async def records_in(bootstrap: str, topics: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for topic in topics:
        for record in await read_all(bootstrap, topic, settle=0.5):
            assert record.value is not None
            out.append({"topic": topic, "key": record.key, **orjson.loads(record.value)})
    return out


async def test_kognitiv_templates_reach_braze_and_moengage_through_kafka_and_the_worker(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any, tmp_path: Path
) -> None:
    """Seed 000 and 001 bodies, posted as Kognitiv does, arrive typed at both simulators."""
    topics = unique_topics("ing")
    port = free_port()
    log_path = tmp_path / "ingest.log"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "MOENGAGE_", "INGEST_"))
    }
    env.update(ingest_env(kafka_bootstrap, topics, port, LOG_LEVEL="info"))
    with log_path.open("wb") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "worker", "ingest"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    group = f"g-{topics[0].split('.')[0]}"
    worker = worker_factory(worker_env(simulators, kafka_bootstrap, topics, group))
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, port)
            await client.wait_ready()
            status, reward, _ = await client.post(BRAZE_PATH, BRAZE_REWARD, bearer())
            assert status == 202 and reward["accepted"] == 1, reward
            status, enrolled, _ = await client.post(BRAZE_PATH, BRAZE_ENROLLMENT, bearer())
            assert status == 202 and enrolled["accepted"] == 1, enrolled
            status, moe, _ = await client.post(MOENGAGE_PATH, MOENGAGE_REWARD, basic())
            assert status == 202 and moe["accepted"] == 1, moe
            # Kognitiv retries the reward webhook (say its first answer was lost): same id
            status, retried, _ = await client.post(BRAZE_PATH, BRAZE_REWARD, bearer())
            assert status == 202 and retried["event_ids"] == reward["event_ids"]
            # the old token still works during a rotation
            status, _, _ = await client.post(MOENGAGE_PATH, MOENGAGE_REWARD, basic(OLD_TOKEN))
            assert status == 202
            _, metrics_text = await client.get("/metrics")

        (reward_id,) = reward["event_ids"]
        (moe_id,) = moe["event_ids"]
        braze, moengage = simulators.braze.state, simulators.moengage.state

        def arrived() -> bool:
            ids = {e["properties"].get("event_id") for e in braze.events()}
            members = {a.get("external_id") for a in braze.attributes()}
            actions = {a["attributes"].get("event_id") for a in moengage.actions()}
            customers = {c["customer_id"] for c in moengage.customers()}
            return (
                {reward_id, moe_id} <= ids
                and "KLS-100235" in members
                and {reward_id, moe_id} <= actions
                and "KLS-100235" in customers
            )

        await wait_for(arrived, 90, "the three webhooks at Braze and MoEngage")

        braze_reward = next(e for e in braze.events() if e["properties"]["event_id"] == reward_id)
        assert braze_reward == {
            "external_id": "KLS-100234",
            "name": "rewards_issued",
            "time": "2026-11-20T09:30:00Z",
            "properties": {
                "reward_type": "free_coffee",
                "issued_date": "2026-11-20T09:30:00Z",
                "issued_location_name": "Store #12 Lincoln Park",
                "event_id": reward_id,
            },
        }
        braze_moe = next(e for e in braze.events() if e["properties"]["event_id"] == moe_id)
        assert braze_moe["external_id"] == "KLS-100236"
        assert braze_moe["properties"]["reward_type"] == "birthday_treat"
        attributes = next(a for a in braze.attributes() if a["external_id"] == "KLS-100235")
        assert attributes == {
            "external_id": "KLS-100235",
            "country": "US",
            "email": "grace.hopper@example.com",
            "email_subscribe": "opted_in",
            "first_name": "Grace",
            "home_city": "Chicago",
            "time_zone": "America/Chicago",
            "total_points_balance": 1200,  # "1200" in the template: a number again
            "email_contact_allowed": True,
            "sms_contact_allowed": False,
            "date_joined": "2026-11-20T09:31:00Z",
        }
        action = next(a for a in moengage.actions() if a["attributes"]["event_id"] == moe_id)
        assert action["customer_id"] == "KLS-100236"
        assert action["action"] == "rewards_issued"
        assert action["attributes"] == {
            "issued_date": "2026-11-20T09:32:00Z",
            "issued_location_name": "Store #7 Wicker Park",
            "reward_type": "birthday_treat",
            "event_id": moe_id,
        }
        from_braze = next(a for a in moengage.actions() if a["attributes"]["event_id"] == reward_id)
        assert from_braze["attributes"]["app_id"] == BRAZE_APP_ID  # unknown fields kept in data
        customer = next(c for c in moengage.customers() if c["customer_id"] == "KLS-100235")
        assert customer["attributes"]["points_available"] == 1200
        assert customer["attributes"]["email_contact_allowed"] is True
        assert customer["attributes"]["sms_contact_allowed"] is False

        # in Kafka: key = member, source = kognitiv, the retried reward twice with one event_id
        records = await records_in(kafka_bootstrap, topics)
        assert sorted((r["event_type"], r["event_id"]) for r in records) == sorted(
            [
                ("rewards_issued", reward_id),
                ("rewards_issued", reward_id),
                ("member_enrolled", enrolled["event_ids"][0]),
                ("rewards_issued", moe_id),
                ("rewards_issued", moe_id),
            ]
        )
        for record in records:
            assert record["source"] == "kognitiv"
            assert record["key"] == record["member_id"].encode()
        enrolled_record = next(r for r in records if r["event_type"] == "member_enrolled")
        assert enrolled_record["topic"] == topic_for(topics, "member_enrolled")
        assert enrolled_record["occurred_at"] == "2026-11-20T09:31:00Z"  # from date_joined
        assert enrolled_record["data"]["bio"] == "Software Architect"
        assert 'relay_ingest_requests_total{route="kognitiv_braze",status="202"} 3.0' in (
            metrics_text
        )
        assert (
            'relay_ingest_items_accepted_total{event_type="member_enrolled",route="kognitiv_braze"}'
            in metrics_text
        )
    finally:
        ingest.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(ingest.wait, 30)
        await worker.stop()
    assert code == 0
    logs = log_path.read_text()
    assert '"event":"ingest_request"' in logs
    for secret in (TOKEN, OLD_TOKEN, "grace.hopper@example.com", "Lincoln Park"):
        assert secret not in logs


async def test_wrong_or_missing_credentials_are_401_and_nothing_is_produced(
    kafka_bootstrap: str, ingest_factory: Any
) -> None:
    """Every route refuses what its template would not send, before reading the body."""
    topics = unique_topics("auth")
    _, client = await ingest_factory(ingest_env(kafka_bootstrap, topics, free_port()))
    wrong = "kognitiv-webhook-token-9999"
    refused = [
        (BRAZE_PATH, BRAZE_REWARD, {}),
        (BRAZE_PATH, BRAZE_REWARD, bearer(wrong)),
        (BRAZE_PATH, BRAZE_REWARD, basic()),  # right token, wrong scheme for this route
        (BRAZE_PATH, BRAZE_REWARD, {"Authorization": f"Bearer  {TOKEN}x"}),
        (BRAZE_PATH, BRAZE_REWARD, {"Authorization": TOKEN}),
        (MOENGAGE_PATH, MOENGAGE_REWARD, bearer()),
        (MOENGAGE_PATH, MOENGAGE_REWARD, basic(wrong)),
        (MOENGAGE_PATH, MOENGAGE_REWARD, {"Authorization": "Basic not-base64!"}),
        (MOENGAGE_PATH, MOENGAGE_REWARD, {"Authorization": "Basic " + _b64(TOKEN)}),  # no colon
        (EVENTS_PATH, _native("m-1"), {"Authorization": "Token " + TOKEN}),
        (EVENTS_PATH, _native("m-1"), bearer(TOKEN[:-1])),
    ]
    for path, body, headers in refused:
        status, answer, response_headers = await client.post(path, body, headers)
        assert status == 401, (path, headers, answer)
        assert answer == {"error": "missing or invalid credentials", "reason": "unauthorized"}
        assert "WWW-Authenticate" in response_headers
        assert TOKEN not in orjson.dumps(answer).decode()
    assert await records_in(kafka_bootstrap, topics) == []
    # the same bodies with the right credentials are taken: /v1/events accepts either scheme
    status, _, _ = await client.post(EVENTS_PATH, _native("m-1"), basic())
    assert status == 202
    status, _, _ = await client.post(BRAZE_PATH, BRAZE_REWARD, bearer())
    assert status == 202
    assert len(await records_in(kafka_bootstrap, topics)) == 2


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _native(member: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "event_type": "rewards_issued",
        "schema_version": 1,
        "occurred_at": "2026-11-20T10:00:00Z",
        "member_id": member,
        "data": {"reward_type": "free_coffee", "issued_date": "2026-11-20T10:00:00Z"},
        **overrides,
    }


def _broker_process(bootstrap: str) -> psutil.Process:
    port = bootstrap.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(part.endswith(f":{port}") for part in child.cmdline()):
                return child
    raise AssertionError(f"no broker process listening on {bootstrap}")


async def test_broker_slow_or_stopped_mid_test_gives_503_and_no_202_for_anything_not_durable(
    ingest_factory: Any,
) -> None:
    """A 202 only for acknowledged records; a paused or stopped broker answers 503 in time."""
    broker = EmbeddedBroker()
    await asyncio.to_thread(broker.start)
    try:
        bootstrap = broker.bootstrap_servers
        topics = unique_topics("outage")
        _, client = await ingest_factory(
            ingest_env(
                bootstrap,
                topics,
                free_port(),
                INGEST_PRODUCE_TIMEOUT_SECONDS="3",
                INGEST_RETRY_AFTER_SECONDS="7",
            )
        )
        accepted: list[str] = []
        status, answer, _ = await client.post(
            EVENTS_PATH, [_native(f"m-{i}") for i in range(20)], bearer()
        )
        assert status == 202 and answer["accepted"] == 20
        accepted += answer["event_ids"]

        # slow: the broker process is frozen, so nothing is acknowledged within the deadline
        process = _broker_process(bootstrap)
        process.suspend()
        try:
            began = time.monotonic()
            status, answer, headers = await client.post(
                EVENTS_PATH, [_native(f"m-slow-{i}") for i in range(5)], bearer()
            )
            took = time.monotonic() - began
        finally:
            process.resume()
        assert status == 503, answer
        assert headers["Retry-After"] == "7"
        assert 2.5 < took < 20, took
        assert answer["reason"] == "broker_unavailable"
        assert "accepted" not in answer and "event_ids" not in answer
        assert len(answer["produced_event_ids"]) + len(answer["unconfirmed_event_ids"]) == 5
        accepted += answer["produced_event_ids"]

        # the broker is back: the same request is taken again (at least once, same event_ids)
        async def taken_again() -> bool:
            nonlocal answer
            status, answer, _ = await client.post(
                EVENTS_PATH, [_native(f"m-slow-{i}") for i in range(5)], bearer()
            )
            return status == 202

        await wait_for(taken_again, 60, "a 202 once the broker is resumed", interval=1)
        accepted += answer["event_ids"]
        # every event_id ever reported produced is durable in the topic
        stored = {r["event_id"] for r in await records_in(bootstrap, topics)}
        assert set(accepted) <= stored

        # stopped for good, with requests in flight while it goes
        async def post_one(i: int) -> tuple[int, dict[str, Any], Any]:
            return await client.post(EVENTS_PATH, _native(f"m-gone-{i}"), bearer())

        in_flight = [asyncio.create_task(post_one(i)) for i in range(10)]
        await asyncio.to_thread(broker.stop)
        answers = await asyncio.gather(*in_flight)
        late = [await post_one(100 + i) for i in range(3)]
        for status, answer, headers in [*answers, *late]:
            assert status in (202, 503), answer
            if status == 503:
                assert headers["Retry-After"] == "7"
                assert answer["produced_event_ids"] == []
        assert [status for status, _, _ in late] == [503, 503, 503]
        # (a 202 while the broker went away was acknowledged before it did; its memory storage
        # goes with it, so that part is checked above, where the broker stays alive)
        assert (await client.get("/healthz"))[0] == 200

        async def not_ready() -> bool:
            status, text = await client.get("/readyz")
            return status == 503 and "broker" in text

        await wait_for(not_ready, 30, "/readyz to report the broker")
    finally:
        await asyncio.to_thread(broker.stop)


async def test_hostile_bodies_are_4xx_and_the_service_keeps_serving(
    kafka_bootstrap: str, ingest_factory: Any
) -> None:
    """Garbage, huge, deep and mistyped bodies get a 4xx naming the problem; nothing leaks in."""
    topics = unique_topics("hostile")
    _, client = await ingest_factory(
        ingest_env(kafka_bootstrap, topics, free_port(), INGEST_MAX_ITEMS="50")
    )
    big = orjson.dumps(
        [_native("m-1", data={"reward_type": "x" * 1000, "issued_date": "x"})] * 1100
    )
    deep: Any = {}
    for _ in range(200):
        deep = {"d": deep}
    enrollment = orjson.loads(orjson.dumps(BRAZE_ENROLLMENT))
    enrollment["attributes"][0]["total_points_balance"] = "lots"
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (EVENTS_PATH, b"{not json", bearer(), 400, "invalid_json"),
        (EVENTS_PATH, b"\xff\xfe\x00", bearer(), 400, "invalid_utf8"),
        (EVENTS_PATH, b"", bearer(), 400, "empty_value"),
        (EVENTS_PATH, b'"a string"', bearer(), 400, "not_an_object"),
        (EVENTS_PATH, b"[" * 100_000 + b"]" * 100_000, bearer(), 400, "invalid_json"),
        (EVENTS_PATH, orjson.dumps(_native("m-1", data=deep)), bearer(), 422, "schema_violation"),
        (EVENTS_PATH, big, bearer(), 413, "too_large"),
        (EVENTS_PATH, orjson.dumps([_native("m-1")] * 51), bearer(), 413, "too_many_items"),
        (BRAZE_PATH, b"[]", bearer(), 400, "not_an_object"),
        (BRAZE_PATH, b'{"events": {"name": "x"}}', bearer(), 422, "schema_violation"),
        (BRAZE_PATH, b'{"purchases": []}', bearer(), 422, "schema_violation"),
        (BRAZE_PATH, orjson.dumps(enrollment), bearer(), 422, "schema_violation"),
        (BRAZE_PATH, b'{"events": ["x"]}', bearer(), 422, "not_an_object"),
        (MOENGAGE_PATH, b'{"type": "customer", "customer_id": "m"}', basic(), 422, ""),
        (EVENTS_PATH, orjson.dumps(_native(12)), bearer(), 422, "missing_member_id"),
        (EVENTS_PATH, orjson.dumps(_native("m", schema_version=2)), bearer(), 422, ""),
    ]
    for path, raw, headers, expected, reason in cases:
        status, answer, _ = await client.post(path, None, headers, raw=raw)
        assert status == expected, (path, raw[:80], answer)
        found = answer.get("reason") or answer["rejected"][0]["reason"]
        assert not reason or found == reason, (raw[:80], answer)

    # chunked, so no Content-Length to refuse early: the limit holds while reading
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65_536

    async with client.session.post(
        client.base + EVENTS_PATH, data=chunks(), headers=bearer()
    ) as response:
        assert response.status == 413
        assert (await response.json())["reason"] == "too_large"
    status, answer, _ = await client.post(BRAZE_PATH, enrollment, bearer())
    assert answer["rejected"] == [
        {
            "index": 0,
            "item": "attributes[0]",
            "reason": "schema_violation",
            "field": "total_points_balance",
            "error": "attributes[0].total_points_balance: not a number",
        }
    ]
    assert "lots" not in orjson.dumps(answer).decode()  # values never echo back

    # NDJSON with one bad line: 422 naming it; with ?partial=true the good lines go through
    ndjson = b"\n".join(
        [orjson.dumps(_native("m-a")), b"{oops", orjson.dumps(_native("m-b", data={}))]
    )
    headers = {**bearer(), "Content-Type": "application/x-ndjson"}
    status, answer, _ = await client.post(EVENTS_PATH, None, headers, raw=ndjson)
    assert status == 422
    assert [(r["index"], r["item"], r["reason"]) for r in answer["rejected"]] == [
        (1, "line 2", "invalid_json"),
        (2, "line 3", "schema_violation"),
    ]
    assert await records_in(kafka_bootstrap, topics) == []  # every refusal produced nothing
    status, answer, _ = await client.post(EVENTS_PATH + "?partial=true", None, headers, raw=ndjson)
    assert status == 202 and answer["accepted"] == 1 and len(answer["rejected"]) == 2
    assert [r["member_id"] for r in await records_in(kafka_bootstrap, topics)] == ["m-a"]

    # still serving
    status, answer, _ = await client.post(EVENTS_PATH, _native("m-c"), bearer())
    assert status == 202
    assert (await client.get("/healthz"))[0] == 200


async def test_per_token_rate_limit_answers_429_with_retry_after(
    kafka_bootstrap: str, ingest_factory: Any
) -> None:
    """Each token has its own bucket; past it, 429 with Retry-After and nothing produced."""
    topics = unique_topics("rate")
    _, client = await ingest_factory(
        ingest_env(
            kafka_bootstrap, topics, free_port(), INGEST_RATE_LIMIT="0.2", INGEST_RATE_BURST="2"
        )
    )
    answers = [await client.post(EVENTS_PATH, _native(f"m-{i}"), bearer()) for i in range(3)]
    assert [status for status, _, _ in answers] == [202, 202, 429]
    assert int(answers[2][2]["Retry-After"]) >= 1
    # the other token has its own bucket
    status, _, _ = await client.post(EVENTS_PATH, _native("m-9"), bearer(OLD_TOKEN))
    assert status == 202
    assert len(await records_in(kafka_bootstrap, topics)) == 3


def test_demo_posts_each_template_through_the_ingest_and_exits_0() -> None:
    """`loyalty-relay demo` sends the three template bodies through ingest; all arrive."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--events", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("Kognitiv webhooks through") :]
    rows = [line for line in table.splitlines() if "(braze)" in line or "(moengage)" in line]
    assert len(rows) == 3, table
    for row in rows:
        cells = [cell.strip() for cell in row.split("│")]
        assert cells[2:3] == ["202"] and cells[4:6] == ["yes", "yes"], row
