"""The batcher's placement gives exactly the batches the code it replaced gave, on any sequence.

``ReferenceBatcher`` keeps the previous ``_place`` and ``finish`` verbatim; both batchers are
driven through the same generated sequence of adds, finishes, linger sweeps, seal-alls and
revokes, and must return the same batches (same items, same order) at every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.batching import Batch, Batcher
from worker.destinations.base import BatchRule, Item

RULES = {
    "track": BatchRule(4, 400, 10),
    "send": BatchRule(2, 10_000, 10),
    "one": BatchRule(1, 10_000),
}


class ReferenceBatcher(Batcher):
    def finish(self, batch: Batch) -> list[Batch]:
        batch.finished = True
        self.items_waiting -= len(batch.items)
        for item in batch.items:
            if self._last_for_member.get(item.member_id) is batch:
                del self._last_for_member[item.member_id]
        sealed: list[Batch] = []
        parked, batch.parked = batch.parked, []
        batch.parked_members = {}
        for item in parked:
            sealed += self._place(item)
        return sealed

    def _place(self, item: Item) -> list[Batch]:
        sealed: list[Batch] = []
        member = item.member_id
        previous = self._last_for_member.get(member)
        batch = self._open.get(item.group)
        if previous is not None and (
            previous.parked_members.get(member, 0) > 0
            or not (previous is batch and batch.kinds.get(member) == item.kind and batch.fits(item))
        ):
            previous.parked.append(item)
            previous.parked_members[member] = previous.parked_members.get(member, 0) + 1
            return sealed
        if batch is not None and not batch.fits(item):
            sealed.append(self._seal(batch))
            batch = None
        if batch is None:
            batch = self._new(item.group)
        batch.items.append(item)
        batch.size += len(item.encoded) + batch.rule.per_item_overhead
        batch.kinds.setdefault(member, item.kind)
        self._last_for_member[member] = batch
        if len(batch.items) >= batch.rule.max_items:
            sealed.append(self._seal(batch))
        return sealed


ITEM = st.tuples(
    st.sampled_from(list(RULES)),
    st.sampled_from(["attributes", "events"]),
    st.sampled_from(["m1", "m2", "m3", "m4"]),
    st.integers(1, 150),
)
STEP = st.one_of(
    st.tuples(st.just("add"), ITEM),
    st.tuples(st.just("finish"), st.integers(0, 20)),
    st.tuples(st.just("due"), st.integers(0, 3)),
    st.tuples(st.just("seal_all"), st.none()),
    st.tuples(st.just("drop"), st.sampled_from(["m1", "m2", "m3", "m4"])),
)


class _Driver:
    def __init__(self, batcher_type: type[Batcher]) -> None:
        self.now = 0.0
        self.batcher = batcher_type(RULES.__getitem__, lambda: self.now)
        self.unfinished: list[Batch] = []
        self.count = 0

    def step(self, op: str, arg: Any) -> list[Any]:
        batcher = self.batcher
        self.now += 1.0
        if op == "add":
            group, kind, member, size = arg
            self.count += 1
            item = Item(group, kind, {}, b"x" * size, member, f"e{self.count}")
            sealed = batcher.add(item)
        elif op == "finish":
            if not self.unfinished:
                return []
            sealed = batcher.finish(self.unfinished.pop(arg % len(self.unfinished)))
        elif op == "due":
            sealed = batcher.due(float(arg))
        elif op == "seal_all":
            sealed = batcher.seal_all()
        else:
            abandoned, sealed = batcher.drop(lambda i: i.member_id == arg, self.unfinished)
            self.unfinished = [b for b in self.unfinished if b not in abandoned]
        self.unfinished += sealed
        return [
            (b.seq, b.group, [i.event_id for i in b.items], [i.event_id for i in b.parked])
            for b in sealed
        ] + [batcher.items_waiting, batcher.open_items]


@settings(max_examples=400, deadline=None)
@given(st.lists(STEP, max_size=120))
def test_placement_equals_the_reference_on_any_sequence(steps: list[tuple[str, Any]]) -> None:
    fast, reference = _Driver(Batcher), _Driver(ReferenceBatcher)
    for op, arg in steps:
        assert fast.step(op, arg) == reference.step(op, arg)
    # and every unfinished batch holds the same items and parked items
    for mine, theirs in zip(fast.unfinished, reference.unfinished, strict=True):
        assert [i.event_id for i in mine.items] == [i.event_id for i in theirs.items]
        assert [i.event_id for i in mine.parked] == [i.event_id for i in theirs.parked]
