"""Batches respect API limits and keep each member's items in order."""

from worker.batching import Batcher
from worker.destinations.base import BatchRule, Item


def _item(member: str, group: str = "users/track", kind: str = "events", size: int = 10) -> Item:
    return Item(group, kind, {}, b"x" * size, member, f"e-{member}-{size}")


def _batcher(max_items: int = 3, max_bytes: int = 10_000) -> Batcher:
    return Batcher(lambda _group: BatchRule(max_items, max_bytes, overhead_bytes=0), lambda: 0.0)


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
    assert batcher.add(_item("b", size=10)) == []
    sealed = batcher.add(_item("c", size=10))
    assert [len(b.items) for b in sealed] == [2]


def test_member_items_share_one_request_when_they_can() -> None:
    """Two events of one member go into the same open batch (one request keeps their order)."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("a", size=1))
    batcher.add(_item("a", size=2))
    (batch,) = batcher.seal_all()
    assert [i.event_id for i in batch.items] == ["e-a-1", "e-a-2"]


def test_member_item_waits_for_its_unfinished_batch_and_follows_it() -> None:
    """A member's item for another group is parked until the earlier batch finishes."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("a"))
    batcher.add(_item("a", group="campaign:1", kind="recipients"))
    batcher.add(_item("b", group="campaign:1", kind="recipients"))
    track, campaign = sorted(batcher.seal_all(), key=lambda b: b.group, reverse=True)
    assert [i.member_id for i in campaign.items] == ["b"]
    assert [i.member_id for i in track.parked] == ["a"]
    assert batcher.items_waiting == 3
    assert batcher.finish(track) == []
    (follow_up,) = batcher.seal_all()
    assert [(i.group, i.member_id) for i in follow_up.items] == [("campaign:1", "a")]
    assert batcher.items_waiting == 2


def test_different_kinds_for_one_member_are_not_mixed() -> None:
    """Braze processes attributes before events, so one member's mixed kinds are serialized."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("a", kind="events"))
    batcher.add(_item("b", kind="attributes"))
    batcher.add(_item("a", kind="attributes"))
    (first,) = batcher.seal_all()
    assert [(i.member_id, i.kind) for i in first.items] == [("a", "events"), ("b", "attributes")]
    assert [(i.member_id, i.kind) for i in first.parked] == [("a", "attributes")]


def test_members_without_work_in_flight_never_wait() -> None:
    """Sealed batches carry disjoint members, so they can all be sent concurrently."""
    batcher = _batcher(max_items=2)
    sealed = []
    for member in "abcdef":
        sealed += batcher.add(_item(member))
    assert [[i.member_id for i in b.items] for b in sealed] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert all(not b.parked for b in sealed)


def test_parked_items_keep_arrival_order_through_retries() -> None:
    """Items parked behind a batch are placed in arrival order when it finishes."""
    batcher = _batcher(max_items=1)
    (first,) = batcher.add(_item("a", size=1))
    assert batcher.add(_item("a", size=2)) == []
    assert batcher.add(_item("a", size=3)) == []
    (second,) = batcher.finish(first)
    assert [i.event_id for i in second.items] == ["e-a-2"]
    assert [i.event_id for i in second.parked] == ["e-a-3"]
    (third,) = batcher.finish(second)
    assert [i.event_id for i in third.items] == ["e-a-3"]
    batcher.finish(third)
    assert batcher.items_waiting == 0


def test_later_item_never_overtakes_a_parked_one() -> None:
    """events e1, attributes e2, events e3 of one member: e3 waits behind the parked e2."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("a", kind="events", size=1))
    batcher.add(_item("a", kind="attributes", size=2))
    batcher.add(_item("a", kind="events", size=3))
    (first,) = batcher.seal_all()
    assert [i.event_id for i in first.items] == ["e-a-1"]
    assert [i.event_id for i in first.parked] == ["e-a-2", "e-a-3"]


def test_drop_abandons_batches_with_doomed_items_and_places_the_others_again() -> None:
    """On a revoke: the batch holding a doomed member is abandoned, the doomed member's parked
    item is gone, and the surviving member's items come back in their order."""
    batcher = _batcher(max_items=10)
    batcher.add(_item("gone", size=1))
    batcher.add(_item("kept", size=1))
    (sent,) = batcher.seal_all()
    batcher.add(_item("gone", group="campaign:1", kind="recipients", size=2))  # parked on sent
    batcher.add(_item("kept", group="campaign:1", kind="recipients", size=2))  # parked on sent
    batcher.add(_item("other", size=3))  # its own open batch
    assert batcher.items_waiting == 5

    abandoned, sealed = batcher.drop(lambda item: item.member_id == "gone", [sent])

    assert abandoned == [sent] and sent.abandoned and sealed == []
    assert batcher.items_waiting == 3  # kept twice and other; gone's two items are dropped
    (track,) = batcher.seal_all()
    assert [i.event_id for i in track.items] == ["e-other-3", "e-kept-1"]
    # kept's campaign item waits behind its users/track item, as before the revoke
    assert [i.event_id for i in track.parked] == ["e-kept-2"]
    (campaign,) = batcher.finish(track) + batcher.seal_all()
    assert [i.event_id for i in campaign.items] == ["e-kept-2"]


def test_drop_leaves_batches_without_doomed_items_alone() -> None:
    batcher = _batcher(max_items=10)
    batcher.add(_item("a", size=1))
    (sent,) = batcher.seal_all()
    batcher.add(_item("b", group="campaign:1", kind="recipients"))
    abandoned, sealed = batcher.drop(lambda item: item.member_id == "zzz", [sent])
    assert abandoned == [] and sealed == [] and not sent.abandoned
    assert batcher.items_waiting == 2
