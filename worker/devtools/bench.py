"""`loyalty-relay bench`: the worker against the Kafka client's ceiling and today's webhooks.

One run, one machine: pre-produce N realistic events to the embedded broker (or
``KAFKA_BOOTSTRAP_SERVERS``); time a bare aiokafka consumer reading them (the ceiling); time
``loyalty-relay run`` (a subprocess) until the simulators (another subprocess, rate limits off)
accepted every item for Braze and MoEngage; time the webhook baseline (one HTTP request per
event per destination); then measure end-to-end latency at half the measured rate. Reports a
table and, with ``--json``, every figure, and each of issue 13's targets against its figure.

The simulators are the lean ones (:mod:`worker.devtools.simulators.lean`: parse, count, answer)
unless ``lean_simulators=False``: on a small machine the strict ones' CPU would be taken from the
worker being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from worker.config import KafkaSettings
from worker.devtools.sample import make_event
from worker.kafka import ensure_topics, make_consumer, make_producer, start_with_retry

DEFAULT_MIX = {"rewards_issued": 0.60, "offer_issued": 0.25, "member_enrolled": 0.15}
BASE_TOPICS = {
    "rewards_issued": "rewards_issued",
    "member_enrolled": "enrollments",
    "offer_issued": "offers_issued",
    "audience_membership_changed": "audience_membership",
}


async def run_bench(
    *,
    events: int,
    mix: Mapping[str, float],
    members: int,
    partitions: int,
    half_load_seconds: float,
    skip_baseline: bool,
    json_path: str | None,
    lean_simulators: bool = True,
) -> dict[str, Any]:
    console = Console(stderr=True)
    result: dict[str, Any] = {
        "events": events,
        "mix": dict(mix),
        "members": members,
        "partitions": partitions,
        "machine_cpus": os.cpu_count(),
        "simulators": "lean" if lean_simulators else "strict",
    }
    async with AsyncExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from worker.devtools.embedded_broker import EmbeddedBroker

            broker = await stack.enter_async_context(EmbeddedBroker())
            bootstrap = broker.bootstrap_servers
        run = uuid.uuid4().hex[:6]
        topics = {t: f"bench-{run}.{name}" for t, name in BASE_TOPICS.items()}
        kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_partitions=partitions)
        await ensure_topics(kafka, topics.values(), 30)
        sims, env = _start_simulators(lean_simulators)
        stack.callback(_stop, sims)
        phases: dict[str, float] = {}
        result["phase_seconds"] = phases  # wall time of each phase, to see where a run goes
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("producing", total=events)
            with _timed(phases, "produce"):
                await _produce(kafka, topics, events, mix, members, progress, task)
            progress.update(task, description="ceiling: bare consumer", completed=0)
            with _timed(phases, "ceiling"):
                result["ceiling_events_per_s"] = await _ceiling(
                    kafka, list(topics.values()), events
                )
            progress.update(task, description="minimal aiokafka → aiohttp loop", completed=0)
            with _timed(phases, "minimal_loop"):
                result.update(await _minimal_loop(kafka, list(topics.values()), env, events))
            progress.update(task, description="worker end to end", completed=0)
            with _timed(phases, "worker"):
                result.update(
                    await _worker(bootstrap, topics, env, events, sims.pid, progress, task)
                )
            if not skip_baseline:
                progress.update(task, description="webhook baseline", completed=0)
                with _timed(phases, "webhook_baseline"):
                    result.update(await _baseline(env, events, mix, members))
            progress.update(task, description="latency at full and half load", completed=0)
            full = max(100.0, result["worker_events_per_s"])
            with _timed(phases, "live_load"):
                live = await _live_load(bootstrap, topics, env, [full, full / 2], half_load_seconds)
            result["latency_full_load_ms"] = live[0]
            result["half_load_events_per_s"] = round(full / 2, 1)
            result["latency_half_load_ms"] = live[1]
    result["worker_to_ceiling_ratio"] = round(
        result["worker_events_per_s"] / result["ceiling_events_per_s"], 3
    )
    result["worker_to_minimal_loop_ratio"] = round(
        result["worker_events_per_s"] / result["minimal_loop_events_per_s"], 3
    )
    result["targets"] = _targets(result)
    _print(console, result)
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - started, 1)


# issue 13's targets: (figure, comparison, bound)
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("worker_cpu_seconds_per_1000_events", "<=", 0.040),
    ("worker_to_minimal_loop_ratio", ">=", 0.5),
    ("latency_half_load_ms.p99", "<", 250.0),
    ("worker_peak_rss_mb", "<", 250.0),
)


def _targets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with this run's figure and whether it is met (the RSS target is for a
    backlog of 1,000,000 events: ``backlog_events_waiting`` says what this run had)."""
    out = {}
    for name, comparison, bound in TARGETS:
        key, _, part = name.partition(".")
        value = result[key][part] if part else result[key]
        met = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[comparison]
        out[name] = {"value": value, "target": f"{comparison} {bound:g}", "met": met}
    return out


def _start_simulators(lean: bool) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    command = [sys.executable, "-m", "worker", "simulate", "--port-base", "0", "--no-rate-limits"]
    process = subprocess.Popen(command + (["--lean"] if lean else []), stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    env = orjson.loads(line)["env"]
    return process, {k: v for k, v in env.items() if k.startswith(("BRAZE_", "MOENGAGE_"))}


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


async def _produce(
    kafka: KafkaSettings,
    topics: Mapping[str, str],
    count: int,
    mix: Mapping[str, float],
    members: int,
    progress: Progress,
    task: Any,
) -> None:
    """Produce the backlog in whole batches, one per topic partition being filled at a time.

    With a ``producer.send`` (and a future kept) per event, 1,000,000 events took 63 s to
    produce on the 2-core machine; in whole batches, 29 s. Keys go to the partition the
    producer's own partitioner would choose, so each member's events stay in order.
    """
    from aiokafka.partitioner import DefaultPartitioner

    rng = random.Random(42)
    types = list(mix)
    weights = [mix[t] for t in types]
    producer = make_producer(kafka, linger_ms=20, max_batch_size=1 << 20)
    await start_with_retry(producer, "bench producer", 30)
    partitioner = DefaultPartitioner()
    try:
        partitions = {
            topic: sorted(await producer.partitions_for(topic)) for topic in topics.values()
        }
        batches: dict[tuple[str, int], Any] = {}
        futures = []
        for sequence in range(count):
            event_type = rng.choices(types, weights)[0]
            member = f"member-{rng.randrange(members):06d}"
            value = orjson.dumps(make_event(event_type, member, sequence, rng))
            topic, key = topics[event_type], member.encode()
            where = (topic, partitioner(key, partitions[topic], partitions[topic]))
            batch = batches.get(where)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:  # full: send it and start the next one
                    futures.append(await producer.send_batch(batch, topic, partition=where[1]))
                batch = batches[where] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            if sequence % 5000 == 0:
                progress.update(task, completed=sequence)
        for (topic, partition), batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _assigned_from_start(kafka: KafkaSettings, topics: list[str]) -> Any:
    """A group-less consumer assigned every partition of ``topics``, at the beginning."""
    from aiokafka import TopicPartition

    consumer = make_consumer(kafka, None)
    await start_with_retry(consumer, "bench reader", 30)
    client = consumer._client  # ask for these topics' metadata (Kafka sends it on request)
    for topic in topics:
        client.add_topic(topic)
    for _ in range(50):
        await client.force_metadata_update()
        if all(consumer.partitions_for_topic(topic) for topic in topics):
            break
        await asyncio.sleep(0.2)
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return consumer


async def _stop_reader(consumer: Any) -> None:
    # aiokafka may raise CancelledError from a group-less consumer's stop (a known quirk)
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()


async def _ceiling(kafka: KafkaSettings, topics: list[str], count: int) -> float:
    """A bare consumer (assigned partitions, no processing): the client's ceiling."""
    consumer = await _assigned_from_start(kafka, topics)
    try:
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(v) for v in batch.values())
        return round(count / (time.perf_counter() - started), 1)
    finally:
        await _stop_reader(consumer)


async def _minimal_loop(
    kafka: KafkaSettings, topics: list[str], env: Mapping[str, str], count: int
) -> dict[str, Any]:
    """The same Braze /users/track requests with no guarantees: the price of the guarantees.

    Every event becomes one custom event object, 75 to a request, 16 requests in flight; no
    validation, per-member order, retries, dead letters, commits or metrics. Braze only: the
    worker's figure covers Braze and MoEngage, so the ratio flatters this loop.
    """
    url = env["BRAZE_REST_ENDPOINT"] + "/users/track"
    headers = {
        "Authorization": f"Bearer {env['BRAZE_API_KEY']}",
        "Content-Type": "application/json",
    }
    slots = asyncio.Semaphore(16)
    sent = 0

    async def post(session: aiohttp.ClientSession, objects: list[bytes]) -> None:
        nonlocal sent
        body = b'{"events":[' + b",".join(objects) + b"]}"
        async with slots, session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status == 201:
                sent += len(objects)

    consumer = await _assigned_from_start(kafka, topics)
    tasks: set[asyncio.Task[None]] = set()
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession() as session:
            read, pending = 0, []
            while read < count:
                fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for records in fetched.values():
                    for record in records:
                        pending.append(_braze_object(record.value))
                        if len(pending) == 75:
                            await slots.acquire()  # at most 16 requests built ahead
                            slots.release()
                            task = asyncio.create_task(post(session, pending))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                            pending = []
                    read += len(records)
            if pending:
                await post(session, pending)
            await asyncio.gather(*tasks)
    finally:
        await _stop_reader(consumer)
    elapsed = time.perf_counter() - started
    return {
        "minimal_loop_events_per_s": round(count / elapsed, 1),
        "minimal_loop_cpu_seconds_per_1000_events": round(
            (time.process_time() - cpu) / count * 1000, 3
        ),
        "minimal_loop_delivered": sent,
    }


def _braze_object(value: bytes) -> bytes:
    """An event as a Braze custom event object, no checks (the minimal loop's transform)."""
    event = orjson.loads(value)
    properties = {k: v for k, v in event["data"].items() if not isinstance(v, dict)}
    properties["event_id"] = event["event_id"]
    return orjson.dumps(
        {
            "external_id": event["member_id"],
            "name": event["event_type"],
            "time": event["occurred_at"],
            "properties": properties,
        }
    )


def _worker_env(
    bootstrap: str, topics: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    # one group per bench run: the live-load phases continue where the backlog run committed
    group = "bench-" + next(iter(topics.values())).split(".")[0].removeprefix("bench-")
    return {
        **os.environ,
        **env,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics.values()),
        "KAFKA_GROUP_ID": group,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "BRAZE_RATE_LIMIT": "0",
        "MOENGAGE_RATE_LIMIT": "0",
        "MOENGAGE_USERS_PER_MINUTE": "0",
        "MOENGAGE_EVENTS_PER_MINUTE": "0",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "warning",
    }


async def _stats(session: aiohttp.ClientSession, env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name, url in (
        ("braze", env["BRAZE_REST_ENDPOINT"]),
        ("moengage", env["MOENGAGE_API_ENDPOINT"]),
    ):
        async with session.get(url + "/_sim/stats") as resp:
            out[name] = await resp.json()
    return out


async def _reset(session: aiohttp.ClientSession, env: Mapping[str, str]) -> None:
    for url in (env["BRAZE_REST_ENDPOINT"], env["MOENGAGE_API_ENDPOINT"]):
        async with session.post(url + "/_sim/reset") as resp:
            await resp.read()


async def _worker(
    bootstrap: str,
    topics: Mapping[str, str],
    env: Mapping[str, str],
    count: int,
    simulators_pid: int,
    progress: Progress,
    task: Any,
) -> dict[str, Any]:
    """The worker through the whole backlog (produced before it starts, so all of it waits)."""
    import psutil

    expected = 2 * count  # every event reaches Braze and MoEngage once
    simulators = psutil.Process(simulators_pid)
    async with aiohttp.ClientSession() as session:
        await _reset(session, env)
        simulators_cpu = _cpu_seconds(simulators)
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], env=_worker_env(bootstrap, topics, env)
        )
        watched = psutil.Process(process.pid)
        peak = 0
        first_at = None
        startup_cpu = 0.0  # start-up, group join and first fetch: the CPU before anything arrived
        try:
            while True:
                await asyncio.sleep(0.1)
                peak = max(peak, watched.memory_info().rss, _high_water_rss(process.pid))
                before = _cpu_seconds(watched)
                stats = await _stats(session, env)
                accepted = stats["braze"]["received"] + stats["moengage"]["received"]
                if not accepted:
                    startup_cpu = before
                elif first_at is None:
                    first_at = time.perf_counter()
                progress.update(task, completed=accepted // 2)
                if accepted >= expected:
                    break
                if process.poll() is not None:
                    raise RuntimeError("the worker exited during the benchmark")
            elapsed = time.perf_counter() - (first_at or time.perf_counter())
            cpu = _cpu_seconds(watched)
            simulators_cpu = _cpu_seconds(simulators) - simulators_cpu
            peak = max(peak, _high_water_rss(process.pid))
            latencies = await _latencies(session, env)  # includes time spent in the backlog
        finally:
            process.terminate()
            process.wait(timeout=60)
    braze, moengage = stats["braze"], stats["moengage"]
    return {
        "worker_events_per_s": round(count / max(elapsed, 1e-6), 1),
        "worker_peak_rss_mb": round(peak / 2**20, 1),
        "backlog_events_waiting": count,
        "worker_cpu_seconds_per_1000_events": round(cpu / count * 1000, 3),
        "worker_cpu_seconds_before_first_acceptance": round(startup_cpu, 2),
        "simulator_cpu_seconds_per_1000_events": round(simulators_cpu / count * 1000, 3),
        "braze_requests_per_event": round(braze["requests"] / count, 4),
        "braze_objects_per_request": round(braze["items_per_accepted_request"], 1),
        "moengage_requests_per_event": round(moengage["requests"] / count, 4),
        "moengage_bytes_per_request": round(moengage["bytes_per_accepted_request"]),
        "moengage_fill_of_100kb": round(moengage["bytes_per_accepted_request"] / 100_000, 3),
        "latency_backlog_ms": latencies,
    }


def _cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _high_water_rss(pid: int) -> int:
    """The kernel's peak RSS of ``pid`` (VmHWM, Linux), so no short peak is missed between
    samples; 0 where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


async def _latencies(session: aiohttp.ClientSession, env: Mapping[str, str]) -> dict[str, float]:
    """occurred_at (stamped at produce time) → acceptance at the simulator, p50/p95/p99."""
    values: list[float] = []
    async with session.get(env["BRAZE_REST_ENDPOINT"] + "/_sim/latencies") as resp:
        if resp.status == 200:  # the lean simulator works them out itself
            values = (await resp.json())["latencies_ms"]
    if not values:
        values = await _strict_latencies(session, env)
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    cuts = statistics.quantiles(values, n=100)
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


async def _strict_latencies(session: aiohttp.ClientSession, env: Mapping[str, str]) -> list[float]:
    values: list[float] = []
    async with session.get(env["BRAZE_REST_ENDPOINT"] + "/_sim/received") as resp:
        items = (await resp.json())["items"]
    for item in items:
        occurred = (item.get("object") or {}).get("time") or (
            (item.get("properties") or {}).get("issued_date")
        )
        if isinstance(occurred, str):
            try:
                values.append((item["_at"] - datetime.fromisoformat(occurred).timestamp()) * 1000)
            except ValueError:
                continue
    return values


async def _baseline(
    env: Mapping[str, str], count: int, mix: Mapping[str, float], members: int
) -> dict[str, Any]:
    """Today's webhooks: one request per event per destination, 16 at a time per destination."""
    rng = random.Random(7)
    types = list(mix)
    weights = [mix[t] for t in types]
    braze_url = env["BRAZE_REST_ENDPOINT"] + "/users/track"
    moengage_url = f"{env['MOENGAGE_API_ENDPOINT']}/v1/event/{env['MOENGAGE_WORKSPACE_ID']}"
    import base64

    moe_auth = base64.b64encode(
        f"{env['MOENGAGE_WORKSPACE_ID']}:{env['MOENGAGE_API_KEY']}".encode()
    ).decode()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
    sent = {"braze": 0, "moengage": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while (event := await queue.get()) is not None:
            props = {**event["data"], "event_id": event["event_id"]}
            braze = {
                "events": [
                    {
                        "external_id": event["member_id"],
                        "name": event["event_type"],
                        "time": event["occurred_at"],
                        "properties": {k: v for k, v in props.items() if not isinstance(v, dict)},
                    }
                ]
            }
            async with session.post(
                braze_url,
                data=orjson.dumps(braze),
                headers={
                    "Authorization": f"Bearer {env['BRAZE_API_KEY']}",
                    "Content-Type": "application/json",
                },
            ) as resp:
                await resp.read()
            sent["braze"] += 1
            moengage = {
                "type": "event",
                "customer_id": event["member_id"],
                "actions": [{"action": event["event_type"], "attributes": props}],
            }
            async with session.post(
                moengage_url,
                data=orjson.dumps(moengage),
                headers={"Authorization": f"Basic {moe_auth}", "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
            sent["moengage"] += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(16)]
        for sequence in range(count):
            event_type = rng.choices(types, weights)[0]
            member = f"member-{rng.randrange(members):06d}"
            await queue.put(make_event(event_type, member, sequence, rng))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    return {
        "webhook_events_per_s": round(count / elapsed, 1),
        "webhook_requests_per_event": {"braze": 1.0, "moengage": 1.0},
    }


async def _live_load(
    bootstrap: str,
    topics: Mapping[str, str],
    env: Mapping[str, str],
    rates: list[float],
    seconds: float,
) -> list[dict[str, float]]:
    """Produce at each rate for ``seconds`` while the worker runs; occurred_at → accepted."""
    rng = random.Random(9)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    results = []
    async with aiohttp.ClientSession() as session:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], env=_worker_env(bootstrap, topics, env)
        )
        producer = make_producer(kafka, linger_ms=1)
        await start_with_retry(producer, "live-load producer", 30)
        try:
            await asyncio.sleep(8.0)  # both destination groups join (the backlog is committed)
            for rate in rates:
                await _reset(session, env)
                total = max(1, int(rate * seconds))
                started = time.perf_counter()
                for sequence in range(total):
                    member = f"member-{rng.randrange(5000):06d}"
                    event = make_event(
                        "rewards_issued", member, sequence, rng, when=datetime.now(UTC)
                    )
                    await producer.send(
                        topics["rewards_issued"], orjson.dumps(event), key=member.encode()
                    )
                    delay = (sequence + 1) / rate - (time.perf_counter() - started)
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                await producer.flush()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    stats = await _stats(session, env)
                    if stats["braze"]["received"] >= total:
                        break
                    await asyncio.sleep(0.2)
                results.append(await _latencies(session, env))
        finally:
            await producer.stop()
            process.terminate()
            process.wait(timeout=60)
    return results


def _print(console: Console, result: Mapping[str, Any]) -> None:
    table = Table(title=f"loyalty-relay bench: {result['events']} events")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key in ("mix", "targets"):
            continue
        table.add_row(key, str(value))
    table.add_section()
    for name, target in result.get("targets", {}).items():
        verdict = "met" if target["met"] else "MISSED"
        table.add_row(f"target: {name} {target['target']}", f"{target['value']} {verdict}")
    Console().print(table)
