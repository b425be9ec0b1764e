"""The in-process world: one shared in-memory log, pipelines over it, the strict simulators.

A :class:`World` holds what a consumer group of ``DestinationPipeline`` replicas (Braze) sees:
a :class:`~worker.consume.memory.MemoryLog` with the group's committed offsets, each replica's
``MemoryConsumer``, one in-memory dead-letter producer, and the Braze simulator started in this
process. The test plays the group coordinator (who owns which partition) and the operator
(crash, restart); the world keeps a ledger of what was appended and checks every commit as it
happens.

**What at-least-once allows, exactly.** A record's *outcomes* are its arrivals at the simulator
plus its acknowledged dead letters. Each record has at most one outcome, except inside a
*redelivery window*: when a replica crashes, or gives a partition up with work unfinished
(the bounded revoke wait ran out), the records of that partition from the group's committed
offset to the log end at that moment may be handled again by the next owner. A graceful
revoke that finished its work leaves an empty window (committed = everything consumed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from tests.inprocess.producer import MemoryProducer
from worker.app import build_sender
from worker.config import Settings, load_settings
from worker.consume.memory import MemoryConsumer, MemoryLog
from worker.deadletter import DeadLetterWriter
from worker.destinations.registry import REGISTRY
from worker.observability.redact import Redactor
from worker.pipeline import DestinationPipeline

TOPIC = "loyalty.rewards_issued"
PARTITIONS = tuple(TopicPartition(TOPIC, p) for p in range(3))
MEMBERS = tuple(f"m-{i}" for i in range(6))
DESTINATION = "braze"
# why each kind of malformed record is dead-lettered
MALFORMED = {
    "invalid_json": b'{"event_id": "broken',
    "missing_member_id": orjson.dumps(
        {
            "event_id": "no-member",
            "event_type": "rewards_issued",
            "schema_version": 1,
            "occurred_at": "2026-11-20T10:00:00Z",
            "source": "kognitiv",
            "data": {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z"},
        }
    ),
}
# dead-letter reasons a valid event may get from Braze (a 400, or a budget spent)
DELIVERY_REASONS = frozenset({"permanent_http_error", "retries_exhausted"})


def fast_settings(simulator_env: dict[str, str]) -> Settings:
    """Braze only, with short linger, drain, backoff and breaker cool-down."""
    env = {k: v for k, v in simulator_env.items() if k.startswith("BRAZE_")}
    env.update(
        {
            "KAFKA_TOPICS": TOPIC,
            "RELAY_LINGER_MS": "2",
            "RELAY_DRAIN_SECONDS": "0.25",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "warning",
            "BRAZE_BACKOFF_BASE_SECONDS": "0.005",
            "BRAZE_BACKOFF_CAP_SECONDS": "0.02",
            "BRAZE_BREAKER_COOLDOWN_SECONDS": "0.02",
            "BRAZE_REQUEST_TIMEOUT_SECONDS": "5",
            "BRAZE_MAX_RETRY_SECONDS": "120",
            "BRAZE_MAX_ATTEMPTS": "1000",
        }
    )
    return load_settings(environ=env)


@dataclass(frozen=True, slots=True)
class Appended:
    tp: TopicPartition
    offset: int
    member: str
    event_id: str | None  # None for a malformed record
    malformed: str | None  # the reason it must be dead-lettered with


@dataclass
class Replica:
    name: str
    pipeline: DestinationPipeline
    consumer: MemoryConsumer
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class World:
    settings: Settings
    sims: Any
    session: Any
    log: MemoryLog = field(default_factory=lambda: MemoryLog(PARTITIONS))
    producer: MemoryProducer = field(default_factory=MemoryProducer)
    ledger: list[Appended] = field(default_factory=list)
    replicas: dict[str, Replica] = field(default_factory=dict)
    owner: dict[TopicPartition, str] = field(default_factory=dict)
    # partition → [start, end) offsets that may be handled again (see the module docstring)
    windows: dict[TopicPartition, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    violations: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    _seen_received: int = 0
    _arrived: set[str] = field(default_factory=set)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.log.on_commit = self._check_commit
        self.writer = DeadLetterWriter(self.producer, Redactor(self.settings.secrets))

    # -- the log -----------------------------------------------------------------------------

    def append(self, member: str, malformed: str | None = None) -> Appended:
        tp = PARTITIONS[MEMBERS.index(member) % len(PARTITIONS)]
        self._seq += 1
        event_id = f"e-{self._seq:05d}" if malformed is None else None
        if malformed is None:
            value = orjson.dumps(
                {
                    "event_id": event_id,
                    "event_type": "rewards_issued",
                    "schema_version": 1,
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "source": "kognitiv",
                    "member_id": member,
                    "data": {
                        "reward_type": "coffee",
                        "issued_date": "2026-11-20T10:00:00Z",
                        "points": self._seq,
                    },
                }
            )
        else:
            value = MALFORMED[malformed]
        offset = self.log.append(tp, value, member.encode(), [("trace", str(self._seq).encode())])
        appended = Appended(tp, offset, member, event_id, malformed)
        self.ledger.append(appended)
        return appended

    # -- replicas ----------------------------------------------------------------------------

    async def start_replica(self, name: str, partitions: list[TopicPartition]) -> None:
        consumer = MemoryConsumer(log=self.log, assignment=partitions)
        pipeline = DestinationPipeline(
            REGISTRY[DESTINATION],
            self.settings,
            build_sender(DESTINATION, self.settings, self.session),
            self.writer,
            topics=(TOPIC,),
            group_id=f"relay.{DESTINATION}",
            writes_input_errors=True,
            consumer_factory=lambda: consumer,
        )
        await pipeline.start()
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop), name=f"replica-{name}")
        self.replicas[name] = Replica(name, pipeline, consumer, stop, task)
        for tp in partitions:
            self.owner[tp] = name

    async def crash(self, name: str) -> None:
        """Stop a replica the way a killed process stops: no drain, no commit, no leave."""
        replica = self.replicas.pop(name)
        consumed_to = dict(replica.consumer.positions)
        replica.consumer.crash()
        replica.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _bounded(replica.task, f"replica {name} ignores a cancel")
        # only cancels its in-flight work: its commits are refused
        await _bounded(replica.pipeline.drain(0), f"replica {name}: drain(0) after a crash")
        for tp, position in consumed_to.items():
            self._open_window(tp, position)

    async def rebalance(self, assignment: dict[TopicPartition, str]) -> None:
        """An eager rebalance: every live replica gives everything up, then gets its share."""
        live = list(self.replicas.values())
        for replica in live:  # fetching stops here: what was consumed so far is all there is
            replica.consumer.begin_rebalance()
        consumed_to = {
            tp: position for replica in live for tp, position in replica.consumer.positions.items()
        }
        await asyncio.gather(*(replica.consumer.revoke() for replica in live))
        for tp, position in consumed_to.items():
            # work the revoke could not finish in time stays uncommitted: the next owner redoes it
            self._open_window(tp, position)
        self.owner = {tp: name for tp, name in assignment.items() if name in self.replicas}
        for replica in live:
            mine = [tp for tp, name in self.owner.items() if name == replica.name]
            await replica.consumer.assign(mine)

    async def stop_all(self) -> None:
        for replica in list(self.replicas.values()):
            replica.stop.set()
        self.log.wake()
        for replica in list(self.replicas.values()):
            await replica.task
            await replica.pipeline.stop()
        self.replicas.clear()

    def _open_window(self, tp: TopicPartition, consumed_to: int) -> None:
        """Records the replica consumed past the group's commit: the next owner may redo them."""
        start, end = self.log.committed.get(tp, 0), consumed_to
        if end > start:
            self.windows[tp].append((start, end))

    def in_window(self, tp: TopicPartition, offset: int) -> bool:
        return any(start <= offset < end for start, end in self.windows[tp])

    # -- outcomes ----------------------------------------------------------------------------

    def arrivals(self) -> list[tuple[str, str]]:
        """(member, event_id) of every event the simulator accepted, in arrival order."""
        out = []
        for record in list(self.sims.braze.state.received):
            obj = record.get("object") or {}
            if record.get("array") == "events" and obj.get("name") == "rewards_issued":
                out.append((obj["external_id"], obj["properties"]["event_id"]))
        return out

    def dead_letters(self) -> list[tuple[TopicPartition, int, dict[str, bytes]]]:
        out = []
        for produced in self.producer.acknowledged:
            headers = produced.headers
            tp = TopicPartition(
                headers["dlq.original_topic"].decode(), int(headers["dlq.original_partition"])
            )
            out.append((tp, int(headers["dlq.original_offset"]), headers))
        return out

    def settled(self) -> set[tuple[TopicPartition, int]]:
        """Records that arrived at the simulator or have an acknowledged dead letter."""
        received = self.sims.braze.state.received
        for record in received[self._seen_received :]:
            obj = record.get("object") or {}
            if record.get("array") == "events":
                self._arrived.add(obj["properties"]["event_id"])
        self._seen_received = len(received)
        done = {(tp, offset) for tp, offset, _ in self.dead_letters()}
        done.update((a.tp, a.offset) for a in self.ledger if a.event_id in self._arrived)
        return done

    def _check_commit(self, offsets: Any) -> None:
        settled = self.settled()
        for tp, offset in offsets.items():
            previous = self.log.committed.get(tp, 0)
            if offset < previous:
                self.violations.append(
                    f"commit of {tp.partition}@{offset} went back from {previous}"
                )
            missing = [
                a.offset
                for a in self.ledger
                if a.tp == tp and a.offset < offset and (a.tp, a.offset) not in settled
            ]
            if missing:
                self.violations.append(
                    f"commit of {tp.partition}@{offset} passes unsettled offsets {missing[:5]}"
                )

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every record is settled and no replica holds unfinished work."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            idle = all(
                not replica.pipeline.batcher.items_waiting
                and not any(p.outstanding for p in replica.pipeline.progress.values())
                for replica in self.replicas.values()
            )
            if idle and len(self.settled()) == len(self.ledger):
                return
            await asyncio.sleep(0.005)
        unsettled = {(a.tp, a.offset) for a in self.ledger} - self.settled()
        raise AssertionError(
            "\n".join(self.violations[:5]) + "\n"  # a commit past unsettled work comes first
            f"not settled after {timeout:.0f} s: {len(unsettled)} records, e.g. "
            f"{sorted((tp.partition, o) for tp, o in unsettled)[:5]}; steps: {self.steps}"
        )

    # -- the final check ---------------------------------------------------------------------

    def check(self) -> None:
        """Every invariant of the module docstring, after a settle and a graceful stop."""
        problems = list(self.violations)
        by_coordinates = {(a.tp, a.offset): a for a in self.ledger}
        by_event = {a.event_id: a for a in self.ledger if a.event_id}
        outcomes: dict[tuple[TopicPartition, int], int] = defaultdict(int)
        lettered: set[tuple[TopicPartition, int]] = set()
        for tp, offset, headers in self.dead_letters():
            appended = by_coordinates.get((tp, offset))
            reason = headers["dlq.reason"].decode()
            if appended is None:
                problems.append(f"dead letter for a record never appended: {tp.partition}@{offset}")
                continue
            outcomes[(tp, offset)] += 1
            lettered.add((tp, offset))
            if appended.malformed is not None:
                if reason != appended.malformed or headers["dlq.destination"] != b"*":
                    problems.append(f"{tp.partition}@{offset}: malformed, dead-lettered {reason}")
            elif reason not in DELIVERY_REASONS:
                problems.append(f"{appended.event_id}: dead-lettered with reason {reason!r}")
        arrivals = self.arrivals()
        for member, event_id in arrivals:
            appended = by_event.get(event_id)
            if appended is None or appended.member != member:
                problems.append(f"arrival of an unknown event {event_id} for {member}")
                continue
            outcomes[(appended.tp, appended.offset)] += 1
        for appended in self.ledger:
            key = (appended.tp, appended.offset)
            count = outcomes.get(key, 0)
            where = f"{appended.tp.partition}@{appended.offset} ({appended.event_id})"
            if count == 0:
                problems.append(f"{where}: lost (neither delivered nor dead-lettered)")
            elif count > 1 and not self.in_window(*key):
                problems.append(f"{where}: handled {count} times outside a redelivery window")
        problems += self._order_problems(arrivals, by_event, lettered)
        for tp in PARTITIONS:
            end = len(self.log.records[tp])
            if self.log.committed.get(tp, 0) != end:
                problems.append(
                    f"partition {tp.partition}: committed {self.log.committed.get(tp)} after a "
                    f"clean drain, log end {end}"
                )
        assert not problems, "\n".join([*problems[:20], f"steps: {self.steps}"])

    def _order_problems(
        self,
        arrivals: list[tuple[str, str]],
        by_event: dict[str, Appended],
        lettered: set[tuple[TopicPartition, int]],
    ) -> list[str]:
        """Per member: first arrivals in log order, and the last write is the latest event."""
        problems = []
        first: dict[str, list[str]] = defaultdict(list)
        last: dict[str, str] = {}
        seen: set[str] = set()
        for member, event_id in arrivals:
            last[member] = event_id
            if event_id not in seen:
                seen.add(event_id)
                first[member].append(event_id)

        # an event dead-lettered (a 400) and then delivered again after a crash or a forced
        # revoke arrives for the first time on that redelivery, after later events: allowed
        def redelivered(event_id: str) -> bool:
            appended = by_event[event_id]
            key = (appended.tp, appended.offset)
            return key in lettered and self.in_window(*key)

        for member in MEMBERS:
            expected = [
                a.event_id
                for a in self.ledger
                if a.member == member and a.event_id is not None and a.event_id in seen
            ]
            ordered = [e for e in first.get(member, []) if not redelivered(e)]
            if ordered != [e for e in expected if not redelivered(e)]:
                problems.append(f"{member}: first arrivals {first.get(member)} ≠ log {expected}")
                continue
            # a redelivered event may be dead-lettered where its first delivery succeeded:
            # then the member's last write is legitimately an older event
            mixed = any((by_event[e].tp, by_event[e].offset) in lettered for e in expected)
            if expected and not mixed and last[member] != expected[-1]:
                problems.append(
                    f"{member}: last write is {last[member]}, the latest event is {expected[-1]}"
                )
        return problems


async def _bounded(awaitable: Any, what: str, seconds: float = 10.0) -> Any:
    """Await with a bound: a hang is a finding, reported with every task's stack."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        stacks = []
        for task in asyncio.all_tasks():
            frames = task.get_stack(limit=6)
            where = " <- ".join(
                f"{f.f_code.co_filename.split('/')[-1]}:{f.f_code.co_name}:{f.f_lineno}"
                for f in reversed(frames)
            )
            stacks.append(f"{task.get_name()}: {where}")
        raise AssertionError(
            f"{what} (hung {seconds:.0f} s); tasks:\n" + "\n".join(stacks)
        ) from None
