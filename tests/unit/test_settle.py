"""Settling a batch's result (pure): delivered items and dead letters for the failed ones."""

from __future__ import annotations

from worker.deliver.sender import Failure, Result
from worker.destinations.base import Item
from worker.events import Consumed, LoyaltyEvent
from worker.offsets import PartitionProgress
from worker.pipeline.common import ItemRef
from worker.pipeline.dispatch import outcomes


def _items(count: int) -> list[Item]:
    progress = PartitionProgress()
    items = []
    for offset in range(count):
        record = Consumed("loyalty.rewards", 0, offset, b"m", b"{}")
        event = LoyaltyEvent(
            f"e{offset}", "rewards_issued", 1, "2026-12-01T00:00:00Z", "m", "kognitiv", {}
        )
        item = Item("users/track", "event", {}, b"{}", "m", f"e{offset}")
        item.ticket = ItemRef(progress.track(offset), record, event)
        items.append(item)
    return items


def test_failed_items_become_dead_letters_with_the_failure_and_the_event_identity() -> None:
    items = _items(3)
    failure = Failure("permanent_http_error", "HTTP 400: bad attribute", 400)
    delivered, letters = outcomes(
        "braze", items, Result(attempts=2, status=400, failed={1: failure})
    )
    assert [ref.event_id for ref in delivered] == ["e0", "e2"]
    [(letter, ticket)] = letters
    assert (letter.destination, letter.reason, letter.http_status, letter.attempts) == (
        "braze",
        "permanent_http_error",
        400,
        2,
    )
    assert (letter.event_id, letter.record.offset, ticket.offset) == ("e1", 1, 1)


def test_a_clean_result_delivers_every_item() -> None:
    delivered, letters = outcomes("braze", _items(4), Result(attempts=1, status=201))
    assert len(delivered) == 4 and letters == []
