"""Who may post, and how often: token checks in constant time and a token bucket per token.

The Braze-shaped route takes ``Authorization: Bearer <token>``, the MoEngage-shaped route
``Authorization: Basic base64(<anything>:<token>)`` (MoEngage's template puts its app id before
the colon), ``/v1/events`` either. A token is known by its position in the configured list
(``token_index``), never by its value, in logs and metrics.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable
from typing import Final

BEARER: Final = "bearer"
BASIC: Final = "basic"


class Tokens:
    """The accepted tokens; compares SHA-256 digests so the time taken does not depend on them."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(token.encode()) for token in tokens)

    def match(self, authorization: str | None, schemes: frozenset[str]) -> int | None:
        """The index of the token the header carries, or None (missing, malformed, unknown)."""
        candidate = _credential(authorization or "", schemes)
        if candidate is None:
            return None
        digest = _digest(candidate)
        found: int | None = None
        for index, known in enumerate(self._digests):  # no early exit: every token is compared
            if hmac.compare_digest(digest, known) and found is None:
                found = index
        return found


def _credential(authorization: str, schemes: frozenset[str]) -> bytes | None:
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme not in schemes or not value:
        return None
    if scheme == BEARER:
        return value.encode("utf-8", "surrogateescape")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, colon, password = decoded.partition(b":")
    return password if colon else None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key → (tokens, at)

    def take(self, key: int) -> float | None:
        """None when allowed; otherwise the seconds until one request would be."""
        if self._rate <= 0:
            return None
        now = self._clock()
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
