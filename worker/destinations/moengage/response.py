"""MoEngage response → Accepted or the DeliveryError it means (destination-apis.md §2.1, §2.6).

A bulk ``/transition`` refused with 400 may be one bad element failing the whole request
(§6.3): :func:`split_budget` lets the sender bisect it so that only the bad element is
dead-lettered and the rest delivered, within ``bulk_split_max_requests`` extra requests.
"""

from __future__ import annotations

import time

import orjson

from worker.deliver.backoff import error_text, raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import Rejected

from .config import MoEngageSettings


def check(response: Response, request: Request, now: float | None = None) -> Accepted:
    raise_for_status(
        "moengage", response.status, response.headers, response.body, now or time.time()
    )
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("status") == "success":
        return Accepted()
    raise Rejected(error_text("moengage", response.status, response.body), status=response.status)


def split_budget(status: int | None, settings: MoEngageSettings) -> int:
    """Extra requests the sender may spend isolating the bad elements of a refused bulk."""
    return settings.bulk_split_max_requests if status == 400 else 0
