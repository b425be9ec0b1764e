"""Group items into requests within each API's limits while keeping per-member order.

A :class:`Batch` is one future request. Items of one group (``users/track``, ``campaign:<id>``,
``transition``...) share an open batch until it is full or its linger time is up. Order per
member is kept by dependencies: a batch that carries a member's item waits for every earlier
unfinished batch that carries the same member, so retries of the earlier one happen first.
An item may join an open batch only if that cannot close a cycle: the member's previous
batch must not (transitively) wait for the open batch already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.destinations.base import BatchRule, Item


@dataclass(eq=False, slots=True)
class Batch:
    seq: int
    group: str
    rule: BatchRule
    opened_at: float
    items: list[Item] = field(default_factory=list)
    size: int = 0
    # kinds per member in this batch; a member's items of different kinds must not share a
    # request when the API reorders kinds (Braze processes attributes before events)
    kinds: dict[str, str] = field(default_factory=dict)
    deps: set[Batch] = field(default_factory=set)
    sealed: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def fits(self, item: Item) -> bool:
        rule = self.rule
        if len(self.items) >= rule.max_items:
            return False
        if not self.items:
            return True
        added = len(item.encoded) + rule.per_item_overhead
        return self.size + added + rule.overhead_bytes <= rule.max_bytes


class Batcher:
    """Open batches per group, the member → last batch index, and sealing rules."""

    def __init__(self, rule_for: Callable[[str], BatchRule], clock: Callable[[], float]) -> None:
        self._rule_for = rule_for
        self._clock = clock
        self._open: dict[str, Batch] = {}
        self._last_for_member: dict[str, Batch] = {}
        self._seq = 0
        self.items_waiting = 0  # items in batches not finished yet

    def add(self, item: Item) -> list[Batch]:
        """Place one item; return the batches this sealed (ready to dispatch)."""
        sealed: list[Batch] = []
        batch = self._open.get(item.group)
        previous = self._last_for_member.get(item.member_id)
        if previous is not None and previous.finished.is_set():
            previous = None
        if batch is not None and not self._may_join(batch, item, previous):
            sealed.append(self._seal(batch))
            batch = None
        if batch is None:
            batch = self._new(item.group)
        if previous is not None and previous is not batch:
            batch.deps.add(previous)
        batch.items.append(item)
        batch.size += len(item.encoded) + batch.rule.per_item_overhead
        batch.kinds.setdefault(item.member_id, item.kind)
        self._last_for_member[item.member_id] = batch
        self.items_waiting += 1
        if len(batch.items) >= batch.rule.max_items:
            sealed.append(self._seal(batch))
        return sealed

    def due(self, linger: float) -> list[Batch]:
        """Seal and return open batches older than ``linger`` seconds."""
        now = self._clock()
        return [self._seal(b) for b in list(self._open.values()) if now - b.opened_at >= linger]

    def seal_all(self) -> list[Batch]:
        return [self._seal(b) for b in list(self._open.values())]

    def finish(self, batch: Batch) -> None:
        """Mark a batch finished (every item reached a final outcome) and forget it."""
        batch.finished.set()
        self.items_waiting -= len(batch.items)
        for item in batch.items:
            if self._last_for_member.get(item.member_id) is batch:
                del self._last_for_member[item.member_id]
        batch.deps.clear()

    @property
    def open_items(self) -> int:
        return sum(len(b.items) for b in self._open.values())

    def _may_join(self, batch: Batch, item: Item, previous: Batch | None) -> bool:
        if not batch.fits(item):
            return False
        if previous is not None and previous is not batch and _waits_for(previous, batch):
            return False  # joining would make the two batches wait for each other
        kind = batch.kinds.get(item.member_id)
        return kind is None or kind == item.kind

    def _new(self, group: str) -> Batch:
        self._seq += 1
        batch = Batch(self._seq, group, self._rule_for(group), self._clock())
        self._open[group] = batch
        return batch

    def _seal(self, batch: Batch) -> Batch:
        batch.sealed = True
        if self._open.get(batch.group) is batch:
            del self._open[batch.group]
        return batch


def _waits_for(batch: Batch, target: Batch) -> bool:
    """Whether ``batch`` depends on ``target``, directly or through other unfinished batches."""
    stack = list(batch.deps)
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current is target:
            return True
        if current.seq in seen or current.finished.is_set():
            continue
        seen.add(current.seq)
        stack.extend(current.deps)
    return False
