"""Lean Braze and MoEngage simulators for `loyalty-relay bench`: parse, count, answer.

The strict simulators check every documented rule and keep every accepted item; on a small
machine the CPU that takes is CPU the measured worker does not get. These parse each body
(orjson), count what the strict simulator would accept (objects, recipients, actions, customer
elements), per member too, and answer a success with the status and body shape of the real API.
No auth, caps, property rules, rate limits or faults: only the endpoints the worker calls, for a
worker already tested against the strict ones. A body that does not parse, or has the wrong
shape, gets the API's 400.

Control routes: ``GET /_sim/stats`` (the strict simulators' figures), ``POST /_sim/reset`` and
``GET /_sim/latencies`` (``{"latencies_ms": [...]}``: acceptance time minus the ``time`` of each
Braze custom event, or the ``issued_date`` of a trigger send's properties, worked out on request
so the measured run pays only for keeping the strings).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from aiohttp import web

BRAZE_SUCCESS: Final = 201
_TRACK_ARRAYS: Final = ("attributes", "events", "purchases")
_TRIGGER_PROPERTIES: Final = {
    "campaign": "trigger_properties",
    "canvas": "canvas_entry_properties",
}
_MOENGAGE_ACCEPTED: Final = {
    "status": "success",
    "message": "Your request has been accepted and will be processed soon.",
}


@dataclass
class LeanState:
    """Counts only: accepted items in total and per member, requests, statuses, bytes."""

    name: str
    received: int = 0  # accepted items, counted as the strict simulator records them
    requests: int = 0
    accepted_requests: int = 0
    accepted_request_items: int = 0  # what the strict log counts per request (objects, elements)
    accepted_bytes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_member: Counter[str] = field(default_factory=Counter)
    # (acceptance time, occurred-at strings of the request's items) for latency figures
    stamps: list[tuple[float, list[str]]] = field(default_factory=list)

    def accept(
        self, status: int, members: list[str], request_items: int, size: int, occurred: list[str]
    ) -> None:
        self.requests += 1
        self.accepted_requests += 1
        self.statuses[status] += 1
        self.received += len(members)
        self.per_member.update(members)
        self.accepted_request_items += request_items
        self.accepted_bytes += size
        if occurred:
            self.stamps.append((time.time(), occurred))

    def refuse(self, status: int) -> None:
        self.requests += 1
        self.statuses[status] += 1

    def reset(self) -> None:
        self.received = self.requests = self.accepted_requests = 0
        self.accepted_request_items = self.accepted_bytes = 0
        self.statuses.clear()
        self.per_member.clear()
        self.stamps.clear()

    def stats(self) -> dict[str, Any]:
        accepted = self.accepted_requests
        return {
            "name": self.name,
            "received": self.received,
            "requests": self.requests,
            "accepted_requests": accepted,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "items_per_accepted_request": self.accepted_request_items / accepted
            if accepted
            else 0.0,
            "bytes_per_accepted_request": self.accepted_bytes / accepted if accepted else 0.0,
        }

    def latencies_ms(self) -> list[float]:
        values = []
        for accepted_at, occurred in self.stamps:
            for stamp in occurred:
                try:
                    moment = datetime.fromisoformat(stamp)
                except ValueError:
                    continue
                if moment.tzinfo is not None:
                    values.append((accepted_at - moment.timestamp()) * 1000)
        return values


def _json(body: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _document(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _braze_bad(state: LeanState, message: str) -> web.Response:
    state.refuse(400)
    return _json({"message": message}, 400)


def create_braze_app(state: LeanState | None = None) -> web.Application:
    state = state or LeanState("braze")
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def users_track(request: web.Request) -> web.Response:
        body = await request.read()
        document = _document(body)
        if document is None:
            return _braze_bad(state, "Bad Request")
        arrays = {k: document.get(k) or [] for k in _TRACK_ARRAYS}
        if not all(isinstance(v, list) for v in arrays.values()) or not any(arrays.values()):
            return _braze_bad(
                state,
                "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
            )
        members: list[str] = []
        reply: dict[str, Any] = {"message": "success"}
        try:
            for array, objects in arrays.items():
                if objects:
                    members.extend(str(o.get("external_id")) for o in objects)
                    reply[f"{array}_processed"] = len(objects)
            occurred = [o["time"] for o in arrays["events"] if isinstance(o.get("time"), str)]
        except AttributeError:  # an object that is not an object
            return _braze_bad(state, "Bad Request")
        state.accept(BRAZE_SUCCESS, members, len(members), len(body), occurred)
        return _json(reply, BRAZE_SUCCESS)

    async def trigger(request: web.Request, kind: str) -> web.Response:
        body = await request.read()
        document = _document(body)
        if document is None:
            return _braze_bad(state, "Bad Request")
        recipients = document.get("recipients") or []
        if not isinstance(recipients, list):
            return _braze_bad(state, "recipients must be an array")
        properties_key = _TRIGGER_PROPERTIES[kind]
        try:
            shared = (document.get(properties_key) or {}).get("issued_date")
            members = [str(r.get("external_user_id")) for r in recipients]
            issued = [(r.get(properties_key) or {}).get("issued_date", shared) for r in recipients]
        except AttributeError:  # a recipient or properties that are not objects
            return _braze_bad(state, "Bad Request")
        if document.get("broadcast") is True:
            members.append("")  # the strict simulator records a broadcast as one item
        occurred = [stamp for stamp in issued if isinstance(stamp, str)]
        state.accept(BRAZE_SUCCESS, members, max(1, len(recipients)), len(body), occurred)
        return _json({"dispatch_id": secrets.token_hex(8), "message": "success"}, BRAZE_SUCCESS)

    async def campaigns(request: web.Request) -> web.Response:
        return await trigger(request, "campaign")

    async def canvases(request: web.Request) -> web.Response:
        return await trigger(request, "canvas")

    app.router.add_post("/users/track", users_track)
    app.router.add_post("/campaigns/trigger/send", campaigns)
    app.router.add_post("/canvas/trigger/send", canvases)
    _add_control_routes(app, state)
    return app


def _moengage_bad(state: LeanState, type_: str, message: str) -> web.Response:
    state.refuse(400)
    error = {"type": type_, "message": message, "request_id": secrets.token_hex(4)}
    return _json({"status": "fail", "error": error}, 400)


def create_moengage_app(state: LeanState | None = None) -> web.Application:
    state = state or LeanState("moengage")
    app = web.Application(client_max_size=8 * 1024 * 1024)

    async def handle(request: web.Request, kind: str) -> web.Response:
        body = await request.read()
        document = _document(body)
        if document is None:
            return _moengage_bad(state, "Malformed JSON", "Could not decode the request body.")
        elements = document.get("elements") if kind == "transition" else [document]
        if not isinstance(elements, list) or not elements:
            return _moengage_bad(state, "MissingAttributeError", "'elements cannot be empty array")
        members: list[str] = []
        try:
            for element in elements:
                member = str(element.get("customer_id"))
                if element.get("type") == "event":
                    members.extend([member] * len(element.get("actions") or ()))
                else:
                    members.append(member)
        except (AttributeError, TypeError):  # an element or actions of the wrong type
            return _moengage_bad(state, "AttributeError", "elements must be objects")
        state.accept(200, members, len(elements), len(body), [])
        return _json({**_MOENGAGE_ACCEPTED, "request_id": secrets.token_hex(4)}, 200)

    async def event(request: web.Request) -> web.Response:
        return await handle(request, "event")

    async def customer(request: web.Request) -> web.Response:
        return await handle(request, "customer")

    async def transition(request: web.Request) -> web.Response:
        return await handle(request, "transition")

    app.router.add_post("/v1/event/{workspace}", event)
    app.router.add_post("/v1/customer/{workspace}", customer)
    app.router.add_post("/v1/transition/{workspace}", transition)
    _add_control_routes(app, state)
    return app


def _add_control_routes(app: web.Application, state: LeanState) -> None:
    async def stats(_request: web.Request) -> web.Response:
        return _json(state.stats(), 200)

    async def reset(_request: web.Request) -> web.Response:
        state.reset()
        return _json({"reset": True}, 200)

    async def latencies(_request: web.Request) -> web.Response:
        return _json({"latencies_ms": state.latencies_ms()}, 200)

    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/latencies", latencies)


# the destinations bench routes, by registry name: (app factory, state name)
LEAN: Final[Mapping[str, Callable[[LeanState], web.Application]]] = {
    "braze": create_braze_app,
    "moengage": create_moengage_app,
}
