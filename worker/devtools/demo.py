"""`loyalty-relay demo`: the whole pipeline on one machine, with nothing but Python installed.

Starts the embedded Tansu broker and the four destination simulators, produces a realistic
sample of every event type plus a few bad events, posts one body of each Kognitiv webhook
template through the ingest service (``loyalty-relay ingest``, in-process), runs the worker until
every record has a final outcome at every destination, prints a summary and exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from worker.app import Worker
from worker.config import load_settings
from worker.devtools.embedded_broker import EmbeddedBroker, free_port
from worker.devtools.sample import TOPIC_FOR, sample_records
from worker.devtools.simulators.runner import SimulatorSet
from worker.ingest.config import load_ingest_config
from worker.ingest.samples import WebhookSample, webhook_samples
from worker.ingest.service import IngestService
from worker.kafka import ensure_topics, make_producer, start_with_retry
from worker.observability.logging import configure_logging

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
        posted, ingested = await _post_webhooks(broker.bootstrap_servers)
        for key, end in ingested.items():
            expected[key] = max(expected.get(key, 0), end)
        console.print(
            f"posted {len(posted)} Kognitiv webhook bodies through `loyalty-relay ingest`: "
            + ", ".join(f"{p.status}" for p in posted)
        )
        worker = Worker(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        done = await _wait_until_committed(worker, expected, timeout)
        stop.set()
        code = await task
        _summary(console, worker, sims, produced, done, time.monotonic() - started)
        webhooks_ok = _webhook_summary(console, sims, posted)
    return 0 if done and code == 0 and webhooks_ok else 1


@dataclass(frozen=True, slots=True)
class _Posted:
    sample: WebhookSample
    status: int
    event_ids: list[str]


async def _post_webhooks(bootstrap: str) -> tuple[list[_Posted], dict[Any, int]]:
    """Post each template body to an in-process ingest service, as Kognitiv would."""
    token = secrets.token_urlsafe(24)
    port = free_port()
    config = load_ingest_config(
        environ={
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "INGEST_TOKEN": token,
            "INGEST_HOST": "127.0.0.1",
            "INGEST_PORT": str(port),
            "LOG_LEVEL": "error",
        }
    )
    service = IngestService(config)
    await service.start()
    posted: list[_Posted] = []
    try:
        deadline = time.monotonic() + 30
        while not service.ready()[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            for sample in webhook_samples():
                credential = (
                    token
                    if sample.scheme == "Bearer"
                    else base64.b64encode(f"demo-app:{token}".encode()).decode()
                )
                async with session.post(
                    f"http://127.0.0.1:{port}{sample.route}",
                    data=orjson.dumps(sample.body),
                    headers={
                        "Authorization": f"{sample.scheme} {credential}",
                        "Content-Type": "application/json",
                    },
                ) as response:
                    answer = orjson.loads(await response.read() or b"{}")
                    posted.append(_Posted(sample, response.status, answer.get("event_ids", [])))
    finally:
        await service.stop()
    return posted, dict(service.acknowledged)


def _webhook_summary(console: Console, sims: Any, posted: list[_Posted]) -> bool:
    """What each template body became, checked at the Braze and MoEngage simulators."""
    braze, moengage = sims.braze.state, sims.moengage.state
    braze_ids = {e.get("properties", {}).get("event_id") for e in braze.events()}
    braze_members = {a.get("external_id") for a in braze.attributes() if "email" in a}
    moengage_ids = {a.get("attributes", {}).get("event_id") for a in moengage.actions()}
    moengage_members = {c.get("customer_id") for c in moengage.customers()}
    table = Table(title="Kognitiv webhooks through `loyalty-relay ingest`")
    for column in ("template (route)", "HTTP", "event_id", "at Braze", "at MoEngage"):
        table.add_column(column)
    all_ok = True
    for item in posted:
        if "attributes" in item.sample.body:  # enrollments carry no event_id at destinations
            at_braze = item.sample.member_id in braze_members
            at_moengage = item.sample.member_id in moengage_members
        else:
            at_braze = bool(item.event_ids) and set(item.event_ids) <= braze_ids
            at_moengage = bool(item.event_ids) and set(item.event_ids) <= moengage_ids
        all_ok = all_ok and item.status == 202 and at_braze and at_moengage
        table.add_row(
            f"{item.sample.name} ({item.sample.route.rsplit('/', 1)[-1]})",
            str(item.status),
            ", ".join(item.event_ids) or "-",
            "yes" if at_braze else "[red]no[/red]",
            "yes" if at_moengage else "[red]no[/red]",
        )
    console.print(table)
    return all_ok


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
