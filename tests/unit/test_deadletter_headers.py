"""Dead-letter headers say what failed and why, keep the original bytes, and hide secrets."""

from datetime import UTC, datetime

from worker.deadletter import DeadLetter, build_headers, dlq_topic
from worker.events import Consumed
from worker.observability.redact import Redactor

RECORD = Consumed("loyalty.rewards_issued", 3, 42, b"m-1", b"{}", (("trace", b"abc"),))
NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def test_headers_for_a_failed_destination() -> None:
    """Every dlq.* header is present with the documented value, original headers kept first."""
    letter = DeadLetter(
        RECORD,
        "moengage",
        "permanent_http_error",
        "moengage answered HTTP 401",
        http_status=401,
        attempts=1,
        event_id="e-1",
        event_type="rewards_issued",
    )
    headers = build_headers(letter, Redactor(), now=NOW)
    assert headers[0] == ("trace", b"abc")
    assert dict(headers[1:]) == {
        "dlq.reason": b"permanent_http_error",
        "dlq.error": b"moengage answered HTTP 401",
        "dlq.destination": b"moengage",
        "dlq.http_status": b"401",
        "dlq.attempts": b"1",
        "dlq.original_topic": b"loyalty.rewards_issued",
        "dlq.original_partition": b"3",
        "dlq.original_offset": b"42",
        "dlq.failed_at": b"2026-11-22T10:00:00.000Z",
        "dlq.event_id": b"e-1",
        "dlq.event_type": b"rewards_issued",
    }
    assert dlq_topic(RECORD) == "loyalty.rewards_issued.dlq"


def test_error_text_is_redacted_and_bounded() -> None:
    """Secrets and e-mail addresses never reach dlq.error, and it stays within 1 KB."""
    error = "key sk-live-secret rejected for ada@example.com " + "x" * 5000
    letter = DeadLetter(RECORD, "braze", "permanent_http_error", error)
    headers = dict(build_headers(letter, Redactor(["sk-live-secret"]), now=NOW))
    assert b"sk-live-secret" not in headers["dlq.error"]
    assert b"ada@example.com" not in headers["dlq.error"]
    assert headers["dlq.error"].startswith(b"key *** rejected for a***@example.com")
    assert len(headers["dlq.error"]) == 1024


def test_replayed_record_keeps_first_coordinates_and_adds_attempts() -> None:
    """A redriven record that fails again points at its first consumption; attempts add up."""
    replayed = Consumed(
        "loyalty.rewards_issued",
        0,
        7,
        b"m-1",
        b"{}",
        (
            ("dlq.original_topic", b"loyalty.rewards_issued"),
            ("dlq.original_partition", b"3"),
            ("dlq.original_offset", b"42"),
            ("dlq.attempts", b"2"),
            ("dlq.replay_count", b"1"),
            ("relay.replay_destination", b"moengage"),
            ("relay.replay_id", b"r1"),
        ),
    )
    letter = DeadLetter(replayed, "moengage", "retries_exhausted", "boom", attempts=3)
    headers = build_headers(letter, Redactor(), now=NOW)
    values = dict(headers)
    assert values["dlq.original_offset"] == b"42"
    assert values["dlq.original_partition"] == b"3"
    assert values["dlq.attempts"] == b"5"
    assert values["dlq.replay_count"] == b"1"
    assert values["relay.replay_id"] == b"r1"
    assert "relay.replay_destination" not in values
    assert [k for k, _ in headers].count("dlq.reason") == 1
    assert dlq_topic(replayed) == "loyalty.rewards_issued.dlq"
