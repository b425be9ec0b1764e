"""A cancel must stop the task even when what it waits for happens in the same loop turn.

On Python 3.11 ``asyncio.wait_for`` drops such a cancel (CPython gh-86296): a delivery cancelled
on a revoke would go on and send, a drain's ``cancel_all`` or a shutdown would wait for a
commit loop that never ends. The worker waits with ``asyncio.timeout`` instead.
"""

from __future__ import annotations

import asyncio

from worker.consume.memory import MemoryConsumer
from worker.deliver.flow import CircuitBreaker
from worker.pipeline.commit import BufferLimits, Committer


async def _cancelled_promptly(task: asyncio.Task[object]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=2.0)
    if not done:
        task.cancel()
        return False
    return task.cancelled()


async def test_the_commit_loop_stops_when_cancelled_as_a_commit_is_requested() -> None:
    committer = Committer("braze", MemoryConsumer({}), BufferLimits(records=10, bytes=10))
    task = asyncio.create_task(committer.commit_loop(lambda: None))
    await asyncio.sleep(0.01)
    committer.soon.set()
    task.cancel()
    assert await _cancelled_promptly(task)  # type: ignore[arg-type]


async def test_a_request_waiting_on_an_open_breaker_stays_cancelled_when_it_closes() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=60.0)
    breaker.record_failure()  # open for a minute
    waiting = asyncio.create_task(breaker.admit())
    await asyncio.sleep(0.01)
    breaker.record_success()  # closes it and wakes the waiter...
    waiting.cancel()  # ...in the same turn as the revoke cancels the delivery
    assert await _cancelled_promptly(waiting)  # type: ignore[arg-type]


def test_the_worker_never_waits_with_wait_for() -> None:
    from pathlib import Path

    worker = Path(__file__).resolve().parents[2] / "worker"
    users = [p.name for p in worker.rglob("*.py") if "asyncio.wait_for(" in p.read_text()]
    assert users == [], "use `async with asyncio.timeout(...)`: see this module's docstring"
