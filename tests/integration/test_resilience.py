"""Poison input, kill -9 mid-run, and an unreachable broker: nothing lost, worker keeps going."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.support import REPO, event, produce, read_all, unique_topics, wait_for
from worker.devtools.embedded_broker import ensure_topics

pytestmark = pytest.mark.integration

REWARD = {"reward_type": "free_coffee", "issued_date": "2026-11-20T10:00:00Z"}


def _env(sims: Any, bootstrap: str, topics: tuple[str, ...], **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in sims.env().items() if k.startswith(("BRAZE_", "MOENGAGE_"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics),
        "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


def _good(i: int) -> dict[str, Any]:
    return event("rewards_issued", f"m-{i}", f"good-{i}", REWARD)


def _poison_table(broker_kind: str) -> list[tuple[str, bytes | None, str, str]]:
    """(case, value, dlq.destination, dlq.reason); good events sit between them."""
    base = event("rewards_issued", "m-p", "p", REWARD)
    offer = event("offer_issued", "m-o", "o", {"offer_id": "o"})
    cases: list[tuple[str, bytes | None, str, str]] = [
        ("empty", b"", "*", "empty_value"),
        ("not-utf8", b"\xc3\x28\xff", "*", "invalid_utf8"),
        ("invalid-json", b'{"event_id": ', "*", "invalid_json"),
        ("not-an-object", b'[{"event_id": "x"}]', "*", "not_an_object"),
        ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "*", "invalid_json"),
        (
            "missing-field",
            orjson.dumps({**base, "data": {"issued_date": "2026-11-20T10:00:00Z"}}),
            "*",
            "schema_violation",
        ),
        (
            "wrong-type",
            orjson.dumps({**base, "data": {**REWARD, "points": "many"}}),
            "*",
            "schema_violation",
        ),
        (
            "no-member",
            orjson.dumps({k: v for k, v in base.items() if k != "member_id"}),
            "*",
            "missing_member_id",
        ),
        (
            "unknown-type",
            orjson.dumps({**base, "event_type": "tier_changed"}),
            "*",
            "unknown_event_type",
        ),
        (
            "future-version",
            orjson.dumps({**base, "schema_version": 3}),
            "*",
            "unknown_schema_version",
        ),
        (
            "moengage-null-id",
            orjson.dumps({**base, "member_id": "null", "event_id": "null-id"}),
            "moengage",
            "destination_validation",
        ),
        (
            "moengage-zero-id",
            orjson.dumps({**base, "member_id": "0", "event_id": "zero-id"}),
            "moengage",
            "destination_validation",
        ),
        (
            "braze-long-string",
            orjson.dumps(
                {**offer, "event_id": "long", "data": {"offer_id": "o", "description": "d" * 300}}
            ),
            "braze",
            "destination_validation",
        ),
        (
            "braze-dollar-name",
            orjson.dumps(
                {
                    **offer,
                    "event_id": "dollar",
                    "data": {"offer_id": "o", "campaign": {"custom_data": {"$set": "x"}}},
                }
            ),
            "braze",
            "destination_validation",
        ),
    ]
    # over Apache Kafka's default message.max.bytes: the source topic is created to allow it,
    # its .dlq twin is not, so the dead letter is a stub (README: Dead letters)
    cases.append(("5mb", b'{"a":"' + b"x" * 5_000_000 + b'"}', "*", "too_large"))
    return cases


async def test_every_kind_of_poison_lands_in_the_dlq_and_good_events_flow(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any, broker_kind: str
) -> None:
    """Each bad record is dead-lettered with its reason; the good ones around it are delivered."""
    topics = unique_topics()
    await ensure_topics(
        kafka_bootstrap, [topics[0]], 6, configs={"max.message.bytes": str(8 * 1024 * 1024)}
    )
    table = _poison_table(broker_kind)
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for index, (case, value, _, _) in enumerate(table):
        records.append((topics[0], f"m-{index}".encode(), orjson.dumps(_good(index))))
        target = topics[2] if case.startswith("braze") else topics[0]
        records.append((target, case.encode(), value))
    records.append((topics[0], b"m-last", orjson.dumps(_good(999))))
    await produce(kafka_bootstrap, records, max_request_size=8 * 1024 * 1024)
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics))
    expected_good = {f"good-{i}" for i in range(len(table))} | {"good-999"}

    def braze_ids() -> set[str]:
        return {e["properties"]["event_id"] for e in simulators.braze.state.events()}

    await wait_for(lambda: expected_good <= braze_ids(), 90, "good events at Braze")
    letters: list[Any] = []
    for _ in range(60):
        letters = await read_all(kafka_bootstrap, topics[0] + ".dlq", settle=0.3)
        letters += await read_all(kafka_bootstrap, topics[2] + ".dlq", settle=0.3)
        if len(letters) >= len(table):
            break
        await asyncio.sleep(0.5)
    found = sorted(
        (d.key.decode(), d.headers["dlq.destination"], d.headers["dlq.reason"]) for d in letters
    )
    assert found == sorted((case, dest, reason) for case, _, dest, reason in table)
    (stub,) = [d for d in letters if d.key == b"5mb"]
    assert stub.headers["dlq.truncated"] == "true" and len(stub.value or b"") == 64 * 1024
    moengage_ids = {a["attributes"]["event_id"] for a in simulators.moengage.state.actions()}
    assert expected_good <= moengage_ids
    assert {"null-id", "zero-id"} <= braze_ids()  # MoEngage refused them, Braze did not
    assert {"long", "dollar"} <= moengage_ids
    assert worker.process.poll() is None  # still running after all of it
    assert await worker.stop() == 0


@pytest.mark.parametrize(
    ("count", "kills"),
    [
        pytest.param(3000, 2, id="3k-2kills"),
        pytest.param(
            50_000, 5, id="50k-5kills", marks=[pytest.mark.long, pytest.mark.timeout(900)]
        ),
    ],
)
async def test_kill_9_mid_run_loses_nothing(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any, count: int, kills: int
) -> None:
    """kill -9 repeatedly mid-run, with restarts: every event arrives, duplicates bounded."""
    topics = unique_topics()
    simulators.braze.state.faults.update({"latency_ms": 20})
    simulators.moengage.state.faults.update({"latency_ms": 20})
    await produce(
        kafka_bootstrap,
        [(topics[0], f"m-{i % 300}".encode(), orjson.dumps(_good(i))) for i in range(count)],
    )
    env = _env(simulators, kafka_bootstrap, topics, RELAY_MAX_BUFFERED_EVENTS="500")

    def received() -> tuple[Counter[str], Counter[str]]:
        braze = Counter(e["properties"]["event_id"] for e in simulators.braze.state.events())
        moe = Counter(a["attributes"]["event_id"] for a in simulators.moengage.state.actions())
        return braze, moe

    for kill in range(kills):
        worker = worker_factory(env)
        floor = (kill + 1) * count // (kills + 2)
        await wait_for(lambda f=floor: sum(received()[0].values()) >= f, 90, "progress")
        worker.kill()  # SIGKILL: no drain, no final commit
    worker = worker_factory(env)
    await wait_for(lambda: all(len(c) == count for c in received()), 120, "every event, twice")
    braze, moe = received()
    duplicates = {
        "braze": sum(braze.values()) - count,
        "moengage": sum(moe.values()) - count,
    }
    print(f"kill -9 x{kills} over {count} events: duplicates {duplicates}")
    # at most the uncommitted window per kill: RELAY_MAX_BUFFERED_EVENTS records
    for value in duplicates.values():
        assert 0 <= value <= kills * (500 + 100)  # + the records of a commit still in flight
    assert await worker.stop() == 0


def test_unreachable_broker_exits_non_zero_after_the_configured_time() -> None:
    """With no broker, the worker logs, retries with backoff, then exits 1 (no traceback)."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "KAFKA_UNREACHABLE_EXIT_SECONDS": "3",
            "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9",
            "BRAZE_API_KEY": "k-unreachable",
            "METRICS_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert '"event":"broker_unreachable"' in output
    assert '"event":"broker_unreachable_giving_up"' in output
    assert "Traceback" not in output


async def test_three_workers_one_killed_one_added_lose_nothing(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A pool of three in one group: kill -9 one and add one mid-stream; every event arrives."""
    topics = unique_topics()
    count = 4000
    simulators.braze.state.faults.update({"latency_ms": 10})
    simulators.moengage.state.faults.update({"latency_ms": 10})
    env = _env(simulators, kafka_bootstrap, topics, RELAY_MAX_BUFFERED_EVENTS="300")
    pool = [worker_factory(env, name=f"w{i}") for i in range(3)]
    await produce(
        kafka_bootstrap,
        [(topics[0], f"m-{i % 400}".encode(), orjson.dumps(_good(i))) for i in range(count)],
    )

    def delivered() -> tuple[set[str], set[str]]:
        braze = {e["properties"]["event_id"] for e in simulators.braze.state.events()}
        moe = {a["attributes"]["event_id"] for a in simulators.moengage.state.actions()}
        return braze, moe

    await wait_for(lambda: len(delivered()[0]) >= count // 4, 120, "a quarter delivered")
    pool[1].kill()
    pool.append(worker_factory(env, name="w3"))
    wanted = {f"good-{i}" for i in range(count)}
    await wait_for(lambda: all(d == wanted for d in delivered()), 180, "every event at both")
    # stopping replicas one by one would make each drain during the others' rebalances
    codes = await asyncio.gather(*(w.stop(timeout=120) for w in (pool[0], pool[2], pool[3])))
    assert codes == [0, 0, 0]
