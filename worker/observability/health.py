"""/metrics, /healthz and /readyz on METRICS_PORT.

``/healthz`` answers while the event loop turns. ``/readyz`` is 200 when every pipeline has
joined its consumer group and received an assignment, the broker answered a metadata request
recently, and the worker is not draining; otherwise 503 with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], tuple[bool, str]]


def create_app(ready: ReadyCheck) -> web.Application:
    started = time.monotonic()

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.monotonic() - started)})

    async def readyz(_request: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "reason": reason}, status=200 if ok else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(ready: ReadyCheck, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(create_app(ready), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
