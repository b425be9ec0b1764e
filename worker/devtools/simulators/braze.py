"""A Braze REST API simulator (destination-apis.md §5.1).

``/users/track``: Bearer auth (401 ``Invalid API Key``), JSON body (400), 4 MB (413), object
cap (75 combined by default, or 75 per array), identifier per object, event ``name`` and ISO
``time``, property rules (names ≤ 255 chars not starting with ``$``, strings ≤ 255, nested
≤ 50 KB), partial failures as 2xx with ``errors[]`` naming ``input_array`` and ``index``, 400
when every object fails. ``/campaigns/trigger/send`` and ``/canvas/trigger/send``: ids (optional
registry), ≤ 50 recipients, one identifier each, broadcast rules. Rate limits per endpoint
family with ``X-RateLimit-*`` headers; 429 in either documented header mode.

Section 6.2: ``app_id`` inside an attributes object (a /users/track attributes object or a
recipient's ``attributes``) is accepted, as Braze does, but counted in ``defects``: it creates a
custom attribute and costs a data point. ``existing_users`` (None: everyone exists) models
profiles Braze does not have yet: a recipient left at ``send_to_existing_only`` true who is not
in it is skipped silently (``skipped_recipients``), one with ``send_to_existing_only: false``
and ``attributes`` is created first and messaged.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from aiohttp import web

from .common import (
    SimulatorState,
    Window,
    add_control_routes,
    apply_faults,
    json_response,
    read_json,
)

MAX_BODY = 4 * 1024 * 1024
_IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
_BRAZE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}:\d{3}[+-]\d{4}$")


@dataclass
class BrazeState(SimulatorState):
    name: str = "braze"
    api_keys: set[str] = field(default_factory=lambda: {"sim-braze-key"})
    success_status: int = 201
    cap_mode: Literal["combined", "per_array"] = "combined"
    cap: int = 75
    track_limit: int = 3000  # per 3 s
    messaging_limit: int = 250_000  # per hour, non-broadcast sends
    broadcast_limit: int = 250  # per minute
    throttle_mode: Literal["headers", "retry_after"] = "headers"
    reset_epoch: bool = True
    maintenance: bool = False
    # external ids Braze refuses as "dummy users" (post_user_track.md): non-fatal per object
    blocked_external_ids: set[str] = field(default_factory=set)
    campaign_ids: set[str] | None = None  # None: any id is known
    canvas_ids: set[str] | None = None
    existing_users: set[str] | None = None  # None: every external id has a profile
    skipped_recipients: list[str] = field(default_factory=list)
    defects: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, Window] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.windows = {
            "track": Window(self.track_limit, 3),
            "messaging": Window(self.messaging_limit, 3600),
            "broadcast": Window(self.broadcast_limit, 60),
        }

    def set_credentials(self, changes: dict[str, Any]) -> None:
        if "api_keys" in changes:
            self.api_keys = set(changes["api_keys"])

    def events(self) -> list[dict[str, Any]]:
        return [r["object"] for r in self.received if r["array"] == "events"]

    def attributes(self) -> list[dict[str, Any]]:
        return [r["object"] for r in self.received if r["array"] == "attributes"]

    def sends(self) -> list[dict[str, Any]]:
        return [r for r in self.received if r["array"] in ("recipients", "broadcast")]


def create_app(state: BrazeState | None = None) -> web.Application:
    state = state or BrazeState()
    app = web.Application(client_max_size=64 * 1024 * 1024)

    def rate_headers(family: str) -> dict[str, str]:
        if not state.rate_limits:
            return {}
        return state.windows[family].headers(epoch=state.reset_epoch)

    def throttled(family: str = "track") -> web.Response:
        if state.throttle_mode == "retry_after":
            headers = {"X-Ratelimit-Retry-After": "1", "Retry-After": "1"}
        else:
            headers = state.windows[family].headers(epoch=state.reset_epoch)
        return json_response({"message": "Rate Limited"}, 429, headers)

    def failed(status: int) -> web.Response:
        return json_response({"message": "Internal Server Error"}, status)

    async def guard(
        request: web.Request, family_of: Callable[[Any], str]
    ) -> tuple[web.StreamResponse | None, Any, bytes]:
        document, body = await read_json(request)
        family = family_of(document)
        fault = await apply_faults(state, request, lambda: throttled(family), failed)
        if fault is not None:
            return fault, None, b""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in state.api_keys:
            state.log(request, 401, 0, 0)
            return json_response({"message": "Invalid API Key"}, 401), None, b""
        if len(body) > MAX_BODY:
            state.log(request, 413, 0, len(body))
            return json_response({"message": "Payload Too Large"}, 413), None, body
        if document is ... or not isinstance(document, dict):
            state.log(request, 400, 0, len(body))
            return json_response({"message": "Bad Request"}, 400), None, body
        if state.rate_limits and not state.windows[family].take():
            response = throttled(family)
            state.log(request, 429, 0, len(body))
            return response, None, body
        if state.maintenance:
            state.log(request, 202, 0, len(body))
            return json_response({"message": "queued"}, 202), None, body
        return None, document, body

    async def users_track(request: web.Request) -> web.StreamResponse:
        early, document, body = await guard(request, lambda _document: "track")
        if early is not None:
            return early
        arrays = {k: document.get(k) or [] for k in ("attributes", "events", "purchases")}
        if any(not isinstance(v, list) for v in arrays.values()) or not any(arrays.values()):
            state.log(request, 400, 0, len(body))
            return json_response(
                {
                    "message": "Valid data must be provided in the 'attributes', "
                    "'events', or 'purchases' fields."
                },
                400,
            )
        sizes = [len(v) for v in arrays.values()]
        if (sum(sizes) if state.cap_mode == "combined" else max(sizes)) > state.cap:
            state.log(request, 400, 0, len(body))
            return json_response({"message": "Max Input Length Exceeded", "errors": []}, 400)
        errors: list[dict[str, Any]] = []
        accepted: list[tuple[str, dict[str, Any]]] = []
        for array, objects in arrays.items():
            for index, obj in enumerate(objects):
                problem = _object_problem(array, obj)
                if not problem and obj.get("external_id") in state.blocked_external_ids:
                    problem = "provided external_id is blacklisted and disallowed"
                if problem:
                    errors.append({"type": problem, "input_array": array, "index": index})
                else:
                    accepted.append((array, obj))
        total = sum(sizes)
        if not accepted:
            state.log(request, 400, total, len(body))
            return json_response(
                {
                    "message": "Valid data must be provided in the 'attributes', "
                    "'events', or 'purchases' fields.",
                    "errors": errors,
                },
                400,
            )
        for array, obj in accepted:
            if array == "attributes" and "app_id" in obj:
                state.defects.append(
                    {"defect": "app_id_in_attributes", "external_id": obj.get("external_id")}
                )
            state.record({"array": array, "object": obj})
        reply: dict[str, Any] = {"message": "success"}
        for array, objects in arrays.items():
            if objects:
                reply[f"{array}_processed"] = sum(1 for a, _ in accepted if a == array)
        if errors:
            reply["errors"] = errors
        state.log(request, state.success_status, total, len(body))
        return json_response(reply, state.success_status, rate_headers("track"))

    async def trigger(request: web.Request, kind: str) -> web.StreamResponse:
        early, document, body = await guard(request, _family)
        if early is not None:
            return early
        id_key = f"{kind}_id"
        properties_key = "trigger_properties" if kind == "campaign" else "canvas_entry_properties"
        registry = state.campaign_ids if kind == "campaign" else state.canvas_ids
        target = document.get(id_key)
        if not isinstance(target, str) or not target:
            return _bad(state, request, body, f"{id_key} is required")
        if registry is not None and target not in registry:
            return _bad(state, request, body, f"Invalid {kind.capitalize()} ID")
        recipients = document.get("recipients")
        broadcast = document.get("broadcast", False)
        properties = document.get(properties_key, {})
        if properties == "":
            properties = {}
        if not isinstance(properties, dict):
            return _bad(state, request, body, f"{properties_key} must be an object")
        if kind == "canvas" and len(orjson.dumps(properties)) > 50 * 1024:
            return _bad(state, request, body, "canvas_entry_properties over 50 KB")
        if broadcast is True and recipients:
            return _bad(state, request, body, "broadcast cannot be used with recipients")
        if not recipients and broadcast is not True and not document.get("audience"):
            return _bad(state, request, body, "No Recipients")
        recipients = recipients or []
        if not isinstance(recipients, list) or len(recipients) > 50:
            return _bad(
                state,
                request,
                body,
                "The max number of external_ids and aliases per request was exceeded",
            )
        for recipient in recipients:
            if not isinstance(recipient, dict) or (
                ("external_user_id" in recipient) == ("user_alias" in recipient)
            ):
                return _bad(
                    state,
                    request,
                    body,
                    "each recipient needs exactly one of external_user_id or user_alias",
                )
            own = recipient.get(properties_key, {})
            if not isinstance(own, dict):
                return _bad(state, request, body, f"{properties_key} must be an object")
            if recipient.get("send_to_existing_only") is False and "attributes" not in recipient:
                return _bad(
                    state, request, body, "attributes required with send_to_existing_only false"
                )
        for recipient in recipients:
            user = recipient.get("external_user_id")
            if recipient.get("send_to_existing_only") is False:
                if "app_id" in (recipient.get("attributes") or {}):
                    state.defects.append({"defect": "app_id_in_attributes", "external_id": user})
                if state.existing_users is not None and isinstance(user, str):
                    state.existing_users.add(user)
            elif state.existing_users is not None and user not in state.existing_users:
                state.skipped_recipients.append(str(user))  # Braze skips them silently
                continue
            merged = {**properties, **recipient.get(properties_key, {})}
            state.record(
                {
                    "array": "recipients",
                    "kind": kind,
                    "id": target,
                    "recipient": recipient,
                    "properties": merged,
                }
            )
        if broadcast is True:
            state.record(
                {"array": "broadcast", "kind": kind, "id": target, "properties": properties}
            )
        state.log(request, state.success_status, max(1, len(recipients)), len(body))
        return json_response(
            {"dispatch_id": secrets.token_hex(8), "message": "success"},
            state.success_status,
            rate_headers(_family(document)),
        )

    async def campaigns(request: web.Request) -> web.StreamResponse:
        return await trigger(request, "campaign")

    async def canvases(request: web.Request) -> web.StreamResponse:
        return await trigger(request, "canvas")

    app.router.add_post("/users/track", users_track)
    app.router.add_post("/campaigns/trigger/send", campaigns)
    app.router.add_post("/canvas/trigger/send", canvases)
    add_control_routes(app, state)
    return app


def _family(document: Any) -> str:
    broadcast = isinstance(document, dict) and document.get("broadcast") is True
    return "broadcast" if broadcast else "messaging"


def _bad(state: SimulatorState, request: web.Request, body: bytes, message: str) -> web.Response:
    state.log(request, 400, 0, len(body))
    return json_response({"message": message}, 400)


def _object_problem(array: str, obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "object expected"
    if not any(obj.get(k) for k in _IDENTIFIERS):
        return "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
    if array == "events":
        if not isinstance(obj.get("name"), str) or not obj["name"]:
            return "'name' is required"
        if not _is_time(obj.get("time")):
            return "'time' is not a valid time"
    if array == "purchases":
        if not isinstance(obj.get("product_id"), str) or len(obj["product_id"]) > 255:
            return "'product_id' is not valid"
        if not (isinstance(obj.get("currency"), str) and len(obj["currency"]) == 3):
            return "'currency' is not valid"
        if not isinstance(obj.get("price"), int | float):
            return "'price' is not valid"
        if not _is_time(obj.get("time")):
            return "'time' is not a valid time"
        quantity = obj.get("quantity", 1)
        if not isinstance(quantity, int) or not 1 <= quantity <= 100:
            return "'quantity' is not valid"
    if array in ("events", "purchases") and "properties" in obj:
        return _properties_problem(obj["properties"])
    if array == "attributes":
        for key, value in obj.items():
            if isinstance(value, str) and len(value) > 255 and key not in _IDENTIFIERS:
                return f"'{key}' is too long"
    return None


def _properties_problem(properties: Any) -> str | None:
    if not isinstance(properties, dict):
        return "'properties' must be an object"
    nested = False
    stack = [properties]
    while stack:
        current = stack.pop()
        for key, value in current.items():
            if not isinstance(key, str) or not key or len(key) > 255 or key.startswith("$"):
                return "property names must be 1..255 characters and not start with $"
            if isinstance(value, str) and len(value) > 255:
                return "property string values must be at most 255 characters"
            if isinstance(value, dict):
                nested = True
                stack.append(value)
            elif isinstance(value, list):
                nested = True
    if nested and len(orjson.dumps(properties)) > 50 * 1024:
        return "properties with arrays or objects must be at most 50 KB"
    return None


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if _BRAZE_TIME.match(value):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
