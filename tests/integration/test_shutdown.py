"""SIGTERM: the process exits within RELAY_DRAIN_SECONDS + 15 s and a clean stop repeats nothing.

Bounded: one worker, and three replicas of one group SIGTERMed at the same moment (they
rebalance each other while draining), on a quiet machine and with a competing process
spinning on every core. Clean: SIGTERM mid-stream, restart, and every event arrived exactly
once at each destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.integration.harness import (
    DESTINATIONS,
    Ledger,
    arrivals,
    assert_committed_to_end,
    check_delivery,
    delivered_ids,
    no_tracebacks,
    produce_numbered,
    wait_delivered,
    worker_env,
)
from tests.support import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

DRAIN_SECONDS = 10
BOUND = DRAIN_SECONDS + 15
# busy-waits until its deadline: a competing process on one core, gone by itself at the latest
_SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


@contextlib.contextmanager
def cpu_hogs(seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One spinning process per core, for at most ``seconds`` (and stopped on exit)."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(seconds)])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield hogs
    finally:
        for hog in hogs:
            if hog.poll() is None:
                hog.kill()
            hog.wait(timeout=10)


async def sigterm_together(
    workers: Sequence[WorkerProcess], timeout: float, stagger: float = 0.0
) -> list[float | None]:
    """SIGTERM the workers (``stagger`` seconds apart); seconds from each one's SIGTERM until
    it exited with 0 (None: still running after ``timeout``)."""

    async def stopped(worker: WorkerProcess, delay: float) -> float | None:
        await asyncio.sleep(delay)
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(worker.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None
        assert code == 0, f"exit code {code}: {worker.logs()[-2000:]}"
        return round(time.monotonic() - started, 1)

    return list(await asyncio.gather(*(stopped(w, i * stagger) for i, w in enumerate(workers))))


def _env(sims: Any, bootstrap: str, topic: str, group: str) -> dict[str, str]:
    return worker_env(
        sims,
        bootstrap,
        [topic],
        group,
        RELAY_DRAIN_SECONDS=str(DRAIN_SECONDS),
        RELAY_MAX_BUFFERED_EVENTS="1000",
    )


def _count(sims: Any, destination: str) -> Counter[str]:
    return Counter(eid for _, eid in arrivals(sims, destination))


async def test_clean_sigterm_mid_stream_then_restart_duplicates_nothing(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any
) -> None:
    """SIGTERM while deliveries are in flight, restart: every event exactly once, in order."""
    (topic,) = topic_factory("sigterm")
    ledger = Ledger(topic)
    await produce_numbered(kafka_bootstrap, ledger, 3000)
    for sim in (simulators.braze, simulators.moengage):
        sim.state.faults.update({"latency_ms": 150})
    group = f"g-sigterm-{topic.split('.')[0]}"
    env = _env(simulators, kafka_bootstrap, topic, group)
    first = worker_factory(env, name="first")
    await wait_for(lambda: len(delivered_ids(simulators, "braze")) >= 600, 120, "600 at Braze")
    [took] = await sigterm_together([first], timeout=BOUND + 60)
    partly = {d: len(delivered_ids(simulators, d)) for d in DESTINATIONS}
    print(f"SIGTERM after {partly} of 3000 delivered: exited in {took} s")
    assert took is not None and took <= BOUND, f"exit took {took} s (bound {BOUND} s)"
    assert partly["braze"] < 3000, "the stream ended before the SIGTERM: nothing was tested"
    for sim in (simulators.braze, simulators.moengage):
        sim.state.faults.update({"latency_ms": 0})

    second = worker_factory(env, name="second")
    await wait_delivered(simulators, ledger, timeout=120)
    await wait_for(
        lambda: _committed(kafka_bootstrap, group, topic), 30, "commits at the high watermark"
    )
    assert await second.stop() == 0
    for destination in DESTINATIONS:
        counts = _count(simulators, destination)
        repeated = {eid: n for eid, n in counts.items() if n > 1}
        assert not repeated, f"{destination}: {len(repeated)} delivered twice {list(repeated)[:5]}"
        check_delivery(ledger, arrivals(simulators, destination), destination).assert_ok()
    no_tracebacks(first, second)


async def _committed(bootstrap: str, group: str, topic: str) -> bool:
    try:
        await assert_committed_to_end(bootstrap, group, [topic])
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize(
    ("load", "braze", "stagger"),
    [
        ("quiet", "healthy", 0.0),
        ("cpu-busy", "healthy", 0.0),
        ("quiet", "down", 0.0),
        ("cpu-busy", "down", 0.0),
        ("quiet", "down", 3.0),
        ("cpu-busy", "down", 3.0),
    ],
)
async def test_three_replicas_sigtermed_together_exit_in_bounded_time(
    kafka_bootstrap: str,
    topic_factory: Any,
    simulators: Any,
    worker_factory: Any,
    load: str,
    braze: str,
    stagger: float,
) -> None:
    """Three replicas of one group, SIGTERMed at once mid-stream: each exits within the bound.

    With Braze down (503) at that moment its batches cannot finish, so every drain and every
    revoke of the rebalances between the stopping replicas waits as long as it may.
    """
    (topic,) = topic_factory("pool")
    ledger = Ledger(topic)
    await produce_numbered(kafka_bootstrap, ledger, 6000)
    for sim in (simulators.braze, simulators.moengage):
        sim.state.faults.update({"latency_ms": 100})
    group = f"g-pool-{topic.split('.')[0]}"
    env = _env(simulators, kafka_bootstrap, topic, group)
    pool = [worker_factory(env, name=f"r{i}") for i in range(3)]
    await wait_for(lambda: len(delivered_ids(simulators, "braze")) >= 900, 180, "900 at Braze")
    if braze == "down":
        simulators.braze.state.faults.update({"status": 503, "status_probability": 1.0})
        await asyncio.sleep(2)  # batches in flight are now retrying
    with cpu_hogs(BOUND + 60) if load == "cpu-busy" else contextlib.nullcontext():
        took = await sigterm_together(pool, timeout=BOUND + 60, stagger=stagger)
    what = f"{load}, Braze {braze}, SIGTERMs {stagger} s apart"
    print(f"{what}: the three replicas exited {took} s after their SIGTERM (bound {BOUND} s)")
    assert all(t is not None and t <= BOUND for t in took), f"exit times {took} s, bound {BOUND}"
    for sim in (simulators.braze, simulators.moengage):
        sim.state.faults.update({"latency_ms": 0, "status_probability": 0.0})

    last = worker_factory(env, name="after")
    await wait_delivered(simulators, ledger, timeout=180)
    assert await last.stop() == 0
    duplicates = {d: sum(n - 1 for n in _count(simulators, d).values()) for d in DESTINATIONS}
    print(f"{what}: duplicates after the SIGTERMs and a restart: {duplicates}")
    for destination in DESTINATIONS:
        check_delivery(ledger, arrivals(simulators, destination), destination).assert_ok()
    no_tracebacks(*pool, last)


async def test_sigterm_while_starting_against_a_broker_that_never_answers_exits_at_once(
    tmp_path: Any,
) -> None:
    """Starting waits on the broker for minutes; a SIGTERM meanwhile ends the process at once.

    The "broker" accepts connections and never answers, so every start step would wait for
    its own timeouts (KAFKA_UNREACHABLE_EXIT_SECONDS, 300 s by default).
    """
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "KAFKA_TOPICS": "loyalty.rewards_issued",
        "BRAZE_API_KEY": "test-key-never-logged",
        "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        await wait_for(lambda: bool(accepted), 30, "the worker to connect to the broker")
        await asyncio.sleep(1.0)
        started = time.monotonic()
        code = await worker.stop(timeout=60)
        took = time.monotonic() - started
    finally:
        if worker.process.poll() is None:
            worker.kill()
        server.close()
    assert code == 0, worker.logs()[-2000:]
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    stopped = [line for line in worker.log_lines() if line.get("event") == "stopped"]
    assert stopped and "while starting" in stopped[-1].get("note", ""), worker.logs()[-2000:]
