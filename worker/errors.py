"""Errors the worker raises on purpose, and what the pipeline does with each.

* WorkerError
  x ConfigError ......... bad settings, found at start-up → one-line message, exit status 2
  x RecordError ......... this record can never be delivered as it is → dead-letter (`*`), commit
    + DecodeError ....... not UTF-8, not JSON, not an object, too large, schema violation,
                          unknown event_type or schema_version (``.reason`` is the dlq.reason)
    + TransformError .... a destination cannot map an event it is routed → dead-letter for it
  x DeliveryError ....... one HTTP request failed (``.status`` when there was a response)
    + Rejected .......... a permanent answer (4xx other than 408/429, a fatal body) → dead-letter
                          that request's events for this destination
    + Retryable ......... 5xx, 408, timeouts, connection errors → back off (``.retry_after`` when
                          the server said) and try again within the retry budget
      + Throttled ....... 429 → the limiter slows down; retried like any Retryable
    + AuthFailed ........ OAuth client credentials refused (Kognitiv ``invalid_client``) → the
                          destination pauses and probes; events wait instead of dead-lettering.
                          A plain 401/403 from an API-key destination is Rejected: it is
                          dead-lettered so that `replay` can redeliver once the key is fixed.

Record problems are dead-lettered; destination problems create lag. Kafka client errors are
not caught here: the process exits non-zero and a restart re-reads from the last commit.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """Settings are missing or invalid; the message is one line naming the problem."""


class RecordError(WorkerError):
    """A record can never be delivered as it is."""

    reason: str = "invalid_record"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(RecordError):
    """The Kafka record is not a valid loyalty event (``reason`` names which check failed)."""


class TransformError(RecordError):
    """A destination cannot map an event that is routed to it."""

    reason = "transform_error"


class DeliveryError(WorkerError):
    """One HTTP request failed."""

    reason: str = "delivery_error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Rejected(DeliveryError):
    """The destination refused the request for good; retrying cannot help."""

    reason = "permanent_http_error"


class Retryable(DeliveryError):
    """The destination is unwell or unreachable; the same request may succeed later."""

    reason = "retries_exhausted"


class Throttled(Retryable):
    """The destination rate-limited the request (HTTP 429)."""


class AuthFailed(DeliveryError):
    """The destination refused our credentials; deliveries pause until they work again."""

    reason = "auth_failed"


def describe(exc: BaseException) -> str:
    """A short, value-free description of an exception (for logs and dead letters)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
