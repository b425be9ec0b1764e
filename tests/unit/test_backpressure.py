"""The pause/resume rule of the commit stage (pure)."""

from __future__ import annotations

import pytest

from worker.pipeline.commit import BufferLimits, Pressure, pressure

LIMITS = BufferLimits(records=100, bytes=1000)


@pytest.mark.parametrize(
    ("paused", "waiting", "held_bytes", "unwell", "expected"),
    [
        (False, 99, 999, False, Pressure.HOLD),  # under both limits
        (False, 100, 0, False, Pressure.PAUSE),  # the record limit
        (False, 0, 1000, False, Pressure.PAUSE),  # the byte limit
        (False, 1, 0, True, Pressure.PAUSE),  # an unwell destination pauses at once
        (True, 51, 0, False, Pressure.HOLD),  # resumes only at half the records...
        (True, 50, 501, False, Pressure.HOLD),  # ...and half the bytes
        (True, 50, 500, False, Pressure.RESUME),
        (True, 0, 0, True, Pressure.HOLD),  # never while unwell
    ],
)
def test_pause_at_the_limits_and_resume_at_half(
    paused: bool, waiting: int, held_bytes: int, unwell: bool, expected: Pressure
) -> None:
    assert pressure(paused, waiting, held_bytes, unwell, LIMITS) is expected
