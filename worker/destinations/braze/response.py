"""Braze response → Accepted (with per-item partial failures) or the DeliveryError it means.

destination-apis.md §1.1 and §1.2: any 2xx with ``message == "success"`` is accepted; its
``errors[]`` items name ``input_array`` and ``index`` of objects that were dropped. 202
``queued`` (maintenance) is accepted. Statuses follow the generic rules in
``worker.deliver.backoff``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from worker.deliver.backoff import error_text, raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import Rejected


def check(response: Response, request: Request, now: float | None = None) -> Accepted:
    raise_for_status("braze", response.status, response.headers, response.body, now or time.time())
    try:
        body = orjson.loads(response.body) if response.body else {}
    except orjson.JSONDecodeError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    if message == "queued":
        return Accepted()
    if message != "success":
        raise Rejected(error_text("braze", response.status, response.body), status=response.status)
    errors = body.get("errors")
    if not errors or not isinstance(errors, list):
        return Accepted()
    return Accepted(rejected=_rejected_items(errors, request))


def _rejected_items(errors: list[Any], request: Request) -> dict[int, str]:
    """Map (input_array, index) pairs back to positions in ``request.items``."""
    positions: dict[tuple[str, int], int] = {}
    counters: dict[str, int] = {}
    for position, item in enumerate(request.items):
        index = counters.get(item.kind, 0)
        positions[(item.kind, index)] = position
        counters[item.kind] = index + 1
    rejected: dict[int, str] = {}
    for error in errors:
        if not isinstance(error, dict):
            continue
        key = (str(error.get("input_array")), error.get("index"))
        if isinstance(key[1], int) and key in positions:
            rejected[positions[key]] = str(error.get("type", "rejected"))[:300]
    return rejected
