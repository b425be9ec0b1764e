"""`loyalty-relay demo`: the whole pipeline on one machine, with nothing but Python installed.

Starts the embedded Tansu broker and the four destination simulators, produces a realistic
sample of every event type plus a few bad events, runs the worker until every record has a
final outcome at every destination, prints a summary and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.app import Worker
from worker.config import load_settings
from worker.embedded_broker import EmbeddedBroker
from worker.kafka import ensure_topics, make_producer, start_with_retry
from worker.observability.logging import configure_logging
from worker.sample import TOPIC_FOR, sample_records
from worker.simulators.runner import SimulatorSet

BAD_EVENTS = 7


async def run_demo(*, events: int = 60, timeout: float = 60.0) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    configure_logging("error", json=False)
    started = time.monotonic()
    console.print("[bold]loyalty-relay demo[/bold]: starting the embedded broker and simulators…")
    async with EmbeddedBroker() as broker, SimulatorSet.start() as sims:
        env = {
            **sims.env(),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_GROUP_ID": "loyalty-relay-demo",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "error",
            "RELAY_DRAIN_SECONDS": "5",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
        }
        settings = load_settings(environ=env)
        await ensure_topics(settings.kafka, settings.kafka.topics, 30)
        expected, produced = await _produce(settings.kafka, events)
        console.print(
            f"produced {sum(produced.values())} events ({events} valid, {BAD_EVENTS} malformed) "
            f"to {len(TOPIC_FOR)} topics on {broker.bootstrap_servers}"
        )
        worker = Worker(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        done = await _wait_until_committed(worker, expected, timeout)
        stop.set()
        code = await task
        _summary(console, worker, sims, produced, done, time.monotonic() - started)
    return 0 if done and code == 0 else 1


async def _produce(kafka: Any, events: int) -> tuple[dict[Any, int], Counter[str]]:
    producer = make_producer(kafka)
    await start_with_retry(producer, "producer", 30)
    ends: dict[Any, int] = {}
    produced: Counter[str] = Counter()
    try:
        futures = []
        for record in sample_records(events, bad=BAD_EVENTS, members=20):
            produced[record.event_type] += 1
            futures.append(await producer.send(record.topic, value=record.value, key=record.key))
        for future in futures:
            meta = await future
            key = (meta.topic, meta.partition)
            ends[key] = max(ends.get(key, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends, produced


async def _wait_until_committed(worker: Worker, expected: dict[Any, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if worker.pipelines and all(_caught_up(p, expected) for p in worker.pipelines):
            return True
    return False


def _caught_up(pipeline: Any, expected: dict[Any, int]) -> bool:
    committed = {
        (tp.topic, tp.partition): progress.committed for tp, progress in pipeline.progress.items()
    }
    return all((committed.get(key) or 0) >= end for key, end in expected.items())


def _summary(
    console: Console, worker: Worker, sims: Any, produced: Counter[str], done: bool, took: float
) -> None:
    table = Table(title="Events produced")
    table.add_column("event type")
    table.add_column("count", justify="right")
    for event_type, count in sorted(produced.items()):
        table.add_row(event_type, str(count))
    console.print(table)

    per_dest = Table(title="Per destination")
    for column in (
        "destination",
        "consumed",
        "delivered",
        "skipped",
        "dead letters",
        "accepted at simulator",
        "requests",
    ):
        per_dest.add_column(column, justify="right" if column != "destination" else "left")
    reasons: Counter[tuple[str, str]] = Counter()
    for pipeline in worker.pipelines:
        stats = pipeline.stats
        received, requests = sims.summary(pipeline.name)
        per_dest.add_row(
            pipeline.name,
            str(stats.consumed),
            str(stats.delivered),
            str(stats.skipped),
            str(stats.dead_lettered),
            str(received),
            str(requests),
        )
        for reason, count in stats.by_reason.items():
            reasons[(pipeline.name if reason not in _INPUT_REASONS else "*", reason)] += count
    console.print(per_dest)
    console.print(
        "skipped = no call exists for that event at that destination "
        "(SessionM has none for an audience 'remove')."
    )

    dlq = Table(title="Dead letters by reason")
    dlq.add_column("dlq.destination")
    dlq.add_column("dlq.reason")
    dlq.add_column("count", justify="right")
    for (destination, reason), count in sorted(reasons.items()):
        dlq.add_row(destination, reason, str(count))
    console.print(dlq)
    status = (
        "[green]all records reached a final outcome[/green]"
        if done
        else ("[red]timed out before every record was committed[/red]")
    )
    console.print(f"{status} in {took:.1f} s.")
    console.print(
        "Where to look: dead letters are in <topic>.dlq (e.g. loyalty.rewards_issued.dlq) with "
        "dlq.* headers; against your own broker run `loyalty-relay dlq inspect` and "
        "`loyalty-relay replay --dry-run`. Each destination commits in group "
        "loyalty-relay.<destination>."
    )


_INPUT_REASONS = frozenset(
    {
        "empty_value",
        "too_large",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_member_id",
        "unknown_event_type",
        "unknown_schema_version",
        "schema_violation",
    }
)
