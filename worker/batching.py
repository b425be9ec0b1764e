"""Group items into requests within each API's limits while keeping per-member order.

A :class:`Batch` is one future request. Items of one group (``users/track``, ``campaign:<id>``,
``transition``...) share an open batch until it is full or its linger time is up.

Per-member order uses a barrier per member (as RudderStack's router does): while a member has
an item in an unfinished batch, that member's next item may only join the *same* open batch
(same request, same kind, so the API keeps the order); otherwise it is parked on that batch
and placed again when the batch finishes, retries included. Batches never wait for each
other, so every member without work in flight keeps flowing at full concurrency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    # the kind of each member's items here: Braze processes attributes before events, so
    # one member's items of different kinds must not share a request
    kinds: dict[str, str] = field(default_factory=dict)
    # later items of this batch's members, waiting for it to finish
    parked: list[Item] = field(default_factory=list)
    parked_members: dict[str, int] = field(default_factory=dict)
    sealed: bool = False
    finished: bool = False
    abandoned: bool = False  # taken back on a revoke: its task must not finish it

    def fits(self, item: Item) -> bool:
        rule = self.rule
        if len(self.items) >= rule.max_items:
            return False
        if not self.items:
            return True
        added = len(item.encoded) + rule.per_item_overhead
        return self.size + added + rule.overhead_bytes <= rule.max_bytes


class Batcher:
    """Open batches per group, the member → unfinished batch index, and sealing rules."""

    def __init__(self, rule_for: Callable[[str], BatchRule], clock: Callable[[], float]) -> None:
        self._rule_for = rule_for
        self._clock = clock
        self._open: dict[str, Batch] = {}
        self._last_for_member: dict[str, Batch] = {}
        self._seq = 0
        self.items_waiting = 0  # items accepted and not yet in a finished batch (parked too)

    def add(self, item: Item) -> list[Batch]:
        """Place one item; return the batches this sealed (ready to dispatch)."""
        self.items_waiting += 1
        return self._place(item)

    def due(self, linger: float) -> list[Batch]:
        """Seal and return open batches older than ``linger`` seconds."""
        now = self._clock()
        return [self._seal(b) for b in list(self._open.values()) if now - b.opened_at >= linger]

    def seal_all(self) -> list[Batch]:
        return [self._seal(b) for b in list(self._open.values())]

    def finish(self, batch: Batch) -> list[Batch]:
        """Mark a batch finished, place the items parked on it; return batches that sealed."""
        batch.finished = True
        self.items_waiting -= len(batch.items)
        last_for_member = self._last_for_member
        for member in batch.kinds:  # every member with an item here, once
            if last_for_member.get(member) is batch:
                del last_for_member[member]
        sealed: list[Batch] = []
        parked, batch.parked = batch.parked, []
        batch.parked_members = {}
        for item in parked:
            sealed += self._place(item)
        return sealed

    def drop(
        self, doomed: Callable[[Item], bool], unfinished: Iterable[Batch]
    ) -> tuple[list[Batch], list[Batch]]:
        """Take back every batch holding a doomed item (partitions given up on a revoke).

        Open batches and the ``unfinished`` (sent, not finished) ones that hold a doomed item
        are abandoned; doomed items parked anywhere are dropped. The other items of abandoned
        batches, and the items parked on them, are placed again in their order, so a member's
        order holds. Returns (abandoned batches, batches that placing again sealed).
        """
        candidates = list(self._open.values()) + [b for b in unfinished if not b.finished]
        abandoned = [b for b in candidates if not b.abandoned and any(map(doomed, b.items))]
        for batch in abandoned:
            batch.abandoned = True
            if self._open.get(batch.group) is batch:
                del self._open[batch.group]
            for item in batch.items + batch.parked:
                if self._last_for_member.get(item.member_id) is batch:
                    del self._last_for_member[item.member_id]
        again: list[Item] = []
        for batch in abandoned:
            again += [item for item in batch.items + batch.parked if not doomed(item)]
            self.items_waiting -= len(batch.items) + len(batch.parked)
            batch.parked, batch.parked_members = [], {}
        for batch in candidates:
            if batch.abandoned or not batch.parked:
                continue
            kept = [item for item in batch.parked if not doomed(item)]
            self.items_waiting -= len(batch.parked) - len(kept)
            batch.parked = kept
            batch.parked_members = {}
            for item in kept:
                batch.parked_members[item.member_id] = (
                    batch.parked_members.get(item.member_id, 0) + 1
                )
        sealed: list[Batch] = []
        for item in again:
            sealed += self.add(item)
        return abandoned, sealed

    @property
    def open_items(self) -> int:
        return sum(len(b.items) for b in self._open.values())

    def _place(self, item: Item) -> list[Batch]:
        member = item.member_id
        batch = self._open.get(item.group)
        previous = self._last_for_member.get(member)
        if previous is not None and (
            previous is not batch
            or previous.parked_members.get(member, 0) > 0  # never overtake an earlier parked item
            or batch.kinds.get(member) != item.kind
            or not batch.fits(item)
        ):
            # wait for the member's unfinished batch
            previous.parked.append(item)
            previous.parked_members[member] = previous.parked_members.get(member, 0) + 1
            return []
        sealed: list[Batch] = []
        if batch is not None and not batch.fits(item):
            sealed.append(self._seal(batch))
            batch = None
        if batch is None:
            batch = self._new(item.group)
        items = batch.items
        items.append(item)
        rule = batch.rule
        batch.size += len(item.encoded) + rule.per_item_overhead
        if member not in batch.kinds:
            batch.kinds[member] = item.kind
        self._last_for_member[member] = batch
        if len(items) >= rule.max_items:
            sealed.append(self._seal(batch))
        return sealed

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
