"""The in-memory consumer behaves like aiokafka where the in-process tests rely on it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from worker.consume.memory import MemoryConsumer, MemoryLog

P0, P1 = (TopicPartition("loyalty.rewards_issued", p) for p in range(2))


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.calls.append(("revoked", revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.calls.append(("assigned", assigned))


async def test_a_new_member_resumes_from_the_group_commit() -> None:
    log = MemoryLog([P0, P1])
    for n in range(5):
        log.append(P0, b"%d" % n, key=b"m-1", headers=[("trace", b"t")])
    first = MemoryConsumer(log=log, assignment=[P0])
    first.subscribe(["loyalty.rewards_issued"], listener=Listener())
    await first.start()
    got = await first.getmany(timeout_ms=0)
    assert [r.offset for r in got[P0]] == [0, 1, 2, 3, 4]
    assert got[P0][0].key == b"m-1" and got[P0][0].headers == (("trace", b"t"),)
    await first.commit({P0: 3})
    first.crash()
    with pytest.raises(CommitFailedError):
        await first.commit({P0: 5})
    assert await first.getmany(timeout_ms=0) == {}
    second = MemoryConsumer(log=log, assignment=[P0])
    await second.start()
    assert [r.offset for r in (await second.getmany(timeout_ms=0))[P0]] == [3, 4]


async def test_a_rebalance_revokes_first_and_hands_out_nothing_until_assigned() -> None:
    log = MemoryLog([P0, P1])
    listener = Listener()
    consumer = MemoryConsumer(log=log)
    consumer.subscribe(["loyalty.rewards_issued"], listener=listener)
    await consumer.start()
    consumer.begin_rebalance()
    log.append(P1, b"x")
    fetch = asyncio.create_task(consumer.getmany(timeout_ms=1000))
    await asyncio.sleep(0.02)
    assert not fetch.done()  # as aiokafka: no records while the assignment is being changed
    assert await consumer.revoke() == [P0, P1]
    await consumer.assign([P1])
    assert [r.offset for r in (await fetch)[P1]] == [0]
    assert listener.calls == [
        ("assigned", [P0, P1]),
        ("revoked", [P0, P1]),
        ("assigned", [P1]),
    ]
    with pytest.raises(CommitFailedError):  # the group refuses commits for others' partitions
        await consumer.commit({P0: 0})


async def test_a_waiting_fetch_returns_when_a_record_is_appended() -> None:
    log = MemoryLog([P0])
    consumer = MemoryConsumer(log=log)
    await consumer.start()
    fetch = asyncio.create_task(consumer.getmany(timeout_ms=5000))
    await asyncio.sleep(0.01)
    log.append(P0, b"x")
    got = await asyncio.wait_for(fetch, 1.0)
    assert [r.value for r in got[P0]] == [b"x"]
