"""Pure rules behind replay: ledger verdicts, state kinds, first-consumption order, headers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from worker.config import KafkaSettings
from worker.dlq_read import Coordinates, DlqRecord, PartitionReader, ReadIncomplete
from worker.redrive import chunk_size, redriven_headers
from worker.replay_ledger import CLAIM, DONE, RELEASE, Entry, Verdict, decide
from worker.replay_scan import Origin, first_consumed_at, state_kind, superseded

NOW = 1_000_000.0


def entry(offset: int, state: str, run: str, at: float = NOW) -> Entry:
    return Entry(offset, state, run, "rid", at)


def test_first_claim_wins_and_a_later_claim_is_busy() -> None:
    """Of two live claims the earlier in the log wins; the other run backs off."""
    entries = [entry(0, CLAIM, "a"), entry(1, CLAIM, "b")]
    assert decide(entries, "a", 0, live_after=NOW - 300, again=False) is Verdict.WON
    assert decide(entries, "b", 1, live_after=NOW - 300, again=False) is Verdict.BUSY


def test_done_means_already_replayed_unless_again() -> None:
    """A done record before the claim skips the dead letter; --again ignores it."""
    entries = [entry(0, CLAIM, "a"), entry(1, DONE, "a"), entry(2, CLAIM, "b")]
    assert decide(entries, "b", 2, live_after=NOW - 300, again=False) is Verdict.DONE
    assert decide(entries, "b", 2, live_after=NOW - 300, again=True) is Verdict.WON


def test_a_stale_claim_is_taken_over_and_a_released_one_at_once() -> None:
    """A claim older than the lease, or released, no longer holds the dead letter."""
    stale = [entry(0, CLAIM, "a", at=NOW - 400), entry(1, CLAIM, "b")]
    assert decide(stale, "b", 1, live_after=NOW - 300, again=False) is Verdict.WON
    released = [entry(0, CLAIM, "a"), entry(1, RELEASE, "a"), entry(2, CLAIM, "b")]
    assert decide(released, "b", 2, live_after=NOW - 300, again=False) is Verdict.WON


def test_a_claim_that_lost_holds_nothing() -> None:
    """A claim made while another run held the dead letter does not block that run's re-claim."""
    entries = [entry(0, CLAIM, "a"), entry(1, CLAIM, "b"), entry(2, CLAIM, "a")]
    assert decide(entries, "b", 1, live_after=NOW - 300, again=False) is Verdict.BUSY
    assert decide(entries, "a", 2, live_after=NOW - 300, again=False) is Verdict.WON
    assert decide(entries, "c", 3, live_after=NOW - 300, again=False) is Verdict.BUSY


def test_again_still_respects_a_live_claim() -> None:
    """--again passes over done records, not over a run that holds the dead letter now."""
    entries = [entry(0, CLAIM, "a"), entry(1, DONE, "a"), entry(2, CLAIM, "b")]
    assert decide(entries, "c", 3, live_after=NOW - 300, again=True) is Verdict.BUSY
    assert decide(entries, "b", 2, live_after=NOW - 300, again=True) is Verdict.WON


def _value(event_type: str, **data: object) -> bytes:
    return orjson.dumps({"event_type": event_type, "member_id": "m-1", "data": data})


def test_state_kinds() -> None:
    """Enrollments and audience changes (per audience) carry state; rewards and offers are facts."""
    assert state_kind(_value("member_enrolled", first_name="A")) == ("member_enrolled", "")
    assert state_kind(_value("audience_membership_changed", audience="vip", action="add")) == (
        "audience",
        "vip",
    )
    assert state_kind(_value("rewards_issued")) is None
    assert state_kind(_value("offer_issued")) is None
    assert state_kind(b"not json") is None
    assert state_kind(None) is None
    assert state_kind(b"[1]") is None


def _record(offset: int, headers: list[tuple[str, bytes | None]]) -> DlqRecord:
    return DlqRecord("t.enrollments", 2, offset, b"m-1", b"{}", headers)


def test_a_replayed_copy_sits_where_its_event_was_first_consumed() -> None:
    """A copy of an older event never supersedes a newer one: it counts at its original offset."""
    copy = _record(
        90,
        [
            ("relay.redrive_of", b"t.enrollments.dlq/0/4"),
            ("dlq.original_topic", b"t.enrollments"),
            ("dlq.original_partition", b"2"),
            ("dlq.original_offset", b"5"),
        ],
    )
    assert first_consumed_at(copy) == 5
    assert first_consumed_at(_record(90, [("dlq.original_offset", b"5")])) == 90
    assert first_consumed_at(_record(90, [("relay.redrive_of", None)])) == 90


def test_superseded_needs_a_later_event_of_the_same_member_and_kind() -> None:
    """Later same-kind state supersedes; an earlier one, another audience or a fact does not."""
    tp = TopicPartition("t.audience", 0)
    vip = ("audience", "vip")
    origins = {
        Coordinates("t.audience.dlq", 0, 1): Origin(tp, 10, b"m-1", vip),
        Coordinates("t.audience.dlq", 0, 2): Origin(tp, 20, b"m-1", vip),
        Coordinates("t.audience.dlq", 0, 3): Origin(tp, 10, b"m-1", ("audience", "gold")),
        Coordinates("t.audience.dlq", 0, 4): Origin(tp, 10, b"m-1", None),
    }
    latest = {(tp, b"m-1", vip): 15}
    assert superseded(origins, latest) == {Coordinates("t.audience.dlq", 0, 1)}


def test_coordinates_round_trip() -> None:
    """Topic names may contain dots; the last two fields are partition and offset."""
    c = Coordinates("g-1.loyalty.rewards_issued.dlq", 3, 1234)
    assert Coordinates.parse(str(c)) == c
    assert Coordinates.parse(str(c).encode()) == c
    assert Coordinates.parse("nonsense") is None
    assert Coordinates.parse("t/x/1") is None
    assert Coordinates.parse(None) is None


def test_redriven_headers_keep_null_values_and_point_at_the_dead_letter() -> None:
    """Null header values pass through; relay.* are replaced; the count goes up by one."""
    record = DlqRecord(
        "t.x.dlq",
        1,
        7,
        b"m-1",
        b"{}",
        [
            ("trace", None),
            ("relay.redrive_of", b"t.x.dlq/1/3"),
            ("dlq.destination", b"moengage"),
            ("dlq.reason", b"permanent_http_error"),
            ("dlq.replay_count", b"1"),
            ("dlq.original_offset", b"5"),
        ],
    )
    headers = redriven_headers(record, "r1")
    assert headers == [
        ("trace", None),
        ("dlq.original_offset", b"5"),
        ("relay.replay_destination", b"moengage"),
        ("relay.replay_id", b"r1"),
        ("relay.redrive_of", b"t.x.dlq/1/7"),
        ("dlq.replay_count", b"2"),
    ]


def test_chunks_are_sent_well_within_half_the_lease() -> None:
    """At --rate R a chunk takes at most a quarter of the lease; never more than 100."""
    assert chunk_size(None, 300) == 100
    assert chunk_size(2, 10) == 5
    assert chunk_size(0.01, 10) == 1


class _StuckConsumer:
    """A consumer whose partition reports records up to offset 5 but never returns them."""

    def __init__(self) -> None:
        self._paused: set[TopicPartition] = set()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def highwater(self, tp: TopicPartition) -> int:
        return 5

    async def position(self, tp: TopicPartition) -> int:
        return 2

    def paused(self) -> set[TopicPartition]:
        return self._paused

    def pause(self, tp: TopicPartition) -> None:
        self._paused.add(tp)


async def test_a_read_that_stops_short_of_the_end_fails_loudly() -> None:
    """No progress towards the end seen at start for stall_seconds raises, naming the partition."""
    reader = PartitionReader(KafkaSettings(), stall_seconds=0.5)
    tp = TopicPartition("t.x.dlq", 1)
    reader.consumer = _StuckConsumer()
    reader.partitions = [tp]
    reader.positions = {tp: 2}
    with pytest.raises(ReadIncomplete, match=r"t\.x\.dlq\[1\] at 2 of 5"):
        async for _ in reader.records():
            pass
