"""SessionM response → Accepted or the DeliveryError it means (destination-apis.md §3.1, §6.4).

SessionM answers HTTP 200 (sometimes 401/404) with ``{"status":"error","errors":{"code":...}}``.
Codes are compared case-insensitively (the docs list them upper case, examples use lower case):

* about this user or this call, permanent → :class:`Rejected` (dead-lettered for SessionM;
  the sender counts an answer as the destination being up, so unknown users in a row never
  open the circuit breaker): ``user_not_found``, ``requires_registered_user``, ``not_found``,
  ``missing_data``, ``validation``, ``argument_error``;
* about our credentials → :class:`AuthFailed` (deliveries pause and probe, like refused OAuth
  credentials, instead of dead-lettering): ``invalid_api_key``, ``access_denied``;
* anything else (``not_available``, ``internal_server_error``, an unreadable body) → retried.

Messages never include the URL, which carries the API key.
"""

from __future__ import annotations

import time
from typing import Final

import orjson

from worker.deliver.backoff import raise_for_status
from worker.destinations.base import Accepted, Request, Response
from worker.errors import AuthFailed, Rejected, Retryable

PERMANENT_CODES: Final = frozenset(
    {
        "user_not_found",
        "requires_registered_user",
        "not_found",
        "missing_data",
        "validation",
        "argument_error",
    }
)
CREDENTIAL_CODES: Final = frozenset({"invalid_api_key", "access_denied"})


def check(response: Response, request: Request, now: float | None = None) -> Accepted:
    body = _json(response.body)
    code = _error_code(body)
    message = f"sessionm answered HTTP {response.status} with status error, code {code}"
    if code in CREDENTIAL_CODES:
        raise AuthFailed(message, status=response.status)
    if code in PERMANENT_CODES and response.status < 500:
        raise Rejected(message, status=response.status)
    raise_for_status(
        "sessionm", response.status, response.headers, response.body, now or time.time()
    )
    if isinstance(body, dict) and body.get("status") == "ok":
        return Accepted()
    raise Retryable(message, status=response.status)


def _json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _error_code(body: object) -> str:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict) and errors.get("code"):
            return str(errors["code"]).lower()[:80]
    return "unknown"
