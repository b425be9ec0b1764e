"""Per-member order across a rebalance: the old owner never sends after giving a partition up."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import log_events
from tests.support import event, read_all, wait_for

pytestmark = pytest.mark.integration

MEMBERS = [f"m-{i:02d}" for i in range(18)]


def _kognitiv_env(sims: Any, bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in sims.env().items() if k.startswith("KOGNITIV_")},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_GROUP_ID": f"g-{topic}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KOGNITIV_BREAKER_THRESHOLD": "100000",  # keep retrying: this test is about order
        **extra,
    }


async def _produce_audience(bootstrap: str, topic: str, action: str) -> dict[str, int]:
    """One add or remove of audience ``gold`` per member; return each member's partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    partitions = {}
    try:
        for member in MEMBERS:
            body = event(
                "audience_membership_changed",
                member,
                f"{action}-{member}",
                {"audience": "gold", "action": action},
            )
            meta = await producer.send_and_wait(topic, orjson.dumps(body), key=member.encode())
            partitions[member] = meta.partition
    finally:
        await producer.stop()
    return partitions


def _assigned(worker: Any, topic: str) -> set[int]:
    lines = log_events(worker, "partitions_assigned")
    if not lines:
        return set()
    return {int(p.rsplit(":", 1)[1]) for p in lines[-1]["partitions"] if p.startswith(topic)}


async def test_add_then_remove_across_a_rebalance_leaves_the_member_out(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any
) -> None:
    """A retries its adds against a failing Kognitiv; B joins and takes half the partitions;
    the removes follow; Kognitiv recovers. Every member's last call is the remove, and A's
    stale adds for the partitions it gave up never arrive."""
    (topic,) = topic_factory("audience", partitions=6)
    kognitiv = simulators.kognitiv.state
    kognitiv.faults.update({"status": 503, "status_probability": 1.0})
    slow_retries = {
        "KOGNITIV_BACKOFF_BASE_SECONDS": "3",
        "KOGNITIV_BACKOFF_CAP_SECONDS": "3",
        "RELAY_DRAIN_SECONDS": "2",  # the revoke waits this long, then cancels
    }
    first = worker_factory(_kognitiv_env(simulators, kafka_bootstrap, topic, **slow_retries), "a")
    await wait_for(lambda: len(_assigned(first, topic)) == 6, 60, "A owning every partition")
    partition_of = await _produce_audience(kafka_bootstrap, topic, "add")
    await wait_for(lambda: kognitiv.statuses[503] >= 6, 60, "A trying the adds")

    second = worker_factory(
        _kognitiv_env(
            simulators,
            kafka_bootstrap,
            topic,
            KOGNITIV_BACKOFF_BASE_SECONDS="0.05",
            KOGNITIV_BACKOFF_CAP_SECONDS="0.2",
        ),
        "b",
    )
    await wait_for(
        lambda: bool(_assigned(second, topic)) and len(_assigned(first, topic)) < 6,
        90,
        "B taking partitions from A",
    )
    moved = _assigned(second, topic)
    moved_members = [m for m in MEMBERS if partition_of[m] in moved]
    assert moved_members, (moved, partition_of)
    await _produce_audience(kafka_bootstrap, topic, "remove")
    kognitiv.faults.update({"clear": True})

    def removed_everyone() -> bool:
        last = {}
        for record in kognitiv.received:
            last[record["member"]] = record["op"]
        return all(last.get(member) == "remove" for member in MEMBERS)

    await wait_for(removed_everyone, 90, "every member's remove at Kognitiv")
    await asyncio.sleep(8)  # past A's 3 s backoff twice: a stale add would arrive by now
    assert kognitiv.members.get("gold", set()) == set(), sorted(kognitiv.members["gold"])
    for member in moved_members:
        ops = [r["op"] for r in kognitiv.received if r["member"] == member]
        assert ops[-1] == "remove", (member, ops)
        assert ops.count("add") >= 1 and ops.index("add") < len(ops) - 1, (member, ops)
    assert log_events(first, "revoked_batches_cancelled"), "A cancelled its revoked batches"
    assert await first.stop() == 0
    assert await second.stop() == 0
    assert await read_all(kafka_bootstrap, topic + ".dlq", settle=0.5) == []
