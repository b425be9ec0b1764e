"""A MoEngage Data API simulator (destination-apis.md §5.2).

``/v1/event/{id}``, ``/v1/customer/{id}``, ``/v1/transition/{id}``: Basic auth with the
documented 401/409 messages, Content-Type (400/415), empty and malformed bodies (400), size
(413 over 128 KB, over 100 KB for bulk), element rules (type, customer_id and its blocked list,
actions, array-field conflicts), per-minute unit limits with lowercase ``x-ratelimit-*``
headers. Bulk bad elements: ``reject_400`` (default) or ``drop_200``.

Section 6.3: attribute values that are objects are refused (400) unless the workspace has the
Object data type (``object_attributes``); datetimes not in MoEngage's forms
(``YYYY-MM-DDTHH:mm:ssZ``, ``YYYY-MM-DD``) are accepted as plain strings, as MoEngage does, and
recorded in ``string_datetimes``; a future ``current_time`` is refused (``future_events``).
``MOE-APPKEY`` is accepted and counted (``appkey_requests``), never required. Nothing here
imports the worker: the rules are written from the reference, not shared with the code under
test.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

_PLATFORMS = {"ANDROID", "iOS", "web", "TV", "unknown"}
# §2.1 (MoEngage data-overview): customer_id values MoEngage refuses
_BLOCKED_IDS = frozenset(
    {
        "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id", "",
        "na", "n/a", "''", "dummy_seller_code", "user_id", "id", "customer_id", "uid", "userid",
        "none", "-2", "-1", "2",
    }
)  # fmt: skip
_LOOKS_LIKE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_MOENGAGE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")
_ARRAY_OPERATIONS = ("addValueToArrayField", "removeValueFromArrayField")


@dataclass
class MoEngageState(SimulatorState):
    name: str = "moengage"
    workspaces: dict[str, str] = field(
        default_factory=lambda: {"sim-workspace": "sim-moengage-key"}
    )
    bulk_mode: Literal["reject_400", "drop_200"] = "reject_400"
    reset_epoch: bool = False
    customer_limit: int = 60_000  # bulk: users and events per minute
    event_limit: int = 60_000
    object_attributes: bool = False  # the workspace's Object data type (§6.3)
    future_events: Literal["reject_400", "accept"] = "reject_400"
    # (customer_id, attribute, value) of datetimes MoEngage would store as plain strings
    string_datetimes: list[tuple[str, str, str]] = field(default_factory=list)
    appkey_requests: int = 0
    windows: dict[str, Window] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.windows = {
            "customer": Window(self.customer_limit, 60),
            "event": Window(self.event_limit, 60),
        }

    def set_credentials(self, changes: dict[str, Any]) -> None:
        if "workspaces" in changes:
            self.workspaces = dict(changes["workspaces"])

    def actions(self) -> list[dict[str, Any]]:
        return [
            {"customer_id": r["customer_id"], **r["action"]}
            for r in self.received
            if r["type"] == "event"
        ]

    def customers(self) -> list[dict[str, Any]]:
        return [r for r in self.received if r["type"] == "customer"]


def _fail(status: int, type_: str, message: str, attribute: str | None = None) -> web.Response:
    error: dict[str, Any] = {"type": type_, "message": message, "request_id": secrets.token_hex(4)}
    if attribute:
        error["attribute"] = attribute
    return json_response({"status": "fail", "error": error}, status)


def create_app(state: MoEngageState | None = None) -> web.Application:
    state = state or MoEngageState()
    app = web.Application(client_max_size=8 * 1024 * 1024)

    def rate_headers() -> dict[str, str]:
        if not state.rate_limits:
            return {}
        return state.windows["event"].headers(epoch=state.reset_epoch, lowercase=True)

    def throttled() -> web.Response:
        response = _fail(
            429,
            "Rate Limits Exceeded",
            "Rate limits for customers exceeded. Please Try After Some Time",
        )
        response.headers.update(
            state.windows["event"].headers(epoch=state.reset_epoch, lowercase=True)
        )
        return response

    def failed(status: int) -> web.Response:
        return _fail(status, "Server Error", "retry every 2 seconds for a maximum of 5 times")

    async def handle(request: web.Request, kind: str) -> web.StreamResponse:
        fault = await apply_faults(state, request, throttled, failed)
        if fault is not None:
            return fault
        problem = _auth_problem(state, request)
        if problem is not None:
            state.log(request, problem.status, 0, 0)
            return problem
        if request.headers.get("MOE-APPKEY"):
            state.appkey_requests += 1
        if "Content-Type" not in request.headers:
            state.log(request, 400, 0, 0)
            return _fail(400, "Missing header value", "The Content-Type Header is required")
        if request.content_type != "application/json":
            state.log(request, 415, 0, 0)
            return _fail(415, "Unsupported Media Type", "Unsupported Media Type")
        document, body = await read_json(request)
        limit = 100 * 1024 if kind == "transition" else 128 * 1024
        if len(body) > limit:
            state.log(request, 413, 0, len(body))
            return _fail(413, "PayloadTooLarge", f"Payload size exceeds {limit // 1024} KB")
        if not body:
            state.log(request, 400, 0, 0)
            return _fail(400, "Empty request body", "A valid JSON document is required")
        if document is ... or not isinstance(document, dict):
            state.log(request, 400, 0, len(body))
            return _fail(
                400,
                "Malformed JSON",
                "Could not decode the request body. The JSON was "
                "incorrect or not encoded as UTF-8.",
            )
        if kind == "transition":
            if document.get("type") != "transition":
                return _bad(
                    state, request, body, "AttributeError", "type should be transition", "type"
                )
            elements = document.get("elements")
            if not isinstance(elements, list) or not elements:
                return _bad(
                    state,
                    request,
                    body,
                    "MissingAttributeError",
                    "'elements cannot be empty array",
                    "elements",
                )
        else:
            elements = [document]
        good: list[dict[str, Any]] = []
        for element in elements:
            error = _element_problem(state, element, kind if kind != "transition" else None)
            if error is not None:
                if kind == "transition" and state.bulk_mode == "drop_200":
                    continue
                return _bad(state, request, body, *error)
            good.append(element)
        customers = sum(1 for e in good if e["type"] == "customer")
        events = sum(len(e["actions"]) for e in good if e["type"] == "event")
        if state.rate_limits and not (
            state.windows["customer"].take(customers) and state.windows["event"].take(events)
        ):
            state.log(request, 429, len(elements), len(body))
            return throttled()
        for element in good:
            _note_string_datetimes(state, element)
            if element["type"] == "event":
                for action in element["actions"]:
                    state.record(
                        {"type": "event", "customer_id": element["customer_id"], "action": action}
                    )
            else:
                state.record(
                    {
                        "type": element["type"],
                        "customer_id": element["customer_id"],
                        "attributes": element.get("attributes", {}),
                    }
                )
        state.log(request, 200, len(elements), len(body))
        return json_response(
            {
                "status": "success",
                "message": "Your request has been accepted and will be processed soon.",
                "request_id": secrets.token_hex(4),
            },
            200,
            rate_headers(),
        )

    async def event(request: web.Request) -> web.StreamResponse:
        return await handle(request, "event")

    async def customer(request: web.Request) -> web.StreamResponse:
        return await handle(request, "customer")

    async def transition(request: web.Request) -> web.StreamResponse:
        return await handle(request, "transition")

    app.router.add_post("/v1/event/{workspace}", event)
    app.router.add_post("/v1/customer/{workspace}", customer)
    app.router.add_post("/v1/transition/{workspace}", transition)
    add_control_routes(app, state)
    return app


def _auth_problem(state: MoEngageState, request: web.Request) -> web.Response | None:
    header = request.headers.get("Authorization")
    if not header:
        return _fail(401, "Authentication required", "Authentication Header Required")
    try:
        if not header.startswith("Basic "):
            raise ValueError
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return _fail(401, "Authentication required", "Invalid identity information found")
    if user not in state.workspaces:
        return _fail(401, "Authentication required", "Invalid APP_ID used in Authentication Header")
    if state.workspaces[user] != password:
        return _fail(
            401,
            "Authentication required",
            "App Secret key mismatch. Please login to the dashboard to verify key",
        )
    if request.match_info["workspace"] != user:
        return _fail(
            409, "Authentication Mismatch", "App key mismatch in params and authentication"
        )
    return None


def _element_problem(
    state: MoEngageState, element: Any, expected_type: str | None
) -> tuple[str, str, str] | None:
    if not isinstance(element, dict):
        return ("Malformed JSON", "element is not an object", "elements")
    kind = element.get("type")
    if expected_type is not None and kind != expected_type:
        return ("AttributeError", f"type should be {expected_type}", "type")
    if kind not in ("customer", "event", "device"):
        return ("AttributeError", "'type in elements should be customer/event/device", "type")
    customer_id = element.get("customer_id")
    if customer_id is None:
        return ("MissingAttributeError", "customer_id is not found in the payload", "customer_id")
    if not isinstance(customer_id, str) or not customer_id.strip():
        return (
            "MissingAttributeError",
            "customer_id can not be empty Unicode String",
            "customer_id",
        )
    if customer_id.strip().lower() in _BLOCKED_IDS or len(customer_id.strip()) < 2:
        return ("InvalidParams", "customer_id is blocked", "customer_id")
    if kind == "event":
        problem = _actions_problem(state, element.get("actions"))
        if problem is not None:
            return problem
    if kind == "customer":
        problem = _customer_problem(state, element.get("attributes", {}))
        if problem is not None:
            return problem
    return None


def _actions_problem(state: MoEngageState, actions: Any) -> tuple[str, str, str] | None:
    if not isinstance(actions, list) or not actions:
        return ("MissingAttributeError", "actions can not be empty Array", "actions")
    for action in actions:
        if (
            not isinstance(action, dict)
            or not isinstance(action.get("action"), str)
            or not action["action"]
        ):
            return ("MissingAttributeError", "action is not found in the payload", "action")
        if "platform" in action and action["platform"] not in _PLATFORMS:
            return ("AttributeError", "platform is invalid", "platform")
        if state.future_events == "reject_400" and _is_future(action.get("current_time")):
            return ("InvalidParams", "future dated events are not accepted", "current_time")
        problem = _object_problem(state, action.get("attributes", {}))
        if problem is not None:
            return problem
    return None


def _customer_problem(state: MoEngageState, attributes: Any) -> tuple[str, str, str] | None:
    if not isinstance(attributes, dict):
        return ("MissingAttributeError", "attributes is expected to be object", "attributes")
    added = attributes.get("addValueToArrayField") or {}
    removed = attributes.get("removeValueFromArrayField") or {}
    if isinstance(added, dict) and isinstance(removed, dict) and set(added) & set(removed):
        return ("ArrayFieldError", "the same attribute cannot be added and removed", "attributes")
    plain = {k: v for k, v in attributes.items() if k not in _ARRAY_OPERATIONS}
    return _object_problem(state, plain)


def _object_problem(state: MoEngageState, attributes: Any) -> tuple[str, str, str] | None:
    """Object values (also inside arrays) need the workspace's Object data type (§6.3)."""
    if not isinstance(attributes, dict) or state.object_attributes:
        return None
    for name, value in attributes.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, dict) for v in values):
            return (
                "MissingAttributeError",
                f"{name} is expected to be a string, number, boolean, datetime or array "
                "(the Object data type is not enabled for this workspace)",
                str(name),
            )
    return None


def _is_future(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value > time.time() + 5
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp() > time.time() + 5


def _note_string_datetimes(state: MoEngageState, element: dict[str, Any]) -> None:
    """Record datetimes MoEngage would store as strings (offsets, fractions, no Z)."""
    customer = str(element.get("customer_id"))
    sources: list[tuple[str, Any]] = []
    if element.get("type") == "event":
        for action in element.get("actions", []):
            sources.append(("current_time", action.get("current_time")))
            sources.extend((str(k), v) for k, v in (action.get("attributes") or {}).items())
    else:
        sources.extend((str(k), v) for k, v in (element.get("attributes") or {}).items())
    while sources:
        name, value = sources.pop()
        if isinstance(value, dict):
            sources.extend((f"{name}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            sources.extend((name, v) for v in value)
        elif (
            isinstance(value, str)
            and _LOOKS_LIKE_DATETIME.match(value)
            and not _MOENGAGE_DATETIME.match(value)
        ):
            state.string_datetimes.append((customer, name, value))


def _bad(
    state: SimulatorState,
    request: web.Request,
    body: bytes,
    type_: str,
    message: str,
    attribute: str,
) -> web.Response:
    state.log(request, 400, 0, len(body))
    return _fail(400, type_, message, attribute)
