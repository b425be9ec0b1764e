"""MoEngage response → Accepted or the DeliveryError it means (destination-apis.md §2.1, §2.6)."""

from __future__ import annotations

import time

import orjson

from worker.deliver.backoff import error_text, raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import Rejected


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
