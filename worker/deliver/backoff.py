"""Pure retry arithmetic: how long to wait, and what a generic HTTP status means.

Destinations call :func:`raise_for_status` from their ``check`` functions so that every
destination agrees on the generic rules (408/429/5xx retryable, other 4xx permanent) and only
adds its own quirks on top.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from worker.errors import Rejected, Retryable, Throttled

# A reset header above this is a Unix timestamp; below it, seconds from now
# (destination-apis.md §1.4 and §2.6 disagree on which one the APIs send).
_EPOCH_THRESHOLD = 1_000_000_000
MAX_ERROR_TEXT = 300


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked us to wait, from the first header that says so.

    Order: ``Retry-After``, ``X-RateLimit-Retry-After``, then ``X-RateLimit-Reset`` (epoch or
    delta). Header names are matched case-insensitively. Returns ``None`` when none is usable.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("retry-after", "x-ratelimit-retry-after"):
        seconds = _as_float(lowered.get(name))
        if seconds is not None:
            return max(0.0, seconds)
    reset = _as_float(lowered.get("x-ratelimit-reset"))
    if reset is None:
        return None
    if reset > _EPOCH_THRESHOLD:
        return max(0.0, reset - now)
    return max(0.0, reset)


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    ``attempt`` counts from 1 (the delay after the first failure).
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, ceiling)


def raise_for_status(
    destination: str, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> None:
    """Raise the generic DeliveryError for a non-2xx status; return for 2xx."""
    if 200 <= status < 300:
        return
    text = error_text(destination, status, body)
    if status == 429:
        raise Throttled(text, status=status, retry_after=retry_after_seconds(headers, now))
    if status == 408 or status >= 500:
        raise Retryable(text, status=status, retry_after=retry_after_seconds(headers, now))
    raise Rejected(text, status=status)


def error_text(destination: str, status: int, body: bytes) -> str:
    """A short readable description of an HTTP failure (the body is truncated)."""
    excerpt = body[:MAX_ERROR_TEXT].decode("utf-8", errors="replace").strip()
    return (
        f"{destination} answered HTTP {status}: {excerpt}"
        if excerpt
        else (f"{destination} answered HTTP {status}")
    )


def _as_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None
