"""The guarded fetcher over the in-memory consumer: a failed fetch never skips a record."""

from __future__ import annotations

from collections import defaultdict

from aiokafka import TopicPartition

from worker.consume import Consumer, GuardedFetcher
from worker.consume.memory import MemoryConsumer

P0, P1, P2 = (TopicPartition("loyalty.rewards_issued", p) for p in range(3))


def _consumer(unreadable_at: int | None) -> MemoryConsumer:
    consumer = MemoryConsumer({tp: [b"{}"] * 12 for tp in (P0, P1, P2)})
    if unreadable_at is not None:
        consumer.unreadable[P1] = unreadable_at
    return consumer


async def test_every_record_is_taken_once_or_salvaged_never_skipped() -> None:
    consumer = _consumer(unreadable_at=0)
    # the group committed offset 0 of P1 earlier (with nothing committed and nothing consumed,
    # the fetcher has no offset to salvage from: the partition stays reported, never skipped)
    consumer.committed_offsets[P1] = 0
    typed: Consumer = consumer  # the in-memory consumer fills the seam aiokafka fills
    clock = [0.0]
    next_offsets: dict[TopicPartition, int] = {}
    taken: dict[TopicPartition, list[int]] = defaultdict(list)
    salvaged: list[int] = []

    async def salvage(tp: TopicPartition, offset: int) -> int:
        salvaged.append(offset)
        next_offsets[tp] = offset + 1
        return offset + 1

    fetcher = GuardedFetcher(
        typed,
        "braze",
        next_offsets.get,
        unreadable_after=10.0,
        salvage=salvage,
        clock=lambda: clock[0],
    )
    await consumer.start()
    reported = False
    for _ in range(60):
        for tp, records in (await fetcher.fetch(0, 20)).items():
            taken[tp] += [record.offset for record in records]
            next_offsets[tp] = records[-1].offset + 1
        reported = reported or P1 in fetcher.unreadable
        clock[0] += 1.0
    # the first call drained P0 before P1 failed: P0 was rewound, not skipped
    assert taken[P0] == list(range(12))
    assert taken[P2] == list(range(12))
    assert reported  # failing for longer than unreadable_after: reported, then salvaged
    assert sorted(taken[P1] + salvaged) == list(range(12))


async def test_without_failures_the_fetcher_is_one_call_per_fetch() -> None:
    consumer = _consumer(unreadable_at=None)
    next_offsets: dict[TopicPartition, int] = {}
    fetcher = GuardedFetcher(consumer, "braze", next_offsets.get, unreadable_after=10.0)
    await consumer.start()
    got = await fetcher.fetch(0, 100)
    assert {tp: len(records) for tp, records in got.items()} == {P0: 12, P1: 12, P2: 12}
    assert not fetcher.failing_since and not fetcher.unreadable
