"""Shared simulator machinery: fault injection, rate-limit windows, recording, control API.

Every simulator records each ACCEPTED item (never de-duplicated) and logs every request
(method, endpoint, status, item count, body size, time). Faults are switched at runtime from
Python (``state.faults``) or over HTTP on ``/_sim/*``, which needs no auth:

* ``POST /_sim/faults`` JSON ``{"latency_ms": 0, "status": 503, "status_probability": 1.0,
  "status_count": null, "throttle_probability": 0, "throttle_count": null,
  "reset_probability": 0, "reset_count": null}`` (missing keys keep their value;
  ``{"clear": true}`` clears all);
* ``GET /_sim/received`` → ``{"items": [...]}``; ``GET /_sim/stats`` → counts;
  ``POST /_sim/reset`` forgets recordings; ``POST /_sim/credentials`` changes what is accepted.

Injected faults never record anything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    latency_ms: float = 0.0
    status: int = 503
    status_probability: float = 0.0
    status_count: int | None = None  # fail the next N requests (then stop)
    throttle_probability: float = 0.0
    throttle_count: int | None = None
    reset_probability: float = 0.0
    reset_count: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        if changes.get("clear"):
            self.__init__()  # type: ignore[misc]
            return
        for key, value in changes.items():
            if hasattr(self, key):
                setattr(self, key, value)

    def take(self, kind: str, rng: random.Random) -> bool:
        """Whether this request gets the ``kind`` fault (status, throttle, reset)."""
        count = getattr(self, f"{kind}_count")
        if count is not None:
            if count <= 0:
                return False
            setattr(self, f"{kind}_count", count - 1)
            return True
        probability: float = getattr(self, f"{kind}_probability")
        return probability > 0 and rng.random() < probability


class Window:
    """A fixed rate-limit window (units per ``seconds``); ``limit <= 0`` disables it."""

    def __init__(self, limit: int, seconds: float, *, clock_hour: bool = False) -> None:
        self.limit = limit
        self.seconds = seconds
        self.clock_hour = clock_hour
        self.start = self._window_start(time.time())
        self.used = 0

    def _window_start(self, now: float) -> float:
        return now - (now % self.seconds)

    def take(self, units: int = 1) -> bool:
        if self.limit <= 0:
            return True
        now = time.time()
        if now >= self.start + self.seconds:
            self.start = self._window_start(now)
            self.used = 0
        if self.used + units > self.limit:
            return False
        self.used += units
        return True

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def reset_epoch(self) -> int:
        return int(self.start + self.seconds)

    def headers(self, *, epoch: bool, lowercase: bool = False) -> dict[str, str]:
        reset = self.reset_epoch if epoch else max(1, int(self.start + self.seconds - time.time()))
        names = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
        if lowercase:
            names = tuple(n.lower() for n in names)  # type: ignore[assignment]
        return dict(zip(names, (str(self.limit), str(self.remaining), str(reset)), strict=True))


@dataclass
class RequestLog:
    method: str
    endpoint: str
    status: int
    items: int
    body_bytes: int
    at: float


@dataclass
class SimulatorState:
    """What every simulator keeps: faults, recordings, a request log and status counts."""

    name: str = "simulator"
    faults: Faults = field(default_factory=Faults)
    received: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RequestLog] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    rate_limits: bool = True
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def record(self, item: dict[str, Any]) -> None:
        item["_at"] = time.time()
        self.received.append(item)

    def log(self, request: web.Request, status: int, items: int, size: int) -> None:
        self.statuses[status] += 1
        self.requests.append(
            RequestLog(request.method, request.path, status, items, size, time.time())
        )

    def reset(self) -> None:
        self.received.clear()
        self.requests.clear()
        self.statuses.clear()

    def stats(self) -> dict[str, Any]:
        accepted = [r for r in self.requests if 200 <= r.status < 300]
        return {
            "name": self.name,
            "received": len(self.received),
            "requests": len(self.requests),
            "accepted_requests": len(accepted),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "items_per_accepted_request": (
                sum(r.items for r in accepted) / len(accepted) if accepted else 0.0
            ),
            "bytes_per_accepted_request": (
                sum(r.body_bytes for r in accepted) / len(accepted) if accepted else 0.0
            ),
        }

    def set_credentials(self, changes: dict[str, Any]) -> None:  # overridden per simulator
        raise web.HTTPBadRequest(text="this simulator has no credentials to change")


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


async def apply_faults(
    state: SimulatorState,
    request: web.Request,
    throttled: Callable[[], web.Response],
    failed: Callable[[int], web.Response],
) -> web.StreamResponse | None:
    """Latency, then connection reset, status or throttle faults; None when none applies."""
    faults = state.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.take("reset", state.rng):
        transport = request.transport
        if transport is not None:
            transport.abort()
        state.log(request, 0, 0, 0)
        return web.Response(status=500)  # never written: the connection is already gone
    if faults.take("status", state.rng):
        state.log(request, faults.status, 0, 0)
        return failed(faults.status)
    if faults.take("throttle", state.rng):
        response = throttled()
        state.log(request, response.status, 0, 0)
        return response
    return None


def add_control_routes(app: web.Application, state: SimulatorState) -> None:
    async def set_faults(request: web.Request) -> web.Response:
        state.faults.update(await request.json())
        return json_response({"faults": state.faults.__dict__})

    async def received(_request: web.Request) -> web.Response:
        return json_response({"items": state.received})

    async def stats(_request: web.Request) -> web.Response:
        return json_response(state.stats())

    async def reset(_request: web.Request) -> web.Response:
        state.reset()
        return json_response({"reset": True})

    async def credentials(request: web.Request) -> web.Response:
        state.set_credentials(await request.json())
        return json_response({"ok": True})

    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_get("/_sim/received", received)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_post("/_sim/credentials", credentials)


async def read_json(request: web.Request) -> tuple[Any, bytes]:
    """The raw body and its JSON (``...`` as a marker when it does not parse)."""
    body = await request.read()
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError:
        return ..., body
