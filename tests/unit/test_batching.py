"""Batches respect API limits and keep each member's items in order."""

from worker.batching import Batcher
from worker.destinations.base import BatchRule, Item


def _item(member: str, group: str = "users/track", kind: str = "events", size: int = 10) -> Item:
    return Item(group, kind, {}, b"x" * size, member, f"e-{member}")


def _batcher(max_items: int = 3, max_bytes: int = 10_000) -> Batcher:
    now = [0.0]
    return Batcher(lambda _group: BatchRule(max_items, max_bytes, overhead_bytes=0), lambda: now[0])


def test_batch_seals_when_full() -> None:
    """The third item fills a three-item batch and seals it."""
    batcher = _batcher()
    assert batcher.add(_item("a")) == []
    assert batcher.add(_item("b")) == []
    sealed = batcher.add(_item("c"))
    assert [len(b.items) for b in sealed] == [3]
    assert batcher.open_items == 0


def test_batch_respects_byte_limit() -> None:
    """An item that would push the body over max_bytes starts a new batch."""
    batcher = _batcher(max_items=10, max_bytes=25)
    batcher.add(_item("a", size=10))
    sealed = batcher.add(_item("b", size=10))
    assert sealed == []
    sealed = batcher.add(_item("c", size=10))
    assert [len(b.items) for b in sealed] == [2]


def test_member_in_two_groups_waits_for_earlier_batch() -> None:
    """A member's campaign send depends on the open users/track batch holding its earlier item."""
    batcher = _batcher()
    batcher.add(_item("a"))
    batcher.add(_item("a", group="campaign:1", kind="recipients"))
    track, campaign = batcher.seal_all()
    assert campaign.deps == {track}
    assert track.deps == set()


def test_no_dependency_once_earlier_batch_finished() -> None:
    """After the earlier batch finishes, a later item of the member carries no dependency."""
    batcher = _batcher()
    batcher.add(_item("a"))
    (track,) = batcher.seal_all()
    batcher.finish(track)
    batcher.add(_item("a", group="campaign:1", kind="recipients"))
    (campaign,) = batcher.seal_all()
    assert campaign.deps == set()


def test_member_may_join_an_older_batch_that_does_not_wait_for_its_previous_one() -> None:
    """An older open batch takes a member whose previous batch is independent of it."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("x"))  # users/track batch 1
    batcher.add(_item("a", group="campaign:1", kind="recipients"))  # campaign batch 2
    assert batcher.add(_item("a")) == []  # joins batch 1, which now waits for batch 2
    track, campaign = sorted(batcher.seal_all(), key=lambda b: b.seq)
    assert len(track.items) == 2
    assert track.deps == {campaign}


def test_member_does_not_join_a_batch_its_previous_batch_waits_for() -> None:
    """Joining would create a cycle, so the open batch is sealed and a new one opened."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("b"))  # users/track batch 1 holds b
    batcher.add(_item("b", group="campaign:1", kind="recipients"))  # batch 2 waits for 1
    batcher.add(_item("a", group="campaign:1", kind="recipients"))  # a joins batch 2
    sealed = batcher.add(_item("a"))  # batch 1 must not wait for 2, which waits for 1
    assert [b.seq for b in sealed] == [1]
    rest = sorted(batcher.seal_all(), key=lambda b: b.seq)
    assert [b.seq for b in rest] == [2, 3]
    assert {b.seq for b in rest[1].deps} == {2}


def test_different_kinds_for_one_member_split_requests() -> None:
    """Braze processes attributes before events, so one member's mixed kinds are split."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("a", kind="events"))
    sealed = batcher.add(_item("a", kind="attributes"))
    assert len(sealed) == 1
    (second,) = batcher.seal_all()
    assert second.deps == {sealed[0]}


def test_items_waiting_counts_until_finish() -> None:
    """items_waiting drops only when a batch finishes, which bounds consumption."""
    batcher = _batcher()
    batcher.add(_item("a"))
    batcher.add(_item("b"))
    (full,) = batcher.add(_item("c"))
    batcher.add(_item("d"))
    assert batcher.items_waiting == 4
    batcher.finish(full)
    assert batcher.items_waiting == 1
