"""The pause/resume rule of the commit stage (pure)."""

from __future__ import annotations

import pytest

from worker.pipeline.commit import FULL_PAUSE_AFTER, BufferLimits, Pressure, pressure

LIMITS = BufferLimits(records=100, bytes=1000)


@pytest.mark.parametrize(
    ("paused", "waiting", "held_bytes", "unwell", "full_for", "expected"),
    [
        (False, 99, 999, False, 0.0, Pressure.HOLD),  # under both limits
        (False, 100, 0, False, 0.5, Pressure.HOLD),  # full briefly: fetching stops, no pause
        (False, 100, 0, False, FULL_PAUSE_AFTER, Pressure.PAUSE),  # full for long: paused
        (False, 0, 1000, False, FULL_PAUSE_AFTER, Pressure.PAUSE),  # the byte limit too
        (False, 1, 0, True, 0.0, Pressure.PAUSE),  # an unwell destination pauses at once
        (True, 51, 0, False, 0.0, Pressure.HOLD),  # resumes only at half the records...
        (True, 50, 501, False, 0.0, Pressure.HOLD),  # ...and half the bytes
        (True, 50, 500, False, 0.0, Pressure.RESUME),
        (True, 0, 0, True, 0.0, Pressure.HOLD),  # never while unwell
    ],
)
def test_pause_when_unwell_or_full_for_long_and_resume_at_half(
    paused: bool,
    waiting: int,
    held_bytes: int,
    unwell: bool,
    full_for: float,
    expected: Pressure,
) -> None:
    assert pressure(paused, waiting, held_bytes, unwell, LIMITS, full_for) is expected


def test_limits_are_full_at_either_bound() -> None:
    assert not LIMITS.full(99, 999)
    assert LIMITS.full(100, 0) and LIMITS.full(0, 1000)
