"""Dead-letter inspection and replay end to end: each dead letter once, no state rolled back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.support import REPO, event, produce, read_all, topic_for, unique_topics, wait_for
from worker.devtools.embedded_broker import ensure_topics

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


def _popen_replay(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "replay", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _rejected_first_pass(
    kafka_bootstrap: str, simulators: Any, env: dict[str, str], topics: tuple[str, ...], count: int
) -> tuple[list[str], str]:
    """``count`` rewards that Braze takes and MoEngage (wrong key) dead-letters; key fixed after."""
    dlq_topic = topic_for(topics, "rewards_issued") + ".dlq"
    simulators.moengage.state.workspaces = BROKEN_WORKSPACES
    ids = [f"e-{i}" for i in range(count)]
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
    return ids, dlq_topic


async def test_replays_with_different_filters_send_each_dead_letter_once(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Dry run, Ctrl-C, rerun, other filters, relative times: MoEngage gets each event once."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    ids, dlq_topic = await _rejected_first_pass(kafka_bootstrap, simulators, env, topics, 8)
    worker = worker_factory(env)
    letters = await _dead_letters(kafka_bootstrap, dlq_topic, 8)
    assert {(d.headers["dlq.destination"], d.headers["dlq.http_status"]) for d in letters} == {
        ("moengage", "401")
    }
    await wait_for(lambda: len(simulators.braze.state.received) == 8, 30, "Braze deliveries")

    code, report = await _run(["dlq", "inspect", "--json", "--show", "1"], env)
    assert code == 0
    group = report["summary"][0]
    assert report["summary"] == [
        {
            "topic": dlq_topic,
            "destination": "moengage",
            "reason": "permanent_http_error",
            "http_status": "401",
            "count": 8,
            "replayed": 0,
            "first_failed_at": group["first_failed_at"],
            "last_failed_at": group["last_failed_at"],
        }
    ]
    assert report["records"][0]["value"]["event_id"] in ids
    assert report["records"][0]["replay"]["replayed"] is False

    simulators.moengage.state.workspaces = GOOD_WORKSPACES  # the operator fixed the key
    selection = ["--destination", "moengage", "--since", "2h"]
    code, dry = await _run(["replay", *selection, "--dry-run", "--json"], env)
    assert (code, dry["redriven"], len(dry["selected"])) == (0, 8, 8)
    await asyncio.sleep(1.0)
    assert _moengage_ids(simulators) == Counter()

    # interrupted: slow replay, SIGINT after a few records; claims not sent are released
    process = _popen_replay([*selection, "--rate", "2", "--json", "--no-wait"], env)
    await asyncio.sleep(3.0)
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 130, err[-2000:]
    first = orjson.loads(out.strip().splitlines()[-1])
    assert 1 <= first["redriven"] < 8

    # rerun: "2h" resolves to a new instant, the ledger still knows what was sent
    code, rest = await _run(["replay", *selection, "--json"], env)
    assert code == 0, rest
    assert (rest["redriven"], rest["already_replayed"]) == (
        8 - first["redriven"],
        first["redriven"],
    )
    assert (rest["delivered"], rest["dead_lettered_again"], rest["claimed_by_another_run"]) == (
        rest["redriven"],
        0,
        0,
    )
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 8, 30, "MoEngage")

    # other filters selecting the same dead letters, the pool still running
    other = ["--reason", "permanent_http_error", "--since", "3h", "--json"]
    code, second = await _run(["replay", *other], env)
    assert (code, second["redriven"], second["already_replayed"]) == (0, 0, 8)
    await asyncio.sleep(2.0)
    assert _moengage_ids(simulators) == Counter(dict.fromkeys(ids, 1))
    assert len(simulators.braze.state.received) == 8  # nothing else received anything

    code, report = await _run(["dlq", "inspect", "--json", "--show", "8"], env)
    assert (code, report["summary"][0]["replayed"]) == (0, 8)
    for shown in report["records"]:
        assert shown["replay"]["replayed"] is True
        assert shown["replay"]["replayed_at"] >= group["last_failed_at"]
        assert shown["replay"]["failed_again_as"] is None
    assert {r["replay"]["replay_id"] for r in report["records"]} == {
        first["replay_id"],
        rest["replay_id"],
    }

    # --again forces a redrive on purpose
    code, forced = await _run(["replay", *other[:-1], "--again", "--limit", "2", "--json"], env)
    assert (code, forced["redriven"], forced["left_by_limit"]) == (0, 2, 6)
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 10, 30, "forced replay")
    assert sorted(_moengage_ids(simulators).values()) == [1] * 6 + [2] * 2
    assert await worker.stop() == 0


async def test_replay_killed_mid_run_and_rerun_delivers_the_rest_once(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """kill -9 mid-replay: a rerun inside the lease waits for it, after the lease sends the rest."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    ids, dlq_topic = await _rejected_first_pass(kafka_bootstrap, simulators, env, topics, 12)
    worker = worker_factory(env)
    await _dead_letters(kafka_bootstrap, dlq_topic, 12)
    simulators.moengage.state.workspaces = GOOD_WORKSPACES
    lease = ["--lease", "10"]
    process = _popen_replay(["--rate", "2", "--no-wait", *lease], env)
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 3, 60, "first redrives")
    process.kill()
    await asyncio.to_thread(process.wait, 30)
    killed_at = time.monotonic()
    assert process.returncode == -signal.SIGKILL
    await asyncio.sleep(1.0)
    before = sum(_moengage_ids(simulators).values())
    assert before < 12

    # at once: what the dead run produced is found in the source partition (already
    # replayed), its claims on the rest of its chunk are live for the lease, the others go
    code, early = await _run(["replay", "--json", *lease], env)
    assert code == 0, early
    assert early["already_replayed"] >= before
    assert early["redriven"] + early["already_replayed"] + early["claimed_by_another_run"] == 12
    await asyncio.sleep(max(0.0, killed_at + 11 - time.monotonic()))
    # after the lease: the dead run's claims are taken over
    code, rest = await _run(["replay", "--json", *lease], env)
    assert code == 0, rest
    assert (rest["redriven"], rest["already_replayed"]) == (
        early["claimed_by_another_run"],
        12 - early["claimed_by_another_run"],
    )
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 12, 30, "MoEngage")
    await asyncio.sleep(2.0)
    assert _moengage_ids(simulators) == Counter(dict.fromkeys(ids, 1))
    assert len(simulators.braze.state.received) == 12
    code, last = await _run(["replay", "--json", *lease], env)
    assert (code, last["redriven"], last["already_replayed"]) == (0, 0, 12)
    assert await worker.stop() == 0


async def test_two_operators_replaying_at_once_send_each_dead_letter_once(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """Two replays started together with different filters split the dead letters, no overlap."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    ids, dlq_topic = await _rejected_first_pass(kafka_bootstrap, simulators, env, topics, 10)
    worker = worker_factory(env)
    await _dead_letters(kafka_bootstrap, dlq_topic, 10)
    simulators.moengage.state.workspaces = GOOD_WORKSPACES
    (code_a, a), (code_b, b) = await asyncio.gather(
        _run(["replay", "--destination", "moengage", "--rate", "20", "--json"], env),
        _run(["replay", "--reason", "permanent_http_error", "--rate", "20", "--json"], env),
    )
    assert (code_a, code_b) == (0, 0), (a, b)
    assert a["redriven"] + b["redriven"] == 10, (a, b)
    await wait_for(lambda: sum(_moengage_ids(simulators).values()) >= 10, 30, "MoEngage")
    await asyncio.sleep(2.0)
    assert _moengage_ids(simulators) == Counter(dict.fromkeys(ids, 1))
    assert await worker.stop() == 0


def _customer_changes(sims: Any, member: str) -> list[dict[str, Any]]:
    return [c["attributes"] for c in sims.moengage.state.customers() if c["customer_id"] == member]


def _unordered(changes: list[dict[str, Any]]) -> list[bytes]:
    """Enrollments and audience changes travel on different topics: no order between them."""
    return sorted(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in changes)


async def test_replay_never_rolls_member_state_back(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """A stale enrollment and an add later removed are superseded; facts replay; flag forces."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    simulators.moengage.state.workspaces = BROKEN_WORKSPACES

    def enrolled(eid: str, name: str) -> tuple[str, bytes, bytes]:
        data = {"first_name": name, "country": "NL"}
        return (topics[1], b"m-1", orjson.dumps(event("member_enrolled", "m-1", eid, data)))

    def audience(eid: str, action: str) -> tuple[str, bytes, bytes]:
        data = {"audience": "vip", "action": action}
        value = event("audience_membership_changed", "m-1", eid, data)
        return (topics[3], b"m-1", orjson.dumps(value))

    def reward(eid: str) -> tuple[str, bytes, bytes]:
        return (topics[0], b"m-1", orjson.dumps(event("rewards_issued", "m-1", eid, REWARD)))

    await produce(kafka_bootstrap, [enrolled("e-1", "Old"), audience("e-2", "add"), reward("e-3")])
    worker = worker_factory(env)
    for topic in (topics[1], topics[3], topics[0]):
        await _dead_letters(kafka_bootstrap, topic + ".dlq", 1)
    simulators.moengage.state.workspaces = GOOD_WORKSPACES
    await produce(
        kafka_bootstrap, [enrolled("e-4", "New"), audience("e-5", "remove"), reward("e-6")]
    )
    await wait_for(lambda: len(_customer_changes(simulators, "m-1")) == 2, 30, "live changes")
    await wait_for(lambda: _moengage_ids(simulators) == Counter({"e-6": 1}), 30, "live reward")
    live = _customer_changes(simulators, "m-1")
    assert _unordered(live) == _unordered(
        [
            {"first_name": "New", "country": "NL"},
            {"removeValueFromArrayField": {"loyalty_audiences": ["vip"]}},
        ]
    )

    code, summary = await _run(["replay", "--json"], env)
    assert code == 0, summary
    assert (summary["redriven"], summary["superseded"], summary["delivered"]) == (1, 2, 1)
    await wait_for(lambda: _moengage_ids(simulators)["e-3"] == 1, 30, "the replayed fact")
    await asyncio.sleep(1.5)
    assert _customer_changes(simulators, "m-1") == live  # nothing rolled back

    code, forced = await _run(["replay", "--include-superseded", "--json"], env)
    assert code == 0, forced
    assert (forced["redriven"], forced["superseded"], forced["already_replayed"]) == (2, 0, 1)
    assert forced["delivered"] == 2
    await wait_for(lambda: len(_customer_changes(simulators, "m-1")) == 4, 30, "forced changes")
    assert _unordered(_customer_changes(simulators, "m-1")[2:]) == _unordered(
        [
            {"first_name": "Old", "country": "NL"},
            {"addValueToArrayField": {"loyalty_audiences": ["vip"]}},
        ]
    )
    assert _moengage_ids(simulators) == Counter({"e-3": 1, "e-6": 1})
    assert await worker.stop() == 0


async def test_a_dead_letter_that_fails_again_is_superseded_by_its_copy(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """The re-failed copy carries counters and the original's coordinates; both replay once."""
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
    assert code == 0, summary
    assert (summary["redriven"], summary["dead_lettered_again"], summary["delivered"]) == (1, 1, 0)
    letters = await _dead_letters(kafka_bootstrap, dlq_topic, 2)
    repeat = letters[-1].headers
    assert (repeat["dlq.replay_count"], repeat["dlq.attempts"], repeat["dlq.destination"]) == (
        "1",
        "2",
        "moengage",
    )
    assert repeat["dlq.original_offset"] == letters[0].headers["dlq.original_offset"]
    code, report = await _run(["dlq", "inspect", "--json", "--show", "2"], env)
    original, copy = (f"{r['topic']}/{r['partition']}/{r['offset']}" for r in report["records"])
    assert repeat["relay.redrive_of"] == original
    assert [r["replay"]["failed_again_as"] for r in report["records"]] == [copy, None]
    assert len(simulators.braze.state.received) == 1  # the replay went to MoEngage only

    _, limited = await _run(["replay", "--json", "--max-replays", "1", "--replay-id", "r2"], env)
    assert (limited["redriven"], limited["already_replayed"]) == (0, 1)
    assert limited["skipped_at_max_replays"] == 1

    simulators.moengage.state.workspaces = GOOD_WORKSPACES
    code, fixed = await _run(["replay", "--json"], env)  # selects the original and its copy
    assert (code, fixed["redriven"], fixed["already_replayed"], fixed["delivered"]) == (0, 1, 1, 1)
    await wait_for(lambda: _moengage_ids(simulators) == Counter({"e-1": 1}), 30, "MoEngage")
    code, report = await _run(["dlq", "inspect", "--json", "--show", "2"], env)
    assert [r["replay"]["failed_again_as"] for r in report["records"]] == [copy, None]
    assert [r["replay"]["replayed"] for r in report["records"]] == [True, True]
    await asyncio.sleep(1.0)
    assert _moengage_ids(simulators) == Counter({"e-1": 1})
    assert await worker.stop() == 0


async def test_null_header_values_are_read_and_replayed(
    kafka_bootstrap: str, simulators: Any
) -> None:
    """A null header value is inspected and replayed unharmed; a truncated stub is not sent."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    value = orjson.dumps(event("rewards_issued", "m-1", "e-1", REWARD))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics[0] + ".dlq",
            value=value,
            key=b"m-1",
            headers=[
                ("trace", None),
                ("dlq.destination", b"moengage"),
                ("dlq.reason", b"permanent_http_error"),
                ("dlq.original_topic", topics[0].encode()),
                ("dlq.original_partition", b"0"),
                ("dlq.original_offset", b"0"),
                ("dlq.replay_count", None),
            ],
        )
        stub = [("dlq.destination", b"moengage"), ("dlq.truncated", b"true")]
        await producer.send_and_wait(topics[0] + ".dlq", value=value[:20], key=b"m-1", headers=stub)
    finally:
        await producer.stop()
    code, report = await _run(["dlq", "inspect", "--json", "--show", "1"], env)
    assert code == 0, report
    shown = report["records"][0]
    assert shown["headers"]["trace"] == ""
    text = await asyncio.to_thread(_cli, ["replay", "--dry-run"], env)
    assert text.returncode == 0, text.stderr[-2000:]
    assert ": would redrive 1\n" in text.stdout
    assert "already replayed 0," in text.stdout and "truncated stubs 1" in text.stdout
    code, summary = await _run(["replay", "--json", "--no-wait"], env)
    assert (code, summary["redriven"], summary["skipped_truncated"]) == (0, 1, 1), summary
    copies = await read_all(kafka_bootstrap, topics[0], settle=0.5)
    assert [c.raw_headers[0] for c in copies] == [("trace", None)]
    assert copies[0].headers["relay.redrive_of"] == f"{shown['topic']}/{shown['partition']}/0"


async def test_a_ledger_with_two_partitions_is_refused_with_one_line(
    kafka_bootstrap: str, simulators: Any
) -> None:
    """The ledger's single partition is what orders claims: two partitions stop replay at once."""
    topics = unique_topics()
    env = _env(simulators, kafka_bootstrap, topics)
    await ensure_topics(kafka_bootstrap, [env["KAFKA_GROUP_ID"] + ".replayed"], 2)
    value = orjson.dumps(event("rewards_issued", "m-1", "e-1", REWARD))
    await produce(kafka_bootstrap, [(topics[0] + ".dlq", b"m-1", value)])
    done = await asyncio.to_thread(_cli, ["replay", "--json"], env)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"loyalty-relay replay: {env['KAFKA_GROUP_ID']}.replayed must have exactly one "
        "partition, it has 2; nothing more was sent"
    )
    assert await read_all(kafka_bootstrap, topics[0], settle=0.3) == []
