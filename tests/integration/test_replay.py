"""Dead-letter inspection and replay end to end: bad key, fix, dry run, replay, rerun."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.support import REPO, event, produce, read_all, topic_for, unique_topics, wait_for

pytestmark = pytest.mark.integration

REWARD = {"reward_type": "free_coffee", "issued_date": "2026-11-20T10:00:00Z"}
GOOD_WORKSPACES = {"sim-workspace": "sim-moengage-key"}
BROKEN_WORKSPACES = {"sim-workspace": "rotated-key"}


def _env(sims: Any, bootstrap: str, topics: tuple[str, ...]) -> dict[str, str]:
    return {
        **{k: v for k, v in sims.env().items() if k.startswith(("BRAZE_", "MOENGAGE_"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics),
        "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def _run(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = await asyncio.to_thread(_cli, args, env)
    text = done.stdout.strip()
    start = text.find("{")
    return done.returncode, (orjson.loads(text[start:]) if start >= 0 else {"err": done.stderr})


def _moengage_ids(sims: Any) -> Counter[str]:
    return Counter(a["attributes"]["event_id"] for a in sims.moengage.state.actions())


async def _dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    for _ in range(80):
        letters = await read_all(bootstrap, topic, settle=0.3)
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.3)
    raise AssertionError(f"expected {count} dead letters in {topic}")


async def test_fix_the_key_then_replay_to_moengage_only_exactly_once(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Inspect, dry run, interrupted replay, rerun, second run: MoEngage gets each event once."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    dlq_topic = topic_for(topics, "rewards_issued") + ".dlq"
    simulators.moengage.state.workspaces = BROKEN_WORKSPACES
    ids = [f"e-{i}" for i in range(8)]
    await produce(
        kafka_bootstrap,
        [
            (
                topics[0],
                f"m-{i}".encode(),
                orjson.dumps(event("rewards_issued", f"m-{i}", eid, REWARD)),
            )
            for i, eid in enumerate(ids)
        ],
    )
    worker = worker_factory(env)
    letters = await _dead_letters(kafka_bootstrap, dlq_topic, 8)
    assert {(d.headers["dlq.destination"], d.headers["dlq.http_status"]) for d in letters} == {
        ("moengage", "401")
    }
    await wait_for(lambda: len(simulators.braze.state.received) == 8, 30, "Braze deliveries")

    code, report = await _run(["dlq", "inspect", "--json", "--show", "1"], env)
    assert code == 0
    assert report["summary"] == [
        {
            "topic": dlq_topic,
            "destination": "moengage",
            "reason": "permanent_http_error",
            "http_status": "401",
            "count": 8,
            "first_failed_at": report["summary"][0]["first_failed_at"],
            "last_failed_at": report["summary"][0]["last_failed_at"],
        }
    ]
    assert report["records"][0]["value"]["event_id"] in ids

    simulators.moengage.state.workspaces = GOOD_WORKSPACES  # the operator fixed the key
    code, dry = await _run(["replay", "--destination", "moengage", "--dry-run", "--json"], env)
    assert (code, dry["replayed"]) == (0, 8)
    await asyncio.sleep(1.0)
    assert _moengage_ids(simulators) == Counter()
    assert len(await read_all(kafka_bootstrap, dlq_topic, settle=0.3)) == 8

    # interrupted halfway: slow replay, SIGINT after a few records
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "replay",
            "--destination",
            "moengage",
            "--rate",
            "2",
            "--json",
            "--no-wait",
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    await asyncio.sleep(2.5)
    process.send_signal(signal.SIGINT)
    out, _ = await asyncio.to_thread(process.communicate, timeout=60)
    first = orjson.loads(out.strip().splitlines()[-1])
    assert process.returncode == 130
    assert 1 <= first["replayed"] < 8

    code, rest = await _run(["replay", "--destination", "moengage", "--json"], env)
    assert code == 0
    assert rest["replayed"] == 8 - first["replayed"]
    assert (rest["delivered"], rest["dead_lettered_again"]) == (rest["replayed"], 0)
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 8, 30, "MoEngage")
    assert _moengage_ids(simulators) == Counter(dict.fromkeys(ids, 1))
    assert len(simulators.braze.state.received) == 8  # Braze got nothing extra

    code, again = await _run(["replay", "--destination", "moengage", "--json"], env)
    assert (code, again["replayed"]) == (0, 0)
    await asyncio.sleep(1.0)
    assert _moengage_ids(simulators) == Counter(dict.fromkeys(ids, 1))
    assert await worker.stop() == 0


async def test_replay_that_fails_again_is_dead_lettered_with_counters(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A replayed record that fails again returns to the .dlq with replay_count and attempts up."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    dlq_topic = topics[0] + ".dlq"
    simulators.moengage.state.workspaces = BROKEN_WORKSPACES
    await produce(
        kafka_bootstrap,
        [(topics[0], b"m-1", orjson.dumps(event("rewards_issued", "m-1", "e-1", REWARD)))],
    )
    worker = worker_factory(env)
    await _dead_letters(kafka_bootstrap, dlq_topic, 1)
    code, summary = await _run(["replay", "--json"], env)  # the key is still wrong
    assert code == 0
    assert (summary["replayed"], summary["dead_lettered_again"], summary["delivered"]) == (1, 1, 0)
    letters = await _dead_letters(kafka_bootstrap, dlq_topic, 2)
    repeat = letters[-1].headers
    assert (repeat["dlq.replay_count"], repeat["dlq.attempts"], repeat["dlq.destination"]) == (
        "1",
        "2",
        "moengage",
    )
    assert repeat["dlq.original_offset"] == letters[0].headers["dlq.original_offset"]
    assert len(simulators.braze.state.received) == 1  # the replay went to MoEngage only
    _, limited = await _run(["replay", "--json", "--max-replays", "1", "--replay-id", "r2"], env)
    assert (limited["replayed"], limited["skipped_by_replay_limit"]) == (1, 1)
    assert await worker.stop() == 0
