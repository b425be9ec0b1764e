"""Composition root for ``loyalty-relay run``: clients, pipelines, signals, drain.

Start-up order: topics → dead-letter producer → HTTP session → one pipeline per enabled
destination → health server. Shutdown (SIGTERM/SIGINT) runs in reverse: pipelines stop
fetching, drain in-flight work within ``drain_seconds``, commit and leave their groups; then
the producer flushes and the session closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import aiohttp
import structlog
from aiokafka.errors import KafkaConnectionError, KafkaError

from worker.config import Settings
from worker.deadletter import DeadLetterWriter
from worker.decode import SharedDecoder
from worker.deliver.sender import Sender
from worker.destinations.registry import REGISTRY
from worker.kafka import ensure_topics, make_producer, start_with_retry
from worker.observability.health import start_server
from worker.observability.redact import Redactor
from worker.pipeline import DestinationPipeline

log = structlog.get_logger("worker.app")

_BROKER_PROBE_SECONDS = 5.0


def log_routing_table(settings: Settings) -> None:
    rows = [
        {"topic": topic, "event_type": event_type, "destinations": list(names)}
        for topic, event_type, names in settings.routing_table()
    ]
    log.info(
        "routing_table",
        enabled=list(settings.enabled),
        disabled=[n for n in REGISTRY if n not in settings.enabled],
        rows=rows,
    )


def build_sender(name: str, settings: Settings, session: aiohttp.ClientSession) -> Sender:
    """The destination's sender, with its send-time credentials when it declares them."""
    destination = REGISTRY[name]
    dest_settings = settings.destinations[name]
    auth = destination.send_time_auth
    return Sender(
        destination,
        dest_settings,
        settings.delivery[name],
        session,
        auth=auth.provider(dest_settings, session) if auth else None,
        token_rejected=auth.rejected if auth else None,
    )


class Worker:
    """Every enabled destination's pipeline, sharing one producer and one HTTP session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redactor = Redactor(settings.secrets)
        self.pipelines: list[DestinationPipeline] = []
        self.draining = False
        self._broker_seen = time.monotonic()
        self._broker_ok = False
        self.exit_code = 0

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self._broker_ok:
            return False, "broker unreachable"
        waiting = [p.name for p in self.pipelines if not p.assigned]
        if waiting or not self.pipelines:
            return False, f"waiting for partition assignment: {', '.join(waiting)}"
        problems = [problem for p in self.pipelines if (problem := p.problem())]
        if problems:
            return False, "; ".join(problems)
        return True, "ok"

    async def run(self, stop: asyncio.Event) -> int:
        settings = self.settings
        kafka = settings.kafka
        log_routing_table(settings)
        try:
            # creates what is missing, or (KAFKA_CREATE_TOPICS=false) refuses to start without it
            ensuring = ensure_topics(kafka, kafka.topics, kafka.unreachable_exit_seconds)
            if not await _unless_stopped(stop, ensuring):
                return self._stopped_while_starting()
            async with contextlib.AsyncExitStack() as stack:
                producer = make_producer(kafka)
                connecting = start_with_retry(producer, "producer", kafka.unreachable_exit_seconds)
                if not await _unless_stopped(stop, connecting):
                    return self._stopped_while_starting()
                stack.push_async_callback(producer.stop)
                session = await stack.enter_async_context(_http_session())
                writer = DeadLetterWriter(
                    producer, self.redactor, settings.worker.dead_letter_stub_bytes
                )
                decoder = SharedDecoder(
                    readers=len(settings.enabled), max_depth=settings.worker.max_nesting_depth
                )
                for index, name in enumerate(settings.enabled):
                    pipeline = DestinationPipeline(
                        REGISTRY[name],
                        settings,
                        build_sender(name, settings, session),
                        writer,
                        topics=kafka.topics,
                        group_id=f"{kafka.group_id}.{name}",
                        writes_input_errors=index == 0,
                        decoder=decoder,
                        redactor=self.redactor,
                    )
                    self.pipelines.append(pipeline)
                stack.push_async_callback(self._stop_pipelines)
                joining = asyncio.gather(*(pipeline.start() for pipeline in self.pipelines))
                if not await _unless_stopped(stop, joining):
                    return self._stopped_while_starting()
                self._broker_ok = True
                _tune_garbage_collection()
                if settings.worker.metrics_port:
                    runner = await start_server(self.ready, settings.worker.metrics_port)
                    stack.push_async_callback(runner.cleanup)
                await self._run_pipelines(stop)
        except KafkaConnectionError as exc:
            log.error(
                "broker_unreachable_giving_up",
                bootstrap_servers=kafka.bootstrap_servers,
                waited_s=kafka.unreachable_exit_seconds,
                error=str(exc),
            )
            return 1
        log.info("stopped", exit_code=self.exit_code)
        return self.exit_code

    def _stopped_while_starting(self) -> int:
        log.info("stopped", exit_code=self.exit_code, note="a stop signal came while starting")
        return self.exit_code

    async def _run_pipelines(self, stop: asyncio.Event) -> None:
        probe = asyncio.create_task(self._probe_broker(stop))
        draining = asyncio.create_task(self._mark_draining(stop))
        try:
            await asyncio.gather(*(self._run_one(pipeline, stop) for pipeline in self.pipelines))
        finally:
            probe.cancel()
            draining.cancel()

    async def _run_one(self, pipeline: DestinationPipeline, stop: asyncio.Event) -> None:
        """One pipeline; a failure nobody foresaw stops the worker cleanly with exit 1.

        Records and batches are guarded inside the pipeline, so this is a last resort: the
        other pipelines drain and commit, and a restart re-reads from the last commit.
        """
        try:
            await pipeline.run(stop)
        except Exception:
            log.exception("pipeline_failed", destination=pipeline.name, action="stopping")
            self.exit_code = 1
            stop.set()

    async def _stop_pipelines(self) -> None:
        """Leave every group at once (a stop is bounded per consumer): shutdown stays short."""
        await asyncio.gather(*(pipeline.stop() for pipeline in self.pipelines))

    async def _mark_draining(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.draining = True
        log.info("shutdown_started", drain_seconds=self.settings.worker.drain_seconds)

    async def _probe_broker(self, stop: asyncio.Event) -> None:
        """Readiness, and exit non-zero if the broker stays away too long."""
        consumer = self.pipelines[0].consumer
        limit = self.settings.kafka.unreachable_exit_seconds
        while not stop.is_set():
            try:
                await asyncio.wait_for(consumer.topics(), timeout=_BROKER_PROBE_SECONDS)
            except (KafkaError, TimeoutError) as exc:
                self._broker_ok = False
                away = time.monotonic() - self._broker_seen
                log.warning("broker_unreachable", away_s=round(away), error=str(exc) or "timeout")
                if away > limit:
                    log.error("broker_unreachable_giving_up", waited_s=limit)
                    self.exit_code = 1
                    stop.set()
            else:
                self._broker_ok = True
                self._broker_seen = time.monotonic()
            await asyncio.sleep(_BROKER_PROBE_SECONDS)


def _tune_garbage_collection() -> None:
    """Fewer, later collections: the hot path makes many short-lived objects and few cycles.

    Everything built while starting (modules, settings, clients) is frozen out of the
    collector's scans. Measured by `bench` (see README, Benchmark): the collector took about
    20 % of the worker's CPU with the default thresholds.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[Any]) -> bool:
    """Await ``work`` unless ``stop`` is set first (then cancel it and return False).

    Starting waits on the broker (metadata, group coordinator) with bounds of minutes or none;
    a SIGTERM must still end the process promptly. Nothing is consumed before the pipelines
    run, so nothing is lost. A failure of ``work`` raises here as before.
    """
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if working.done():
        working.result()
        return True
    working.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await working
    return False


@contextlib.asynccontextmanager
async def _http_session() -> Any:
    connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        yield session


def install_signal_handlers(stop: asyncio.Event, signals: Sequence[int] = ()) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One JSON line instead of asyncio's traceback for a failure nobody awaited.

    aiokafka shields its commit request; when a commit is given up (broker away) the inner
    task later fails on the dead connection with nobody left to read its exception.
    """
    exc = context.get("exception")
    log.warning(
        "background_task_failed",
        message=context.get("message"),
        error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    asyncio.get_running_loop().set_exception_handler(_log_loop_error)
    return await Worker(settings).run(stop)
