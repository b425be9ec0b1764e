"""Kognitiv response → Accepted or the DeliveryError it means (destination-apis.md §4, §5.4, §6.5).

A 401 on a REST call means the bearer token expired or was revoked: :class:`TokenRejected`
tells the sender to refresh the token once and retry the call. A ``DELETE`` answered 404 means
the member is not in the group (an at-least-once duplicate of a remove, or a member or group
Kognitiv does not know): the remove's end state holds, so it counts as delivered. A 404 on
``PUT`` (unknown member or group) is permanent and dead-lettered for Kognitiv only.
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
    if response.status == 404 and request.method == "DELETE":
        return Accepted()  # "not a member": what the remove wanted
    raise_for_status(
        "kognitiv", response.status, response.headers, response.body, now or time.time()
    )
    return Accepted()
