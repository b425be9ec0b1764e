"""SharedDecoder: readers far apart still validate each record once, and get what decode gives."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import worker.decode
from worker.decode import SharedDecoder, ValidRecords, decode
from worker.devtools.sample import make_event
from worker.errors import DecodeError
from worker.events import Consumed


def _outcome(read: Any, record: Consumed) -> Any:
    try:
        return read(record)
    except DecodeError as exc:
        return (exc.reason, str(exc))


def _stream(count: int) -> list[Consumed]:
    """Sample events on two partitions, with an invalid record every seventh offset."""
    rng = random.Random(7)
    when = datetime(2026, 11, 30, tzinfo=UTC)
    records = []
    for offset in range(count):
        member = f"m-{rng.randrange(20)}"
        kind = rng.choice(["rewards_issued", "offer_issued", "member_enrolled"])
        document = make_event(kind, member, offset, rng, when=when)
        if offset % 7 == 3:
            document["data"].pop(next(iter(document["data"])))  # breaks a required field
        if offset % 7 == 5:
            document = {"not": "an event"}
        records.append(
            Consumed("t", offset % 2, offset // 2, member.encode(), orjson.dumps(document))
        )
    return records


def test_a_lagging_reader_gets_what_decode_gives_without_validating_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[bytes] = []
    real = worker.decode.surely_valid

    def counting(value: bytes) -> bool:
        checked.append(value)
        return real(value)

    records = _stream(400)
    expected = [_outcome(decode, record) for record in records]
    monkeypatch.setattr(worker.decode, "surely_valid", counting)
    # one cached entry: the second reader, a whole stream behind, always misses the cache
    decoder = SharedDecoder(readers=2, max_entries=1)
    first = [_outcome(decoder.decode, record) for record in records]
    checks_by_first = len(checked)
    second = [_outcome(decoder.decode, record) for record in records]
    assert first == expected
    assert second == expected
    valid = sum(1 for outcome in expected if not isinstance(outcome, tuple))
    assert 250 < valid < len(records)
    # the second reader validated only the records that failed for the first one
    assert len(checked) - checks_by_first == len(records) - valid


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 90), st.integers(1, 3)), max_size=80),
    st.integers(1, 120),
    st.integers(0, 8),
)
def test_valid_records_hold_only_what_was_added(
    added: list[tuple[int, int]], max_offsets: int, max_gap: int
) -> None:
    """A lookup never answers yes for an offset and fingerprint that were not added last."""
    seen = ValidRecords(max_offsets=max_offsets, max_gap=max_gap)
    latest: dict[int, int] = {}
    for offset, fingerprint in added:
        seen.add(offset, fingerprint)
        latest[offset] = fingerprint
    for offset in range(-2, 100):
        for fingerprint in (1, 2, 3):
            if seen.holds(offset, fingerprint):
                assert latest.get(offset) == fingerprint
    offsets = sorted({offset for offset, _ in added})
    missing = [b - a - 1 for a, b in itertools.pairwise(offsets)]
    if max_offsets > 90 and all(count <= max_gap for count in missing):
        # in order and within the bounds, nothing is forgotten
        ordered = ValidRecords(max_offsets=max_offsets, max_gap=max_gap)
        for offset in offsets:
            ordered.add(offset, 1)
        assert all(ordered.holds(offset, 1) for offset in offsets)


def test_valid_records_keep_a_bounded_window() -> None:
    seen = ValidRecords(max_offsets=100)
    for offset in range(1000):
        seen.add(offset, 7)
    assert seen.holds(999, 7)
    assert not seen.holds(999, 8)
    assert not seen.holds(800, 7)
    assert len(seen._fingerprints) <= 100
    seen.add(10_000, 5)  # far ahead: a new window
    assert seen.holds(10_000, 5)
    assert not seen.holds(999, 7)
