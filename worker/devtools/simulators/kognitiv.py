"""A Kognitiv Inspire simulator: OAuth token and promotional member groups (§5.4).

``POST /Auth/connect/token`` (form ``grant_type=client_credentials``, ``client_id``,
``client_secret``): 400 ``invalid_client`` on bad credentials, else a bearer token that expires
after ``token_lifetime`` seconds. ``PUT``/``DELETE /api/groups/promotionalMember/{ref}/members/
{member}``: 401 on an expired or unknown token, 404 on an unknown group or member, 200 (or 204)
otherwise. DELETE of a member who is not in the group (an at-least-once duplicate of a remove)
answers 404 ``{"error":"member_not_in_group"}`` by default (``absent_remove_404``; §5.4 and
§6.5 leave the real answer unconfirmed, so a no-op success is a switch away). Tokens can
be revoked mid-run.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import SimulatorState, add_control_routes, apply_faults, json_response


@dataclass
class KognitivState(SimulatorState):
    name: str = "kognitiv"
    clients: dict[str, str] = field(
        default_factory=lambda: {"sim-kognitiv-client": "sim-kognitiv-secret"}
    )
    token_lifetime: float = 3600.0
    success_status: int = 200
    absent_remove_404: bool = True  # DELETE of a non-member: 404, else a no-op success
    known_groups: set[str] | None = None  # None: every group exists
    known_members: set[str] | None = None  # None: every member exists
    tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (epoch)
    members: dict[str, set[str]] = field(default_factory=dict)
    token_requests: int = 0

    def set_credentials(self, changes: dict[str, Any]) -> None:
        if "clients" in changes:
            self.clients = dict(changes["clients"])
        if changes.get("revoke_tokens"):
            self.tokens.clear()
        if "token_lifetime" in changes:
            self.token_lifetime = float(changes["token_lifetime"])
        if "known_members" in changes:
            members = changes["known_members"]
            self.known_members = None if members is None else set(members)

    def memberships(self) -> list[dict[str, Any]]:
        return list(self.received)


def create_app(state: KognitivState | None = None) -> web.Application:
    state = state or KognitivState()
    app = web.Application()

    def throttled() -> web.Response:
        return json_response({"error": "too_many_requests"}, 429, {"Retry-After": "1"})

    def failed(status: int) -> web.Response:
        return json_response({"error": "server_error"}, status)

    async def token(request: web.Request) -> web.StreamResponse:
        fault = await apply_faults(state, request, throttled, failed)
        if fault is not None:
            return fault
        state.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            state.log(request, 400, 0, 0)
            return json_response({"error": "unsupported_grant_type"}, 400)
        client = str(form.get("client_id", ""))
        if state.clients.get(client) != form.get("client_secret"):
            state.log(request, 400, 0, 0)
            return json_response({"error": "invalid_client"}, 400)
        value = secrets.token_urlsafe(24)
        state.tokens[value] = time.time() + state.token_lifetime
        state.log(request, 200, 0, 0)
        return json_response(
            {"access_token": value, "token_type": "Bearer", "expires_in": state.token_lifetime}
        )

    async def membership(request: web.Request) -> web.StreamResponse:
        fault = await apply_faults(state, request, throttled, failed)
        if fault is not None:
            return fault
        header = request.headers.get("Authorization", "")
        expiry = (
            state.tokens.get(header.removeprefix("Bearer "))
            if header.startswith("Bearer ")
            else None
        )
        if expiry is None or expiry <= time.time():
            state.log(request, 401, 0, 0)
            return json_response({"error": "invalid_token"}, 401)
        group = request.match_info["group"]
        member = request.match_info["member"]
        if state.known_groups is not None and group not in state.known_groups:
            state.log(request, 404, 0, 0)
            return json_response({"error": "group_not_found"}, 404)
        if state.known_members is not None and member not in state.known_members:
            state.log(request, 404, 0, 0)
            return json_response({"error": "member_not_found"}, 404)
        current = state.members.setdefault(group, set())
        operation = "add" if request.method == "PUT" else "remove"
        if operation == "remove" and member not in current and state.absent_remove_404:
            state.log(request, 404, 0, 0)
            return json_response({"error": "member_not_in_group"}, 404)
        if operation == "add":
            current.add(member)
        else:
            current.discard(member)
        state.record({"op": operation, "group": group, "member": member})
        state.log(request, state.success_status, 1, 0)
        if state.success_status == 204:
            return web.Response(status=204)
        return json_response({"status": "ok"}, state.success_status)

    app.router.add_post("/Auth/connect/token", token)
    path = "/api/groups/promotionalMember/{group}/members/{member}"
    app.router.add_put(path, membership)
    app.router.add_delete(path, membership)
    add_control_routes(app, state)
    return app
