"""Kognitiv response → Accepted or the DeliveryError it means (destination-apis.md §4, §5.4).

A 401 on a REST call means the bearer token expired or was revoked: :class:`TokenRejected`
tells the sender to refresh the token once and retry the call. 404 (unknown member or group) is
permanent and dead-lettered for Kognitiv only.
"""

from __future__ import annotations

import time

from worker.deliver.backoff import raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import Retryable


class TokenRejected(Retryable):
    """Kognitiv refused the bearer token (HTTP 401): refresh it and retry the call."""


def check(response: Response, request: Request, now: float | None = None) -> Accepted:
    if response.status == 401:
        raise TokenRejected("kognitiv refused the access token (HTTP 401)", status=401)
    raise_for_status(
        "kognitiv", response.status, response.headers, response.body, now or time.time()
    )
    return Accepted()
