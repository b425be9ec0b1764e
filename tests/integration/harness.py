"""Fault-injection harness: numbered events in, simulator recordings out, and the checks.

Every event is ``rewards_issued`` with ``event_id`` ``e-<seq>`` (``seq`` = produce order) and
key = ``member_id``, so one member's events share a partition. Braze records it as a custom
event and MoEngage as an action, both carrying ``event_id``: that is "what arrived".

**The order check, precisely.** For each (member, destination) let ``A`` be the sequence of
event ids the simulator accepted, in arrival order, and ``F`` be ``A`` with every id that
already appeared earlier in ``A`` removed (the *first arrivals*). Let ``E`` be the member's
event ids in produce order, minus those dead-lettered for that destination. The delivery is
correct iff ``F == E``: nothing lost, nothing extra, every event first delivered after all of
the member's earlier events, and every other arrival a repeat of an event already delivered
(a replay after a crash or a rebalance). Repeats are counted and reported as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaProducer

from tests.support import committed_and_highwater, event, read_all, wait_for

DESTINATIONS = ("braze", "moengage")
REWARD = {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z", "points": 10}


@dataclass(frozen=True, slots=True)
class Produced:
    seq: int
    event_id: str
    member: str
    partition: int
    offset: int
    at: float  # wall-clock time the broker acknowledged it


@dataclass
class Ledger:
    """What the test produced, in order, with each event's partition and offset."""

    topic: str
    events: list[Produced] = field(default_factory=list)

    @property
    def by_id(self) -> dict[str, Produced]:
        return {p.event_id: p for p in self.events}


def event_id(seq: int) -> str:
    return f"e-{seq:08d}"


def reward(seq: int, member: str, padding: int = 0) -> bytes:
    data: dict[str, Any] = dict(REWARD)
    if padding:
        data["note"] = "x" * padding  # extra fields are allowed; Braze ignores this one
    return orjson.dumps(event("rewards_issued", member, event_id(seq), data))


async def produce_numbered(
    bootstrap: str,
    ledger: Ledger,
    count: int,
    *,
    members: int = 200,
    per_second: float | None = None,
    padding: int = 0,
) -> None:
    """Append ``count`` numbered events to ``ledger.topic`` (paced when ``per_second``)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=False
    )
    await producer.start()
    try:
        start = len(ledger.events)
        began = time.monotonic()
        chunk = 50
        for first in range(start, start + count, chunk):
            seqs = range(first, min(first + chunk, start + count))
            futures = []
            for seq in seqs:
                member = f"m-{seq % members:04d}"
                value = reward(seq, member, padding)
                futures.append(
                    (seq, member, await producer.send(ledger.topic, value, key=member.encode()))
                )
            for seq, member, future in futures:
                meta = await future
                ledger.events.append(
                    Produced(seq, event_id(seq), member, meta.partition, meta.offset, time.time())
                )
            if per_second:
                ahead = began + (seqs[-1] + 1 - start) / per_second - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()


def timed_arrivals(sims: Any, destination: str) -> list[tuple[float, str, str]]:
    """(time, member, event_id) of every event one simulator accepted, in arrival order."""
    out: list[tuple[float, str, str]] = []
    if destination == "braze":
        for record in list(sims.braze.state.received):
            obj = record.get("object") or {}
            if record.get("array") == "events" and obj.get("name") == "rewards_issued":
                out.append((record["_at"], obj["external_id"], obj["properties"]["event_id"]))
        return out
    for record in list(sims.moengage.state.received):
        action = record.get("action") or {}
        if record.get("type") == "event" and action.get("action") == "rewards_issued":
            out.append((record["_at"], record["customer_id"], action["attributes"]["event_id"]))
    return out


def arrivals(sims: Any, destination: str) -> list[tuple[str, str]]:
    """(member, event_id) accepted by one simulator, in arrival order."""
    return [(member, eid) for _, member, eid in timed_arrivals(sims, destination)]


def delivered_ids(sims: Any, destination: str) -> set[str]:
    return {event_id for _, event_id in arrivals(sims, destination)}


@dataclass
class Report:
    destination: str
    expected: int
    unique: int
    duplicates: int
    missing: list[str]
    unexpected: list[str]
    out_of_order: list[str]  # members whose first arrivals are not in produce order

    def assert_ok(self) -> None:
        assert not self.missing, f"{self.destination}: {len(self.missing)} lost {self.missing[:5]}"
        assert not self.unexpected, f"{self.destination}: unexpected {self.unexpected[:5]}"
        assert not self.out_of_order, f"{self.destination}: order broken for {self.out_of_order}"


def check_delivery(
    ledger: Ledger, got: list[tuple[str, str]], destination: str, dead: Iterable[str] = ()
) -> Report:
    """Compare arrivals with the ledger using the order definition in the module docstring."""
    skipped = set(dead)
    expected: dict[str, list[str]] = defaultdict(list)
    for produced in ledger.events:
        if produced.event_id not in skipped:
            expected[produced.member].append(produced.event_id)
    first: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    duplicates = 0
    for member, eid in got:
        if eid in seen:
            duplicates += 1
            continue
        seen.add(eid)
        first[member].append(eid)
    wanted = {eid for ids in expected.values() for eid in ids}
    out_of_order = [
        member
        for member in sorted(set(expected) | set(first))
        if [e for e in first.get(member, []) if e in wanted]
        != [e for e in expected.get(member, []) if e in seen]
    ]
    return Report(
        destination,
        expected=len(wanted),
        unique=len(seen & wanted),
        duplicates=duplicates,
        missing=sorted(wanted - seen),
        unexpected=sorted(seen - wanted),
        out_of_order=out_of_order,
    )


def worker_env(
    sims: Any, bootstrap: str, topics: Iterable[str], group: str, **extra: str
) -> dict[str, str]:
    """Environment for `python -m worker run` against Braze and MoEngage simulators."""
    env = {k: v for k, v in sims.env().items() if k.startswith(("BRAZE_", "MOENGAGE_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPICS": ",".join(topics),
            "KAFKA_GROUP_ID": group,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "BRAZE_BACKOFF_BASE_SECONDS": "0.05",
            "MOENGAGE_BACKOFF_BASE_SECONDS": "0.05",
            "BRAZE_BACKOFF_CAP_SECONDS": "2",
            "MOENGAGE_BACKOFF_CAP_SECONDS": "2",
            "BRAZE_BREAKER_COOLDOWN_SECONDS": "1",
            "MOENGAGE_BREAKER_COOLDOWN_SECONDS": "1",
            # the simulators' own windows are the limit under test, not the worker's default
            "MOENGAGE_RATE_LIMIT": "20000",
        }
    )
    env.update(extra)
    return env


def no_rate_limits(sims: Any) -> None:
    for sim in sims:
        sim.state.rate_limits = False


async def wait_delivered(
    sims: Any, ledger: Ledger, timeout: float, destinations: Iterable[str] = DESTINATIONS
) -> None:
    wanted = {p.event_id for p in ledger.events}
    for destination in destinations:
        await wait_for(
            lambda d=destination: wanted <= delivered_ids(sims, d),  # type: ignore[misc]
            timeout,
            f"every event at {destination}",
            interval=0.5,
        )


async def dead_letters(bootstrap: str, topic: str) -> list[Any]:
    return await read_all(bootstrap, topic + ".dlq", settle=1.0)


async def assert_committed_to_end(bootstrap: str, group: str, topics: Iterable[str]) -> None:
    """Every destination's group committed up to each partition's high watermark."""
    topics = list(topics)
    for destination in DESTINATIONS:
        positions = await committed_and_highwater(bootstrap, f"{group}.{destination}", topics)
        assert positions, destination
        behind = {tp: ch for tp, ch in positions.items() if ch[0] != ch[1]}
        assert not behind, f"{destination}: committed != high watermark {behind}"


async def wait_committed_to_end(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float = 30.0
) -> None:
    """Every destination group commits to the end within ``timeout`` (commits follow deliveries)."""
    topics = list(topics)

    async def done() -> bool:
        try:
            await assert_committed_to_end(bootstrap, group, topics)
        except AssertionError:
            return False
        return True

    await wait_for(done, timeout, "commits up to the high watermarks", interval=1.0)


async def committed(bootstrap: str, group: str, topic: str) -> dict[str, dict[int, int]]:
    """Committed offset per partition (0 when none) for each destination's group."""
    out: dict[str, dict[int, int]] = {}
    for destination in DESTINATIONS:
        positions = await committed_and_highwater(bootstrap, f"{group}.{destination}", [topic])
        out[destination] = {p: (c or 0) for (_, p), (c, _) in positions.items()}
    return out


def delivered_uncommitted(ledger: Ledger, delivered: set[str], positions: Mapping[int, int]) -> int:
    """Events already delivered whose offsets are at or past the commit: a crash repeats them."""
    by_id = ledger.by_id
    return sum(
        1
        for eid in delivered
        if eid in by_id and by_id[eid].offset >= positions.get(by_id[eid].partition, 0)
    )


def statuses(sim: Any, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
    return Counter(r.status for r in sim.state.requests if since <= r.at < until)


@contextlib.asynccontextmanager
async def rss_sampler(pid: int, interval: float = 0.2) -> AsyncIterator[list[int]]:
    """Sample the resident set size of ``pid`` (bytes) until the block exits."""
    samples: list[int] = []
    process = psutil.Process(pid)

    async def sample() -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                samples.append(process.memory_info().rss)
            await asyncio.sleep(interval)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def log_events(worker: Any, name: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in worker.log_lines()
        if line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
    ]


def log_time(line: Mapping[str, Any]) -> float:
    """A log line's timestamp as epoch seconds."""
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def no_tracebacks(*workers: Any) -> None:
    for worker in workers:
        logs = worker.logs()
        assert "Traceback" not in logs, logs[-3000:]
