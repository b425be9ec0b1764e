"""The ingest HTTP service: authenticate, limit, map (worker.ingest.mapping), produce, answer.

Answers, in the order they are decided:

* 401 no valid token for the route's scheme (nothing is read or produced);
* 429 the token's request rate is used up (``Retry-After``);
* 413 the body is over ``INGEST_MAX_BODY_BYTES`` or holds over ``INGEST_MAX_ITEMS`` items;
* 400 the body cannot be read (not UTF-8, not JSON, wrong top-level shape); 422 it parsed but
  an item is invalid (each listed with its index and dead-letter reason), unless
  ``?partial=true``, when the valid ones are produced and the invalid ones listed;
* 503 the producer is not connected, or the broker did not acknowledge every record within
  ``INGEST_PRODUCE_TIMEOUT_SECONDS`` (``Retry-After``; the body lists which records were
  acknowledged, and nothing else is reported accepted);
* 202 ``{"accepted": n, "event_ids": [...]}`` once the broker acknowledged every record
  (``acks=all``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from worker.ingest import metrics
from worker.ingest.auth import BASIC, BEARER, RateLimiter, Tokens, retry_after_header
from worker.ingest.config import IngestConfig
from worker.ingest.mapping import (
    BRAZE_ROUTE,
    MOENGAGE_ROUTE,
    NATIVE_ROUTE,
    BodyError,
    Outcome,
    Record,
    Rejection,
    braze_webhook,
    moengage_webhook,
    native_events,
    parse_json,
)
from worker.kafka import ensure_topics, make_producer, start_with_retry
from worker.observability.health import create_app

log = structlog.get_logger("worker.ingest")

_PROBE_SECONDS: Final = 5.0
_READ_CHUNK: Final = 65_536
_NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/ndjson"})

Parse = Callable[[bytes, str, datetime, int], list[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    name: str  # the metrics and log label
    schemes: frozenset[str]
    parse: Parse


def _parse_native(body: bytes, content_type: str, _at: datetime, depth: int) -> list[Outcome]:
    return native_events(body, ndjson=content_type in _NDJSON_TYPES, max_depth=depth)


def _parse_braze(body: bytes, _content_type: str, at: datetime, depth: int) -> list[Outcome]:
    return braze_webhook(parse_json(body), at, depth)


def _parse_moengage(body: bytes, _content_type: str, at: datetime, depth: int) -> list[Outcome]:
    return moengage_webhook(parse_json(body), at, depth)


ROUTES: Final = (
    Route(NATIVE_ROUTE, "events", frozenset({BEARER, BASIC}), _parse_native),
    Route(BRAZE_ROUTE, "kognitiv_braze", frozenset({BEARER}), _parse_braze),
    Route(MOENGAGE_ROUTE, "kognitiv_moengage", frozenset({BASIC}), _parse_moengage),
)


class _TooLarge(Exception):
    pass


class IngestService:
    """The aiohttp application and the Kafka producer behind it."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        settings = config.ingest
        self._tokens = Tokens(t.get_secret_value() for t in settings.tokens)
        self._limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self._producer: Any = None
        self._connected = False
        self._broker_ok = False
        self.draining = False
        # end offset (last acknowledged + 1) per (topic, partition): the demo waits on these
        self.acknowledged: dict[tuple[str, int], int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = create_app(self.ready)
        for route in ROUTES:
            self.app.router.add_post(route.path, self._handler(route))

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self._connected:
            return False, "connecting to the broker"
        if not self._broker_ok:
            return False, "broker unreachable"
        return True, "ok"

    async def start(self) -> None:
        """Listen at once (health answers while the producer connects in the background)."""
        settings = self.config.ingest
        self._producer = make_producer(
            self.config.kafka,
            linger_ms=2,
            request_timeout_ms=max(1000, int(settings.produce_timeout_seconds * 1000)),
        )
        self._tasks.append(asyncio.create_task(self._connect(), name="ingest-connect"))
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=settings.drain_seconds
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else settings.port
        log.info(
            "ingest_listening",
            host=settings.host,
            port=self.port,
            routes=[r.path for r in ROUTES],
            topics=dict(settings.topics),
            tokens=len(settings.tokens),
        )

    async def stop(self) -> None:
        """Stop taking requests, let those in flight finish, flush and close the producer."""
        self.draining = True
        log.info("shutdown_started", drain_seconds=self.config.ingest.drain_seconds)
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            if self._connected:
                await self._producer.stop()  # flushes what is still in its buffers
            else:
                with contextlib.suppress(Exception):  # a start cut short: release what it opened
                    await self._producer.stop()
        log.info("stopped")

    async def _connect(self) -> None:
        kafka = self.config.kafka
        topics = sorted(set(self.config.ingest.topics.values()))
        while True:
            try:
                if kafka.create_topics:
                    await ensure_topics(kafka, topics, kafka.unreachable_exit_seconds)
                await start_with_retry(self._producer, "producer", kafka.unreachable_exit_seconds)
            except KafkaError as exc:
                log.warning("broker_unreachable", error=str(exc), retry_in_s=_PROBE_SECONDS)
                await asyncio.sleep(_PROBE_SECONDS)
                continue
            break
        self._connected = self._broker_ok = True
        log.info("producer_connected", bootstrap_servers=kafka.bootstrap_servers)
        while True:
            await asyncio.sleep(_PROBE_SECONDS)
            try:
                async with asyncio.timeout(_PROBE_SECONDS):
                    await self._producer.client.fetch_all_metadata()
            except (KafkaError, TimeoutError) as exc:
                if self._broker_ok:
                    log.warning("broker_unreachable", error=str(exc) or "timeout")
                self._broker_ok = False
            else:
                self._broker_ok = True

    def _handler(self, route: Route) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            summary: dict[str, Any] = {}
            response = await self._handle(route, request, summary)
            metrics.REQUESTS.labels(route.name, str(response.status)).inc()
            log.info(
                "ingest_request",
                route=route.name,
                status=response.status,
                took_ms=round((time.monotonic() - started) * 1000, 1),
                **summary,
            )
            return response

        return handle

    async def _handle(
        self, route: Route, request: web.Request, summary: dict[str, Any]
    ) -> web.Response:
        settings = self.config.ingest
        token = self._tokens.match(request.headers.get("Authorization"), route.schemes)
        if token is None:
            scheme = "Bearer" if BEARER in route.schemes else "Basic"
            return _json(
                401,
                {"error": "missing or invalid credentials", "reason": "unauthorized"},
                {"WWW-Authenticate": f'{scheme} realm="loyalty-relay"'},
            )
        summary["token_index"] = token
        wait = self._limiter.take(token)
        if wait is not None:
            return _json(
                429,
                {"error": "request rate limit reached for this token", "reason": "rate_limited"},
                {"Retry-After": retry_after_header(wait)},
            )
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except _TooLarge:
            return _json(
                413,
                {
                    "error": f"the body is over {settings.max_body_bytes} bytes",
                    "reason": "too_large",
                },
            )
        summary["bytes"] = len(body)
        try:
            outcomes = route.parse(
                body, request.content_type, datetime.now(UTC), self.config.max_nesting_depth
            )
        except BodyError as exc:
            metrics.ITEMS_REJECTED.labels(route.name, exc.reason).inc()
            summary["reason"] = exc.reason
            return _json(exc.status, {"error": str(exc), "reason": exc.reason})
        summary["items"] = len(outcomes)
        if len(outcomes) > settings.max_items:
            return _json(
                413,
                {
                    "error": f"{len(outcomes)} items, over the {settings.max_items} item limit",
                    "reason": "too_many_items",
                },
            )
        records = [o for o in outcomes if isinstance(o, Record)]
        rejections = [o for o in outcomes if isinstance(o, Rejection)]
        for rejection in rejections:
            metrics.ITEMS_REJECTED.labels(route.name, rejection.reason).inc()
        if rejections:
            summary["rejected"] = dict(Counter(r.reason for r in rejections))
        partial = request.query.get("partial", "").lower() in ("true", "1", "yes")
        if rejections and (not partial or not records):
            return _json(
                422,
                {
                    "error": f"{len(rejections)} of {len(outcomes)} items are invalid; "
                    "nothing was produced",
                    "accepted": 0,
                    "event_ids": [],
                    "rejected": [r.as_dict() for r in rejections],
                },
            )
        if not self._connected:
            summary["reason"] = "broker_unavailable"
            return self._unavailable(route, "the broker is not connected yet", records, [])
        produced, problem = await self._produce(route, records)
        summary["accepted"] = len(produced)
        if problem is not None:
            summary["reason"] = "broker_unavailable"
            return self._unavailable(route, problem, records, produced)
        for record in produced:
            metrics.ITEMS_ACCEPTED.labels(route.name, record.event_type).inc()
        answer: dict[str, Any] = {
            "accepted": len(produced),
            "event_ids": [r.event_id for r in produced],
        }
        if rejections:
            answer["rejected"] = [r.as_dict() for r in rejections]
        return _json(202, answer)

    async def _produce(
        self, route: Route, records: Sequence[Record]
    ) -> tuple[list[Record], str | None]:
        """Send every record and wait for all acknowledgements, up to the deadline.

        Returns the records the broker acknowledged (in request order) and, when not all were,
        what went wrong. Records not acknowledged in time may still land later: a client that
        retries then produces them again with the same event_id (at least once).
        """
        topics = self.config.ingest.topics
        timeout = self.config.ingest.produce_timeout_seconds
        sent: list[tuple[Record, asyncio.Future[Any]]] = []
        problem: str | None = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                for record in records:
                    future = await self._producer.send(
                        topics[record.event_type], record.value, key=record.member_id.encode()
                    )
                    future.add_done_callback(_retrieve)
                    sent.append((record, future))
                await asyncio.wait([future for _, future in sent])
        except TimeoutError:
            problem = f"the broker did not acknowledge every record within {timeout:g} s"
        except KafkaError as exc:
            problem = f"the producer failed: {type(exc).__name__}"
        produced: list[Record] = []
        for record, future in sent:
            if future.done() and not future.cancelled() and future.exception() is None:
                produced.append(record)
                meta = future.result()
                key = (meta.topic, meta.partition)
                self.acknowledged[key] = max(self.acknowledged.get(key, 0), meta.offset + 1)
            elif problem is None:
                error = future.exception() if future.done() and not future.cancelled() else None
                problem = f"the broker refused a record: {type(error).__name__}"
        if problem is None:
            self._broker_ok = True
            metrics.PRODUCE_LATENCY.labels(route.name).observe(time.monotonic() - started)
        else:
            self._broker_ok = False
            log.warning("produce_failed", route=route.name, error=problem)
        return produced, problem

    def _unavailable(
        self, route: Route, problem: str, records: Sequence[Record], produced: Sequence[Record]
    ) -> web.Response:
        done = {r.event_id for r in produced}
        unconfirmed = [r.event_id for r in records if r.event_id not in done]
        metrics.ITEMS_REJECTED.labels(route.name, "broker_unavailable").inc(len(unconfirmed))
        for record in produced:
            metrics.ITEMS_ACCEPTED.labels(route.name, record.event_type).inc()
        return _json(
            503,
            {
                "error": f"{problem}; retry the request",
                "reason": "broker_unavailable",
                "produced_event_ids": [r.event_id for r in produced],
                "unconfirmed_event_ids": unconfirmed,
            },
            {"Retry-After": str(self.config.ingest.retry_after_seconds)},
        )


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a late failure as seen (the request may have been answered already)."""
    if not future.cancelled():
        future.exception()


async def run_ingest(config: IngestConfig, stop: asyncio.Event | None = None) -> int:
    from worker.app import install_signal_handlers

    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    service = IngestService(config)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
    return 0
