"""SessionM response → Accepted or the DeliveryError it means (destination-apis.md §3.1).

SessionM answers HTTP 200 with ``{"status":"error","errors":{"code":...}}`` for some failures:
``user_not_found``, ``missing_data``, ``validation`` and ``argument_error`` are permanent, any
other code is retried. Messages never include the URL, which carries the API key.
"""

from __future__ import annotations

import time
from typing import Final

import orjson

from worker.deliver.backoff import raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import Rejected, Retryable

PERMANENT_CODES: Final = frozenset(
    {"user_not_found", "missing_data", "validation", "argument_error"}
)


def check(response: Response, request: Request, now: float | None = None) -> Accepted:
    raise_for_status(
        "sessionm", response.status, response.headers, response.body, now or time.time()
    )
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("status") == "ok":
        return Accepted()
    code = _error_code(body)
    message = f"sessionm answered HTTP {response.status} with status error, code {code}"
    if code in PERMANENT_CODES:
        raise Rejected(message, status=response.status)
    raise Retryable(message, status=response.status)


def _error_code(body: object) -> str:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict) and errors.get("code"):
            return str(errors["code"]).lower()[:80]
    return "unknown"
