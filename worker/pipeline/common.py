"""What every stage of a destination pipeline shares: counts, item references, background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.errors import describe
from worker.events import Consumed, LoyaltyEvent
from worker.observability.redact import Redactor
from worker.offsets import Ticket

log = structlog.get_logger("worker.pipeline")

MAX_ERROR_TEXT = 300


@dataclass
class PipelineStats:
    consumed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    filtered: int = 0
    input_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class ItemRef:
    """What the pipeline keeps with each item: its ticket, source record and event identity.

    Not the decoded event itself: its ``data`` may weigh many times the record's bytes.
    """

    __slots__ = ("event_id", "event_type", "occurred_at", "record", "ticket")

    def __init__(self, ticket: Ticket, record: Consumed, event: LoyaltyEvent) -> None:
        self.ticket = ticket
        self.record = record
        self.event_id = event.event_id
        self.event_type = event.event_type
        self.occurred_at = event.occurred_at


def short_error(redactor: Redactor, exc: BaseException) -> str:
    """An exception as dead letters and logs carry it: one line, redacted, bounded."""
    return redactor.text(describe(exc))[:MAX_ERROR_TEXT]


class Tasks:
    """The pipeline's one-shot tasks (deliveries, dead-letter writes): a drain waits for them."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def __len__(self) -> int:
        return len(self._running)

    async def wait(self, timeout: float) -> None:
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout)

    async def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


async def guarded(run: Callable[[], Awaitable[None]], destination: str, what: str = "") -> None:
    """Run a background coroutine; an unexpected exception is logged with its traceback.

    A loop that fails is started again after a second, so the pipeline never loses its
    linger or commit loop to one bad moment.
    """
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_task_failed", destination=destination, task=what or None)
            if what:  # a one-shot task: its failure is logged, nothing to restart
                return
            await asyncio.sleep(1.0)
