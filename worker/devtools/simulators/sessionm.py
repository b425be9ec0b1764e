"""A SessionM Core simulator: customer tags (destination-apis.md §5.3, §6.1, §6.4).

Both user paths: ``/priv/v1/apps/{api_key}/users/{user_id}/tags`` (SessionM's own id, known ids
in ``known_users``) and ``/priv/v1/apps/{api_key}/external/users/{external_id}/tags`` (the
brand's id, known ids in ``known_external_ids``); None means every id exists. Each recording
says which path it came through. Basic auth over ``api_key:api_secret`` with the key also in
the path: an unknown path key answers 401 ``invalid_api_key``, a wrong secret or a header for
another key 401 ``access_denied``. Tags need a non-empty ``tags`` list of strings and an
optional positive integer ``ttl``; failures answer HTTP 200 with
``{"status":"error","errors":{"code":...}}``. Unknown users: ``user_not_found`` under 200
(default) or HTTP 404. ``user_errors`` scripts any documented code for one id
(``requires_registered_user``, ``not_found``, ``not_available``...), and ``uppercase_codes``
answers codes the way the docs' table spells them.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from .common import (
    SimulatorState,
    Window,
    add_control_routes,
    apply_faults,
    json_response,
    read_json,
)


@dataclass
class SessionMState(SimulatorState):
    name: str = "sessionm"
    credentials: dict[str, str] = field(
        default_factory=lambda: {"sim-sessionm-key": "sim-sessionm-secret"}
    )
    known_users: set[str] | None = None  # None: every SessionM user id exists
    known_external_ids: set[str] | None = None  # None: every external id exists
    user_errors: dict[str, str] = field(default_factory=dict)  # id → error code to answer
    uppercase_codes: bool = False
    unknown_user_mode: Literal["status_200", "http_404"] = "status_200"
    limit_per_second: int = 0  # SessionM publishes none; optional
    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    window: Window = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.window = Window(self.limit_per_second, 1)

    def set_credentials(self, changes: dict[str, Any]) -> None:
        if "credentials" in changes:
            self.credentials = dict(changes["credentials"])
        if "known_users" in changes:
            users = changes["known_users"]
            self.known_users = None if users is None else set(users)


def create_app(state: SessionMState | None = None) -> web.Application:
    state = state or SessionMState()
    app = web.Application()

    def _error(code: str, status: int = 200) -> web.Response:
        code = code.upper() if state.uppercase_codes else code
        return json_response({"status": "error", "errors": {"code": code}}, status)

    def throttled() -> web.Response:
        return json_response(
            {"status": "error", "errors": {"code": "rate_limited"}}, 429, {"Retry-After": "1"}
        )

    def failed(status: int) -> web.Response:
        return _error("internal_server_error", status)

    async def tags(request: web.Request) -> web.StreamResponse:
        fault = await apply_faults(state, request, throttled, failed)
        if fault is not None:
            return fault
        key = request.match_info["api_key"]
        if key not in state.credentials:
            state.log(request, 401, 0, 0)
            return _error("invalid_api_key", 401)
        if not _authorized(state, request, key):
            state.log(request, 401, 0, 0)
            return _error("access_denied", 401)
        document, body = await read_json(request)
        if state.limit_per_second and not state.window.take():
            state.log(request, 429, 0, len(body))
            return throttled()
        user = request.match_info["user_id"]
        path = "external" if "/external/" in request.path else "users"
        known = state.known_external_ids if path == "external" else state.known_users
        if user in state.user_errors:
            state.log(request, 200, 0, len(body))
            return _error(state.user_errors[user])
        if known is not None and user not in known:
            state.log(request, 404 if state.unknown_user_mode == "http_404" else 200, 0, len(body))
            return _error("user_not_found", 404 if state.unknown_user_mode == "http_404" else 200)
        tag_list = document.get("tags") if isinstance(document, dict) else None
        if (
            not isinstance(tag_list, list)
            or not tag_list
            or not all(isinstance(t, str) and t for t in tag_list)
        ):
            state.log(request, 200, 0, len(body))
            return _error("missing_data")
        ttl = document.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            state.log(request, 200, 0, len(body))
            return _error("validation")
        for tag in tag_list:
            if ttl is None:
                state.counters[(user, tag)] += 1
        state.record({"user_id": user, "path": path, "tags": tag_list, "ttl": ttl})
        state.log(request, 200, 1, len(body))
        return json_response({"status": "ok"})

    app.router.add_post("/priv/v1/apps/{api_key}/users/{user_id}/tags", tags)
    app.router.add_post("/priv/v1/apps/{api_key}/external/users/{user_id}/tags", tags)
    add_control_routes(app, state)
    return app


def _authorized(state: SessionMState, request: web.Request, key: str) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return user == key and state.credentials.get(user) == secret
