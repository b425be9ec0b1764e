"""The replay ledger: one log that every replay run agrees on about which dead letters it sent.

Topic ``<KAFKA_GROUP_ID>.replayed``, ONE partition, so its order is the single order all runs
see; compacted, key = the dead letter's coordinates (``<dlq topic>/<partition>/<offset>``).
Values are JSON: ``{"state": "claim"|"done"|"release", "run": ..., "replay_id": ...,
"at": <epoch seconds>}``.

A run appends a ``claim`` per dead letter it means to redrive, reads the ledger back past its
own claims and redrives only those it won (``decide``): no ``done`` before its claim and no
other run holding a *live* claim at that point of the log. A claim is live for ``lease``
seconds after its ``at``; a run stops redriving its claimed records ``lease / 2`` after
claiming them, so a claim older than the lease belongs to a run that died or gave up, and may
be taken over. After the redriven copies are acknowledged the run appends ``done``. Claims it
lost, or did not use because it was stopped (Ctrl-C), it ``release``s, so later runs need not
wait out the lease.

Compaction keeps the last record per key. That is the ``done`` unless ``--again`` redrove the
dead letter once more and died before its own ``done``; then the source-partition check
(``worker.replay_scan``) still finds the copies while the source topic retains them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson
import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from worker.config import KafkaSettings
from worker.dlq_read import Coordinates, DlqRecord, PartitionReader
from worker.kafka import connection_options, make_producer, start_with_retry

log = structlog.get_logger("worker.replay")

CLAIM: Final = "claim"
DONE: Final = "done"
RELEASE: Final = "release"  # a run stopped (Ctrl-C) before redriving what it had claimed


def ledger_topic(group_id: str) -> str:
    return f"{group_id}.replayed"


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    state: str
    run: str
    replay_id: str
    at: float  # wall-clock seconds of the process that wrote it


class LedgerUnavailable(Exception):
    """The ledger topic is missing (and could not be created) or has more than one partition."""


class Verdict(StrEnum):
    WON = "won"  # this run redrives it
    DONE = "done"  # an earlier run redrove it
    BUSY = "busy"  # another run holds a live claim on it


def decide(
    entries: Sequence[Entry], run: str, claim_offset: int, *, live_after: float, again: bool
) -> Verdict:
    """What ``run``, whose claim sits at ``claim_offset``, may do with one dead letter.

    ``entries`` are that dead letter's ledger records in log order; only those before the claim
    count. Walking them, a claim takes the dead letter when nobody holds it or the holder's
    claim is stale (written before ``live_after``); a claim made while another run held it
    lost and is ignored; the holder's ``done`` or ``release`` frees it. ``again`` treats a
    ``done`` as a release (the operator forces a redrive) but still respects live claims.
    """
    holder: Entry | None = None
    for entry in entries:
        if entry.offset >= claim_offset:
            break
        if entry.state == DONE and not again:
            return Verdict.DONE
        free = holder is None or holder.at <= live_after or holder.run == entry.run
        if entry.state == CLAIM:
            if free:
                holder = entry
        elif holder is not None and holder.run == entry.run:
            holder = None
    if holder is None or holder.run == run or holder.at <= live_after:
        return Verdict.WON
    return Verdict.BUSY


class Ledger:
    """Reads the ledger to its end, appends claims and ``done`` records, answers questions."""

    def __init__(self, kafka: KafkaSettings, group_id: str, run: str, replay_id: str) -> None:
        self.kafka = kafka
        self.topic = ledger_topic(group_id)
        self.run = run
        self.replay_id = replay_id
        self.entries: dict[str, list[Entry]] = defaultdict(list)
        self._reader = PartitionReader(kafka)
        self._tp = TopicPartition(self.topic, 0)
        self._producer: Any = None
        self.exists = False

    async def open(self, *, create: bool) -> None:
        """Read the whole ledger; create the topic first if ``create`` (replay, not inspect)."""
        if not await self._find_topic(create=create):
            return  # inspect before any replay: nothing was replayed
        await self._reader.start()
        partitions = await self._reader.partitions_of([self.topic])
        if not partitions:
            raise LedgerUnavailable(f"{self.topic} does not exist and could not be created")
        if partitions != [self._tp]:
            raise LedgerUnavailable(
                f"{self.topic} must have exactly one partition, it has {len(partitions)}"
            )
        self.exists = True
        await self._reader.assign({self._tp: None})
        await self._read()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self._reader.stop()

    def done(self, coordinates: Coordinates) -> Entry | None:
        """The first ``done`` record for this dead letter, if any."""
        return next((e for e in self.entries.get(str(coordinates), ()) if e.state == DONE), None)

    async def claim(
        self, coordinates: Sequence[Coordinates], *, live_after: float, again: bool
    ) -> dict[Coordinates, Verdict]:
        """Append a claim for each, read the ledger back past them, and decide each."""
        offsets = await self._append(coordinates, CLAIM)
        if offsets:
            self._reader.extend(self._tp, max(offsets.values()) + 1)
            await self._read()
        return {
            c: decide(
                self.entries[str(c)], self.run, offsets[c], live_after=live_after, again=again
            )
            for c in coordinates
        }

    async def mark_done(self, coordinates: Iterable[Coordinates]) -> None:
        await self._append(list(coordinates), DONE)

    async def release(self, coordinates: Iterable[Coordinates]) -> None:
        await self._append(list(coordinates), RELEASE)

    async def _append(
        self, coordinates: Sequence[Coordinates], state: str
    ) -> dict[Coordinates, int]:
        if not coordinates:
            return {}
        if self._producer is None:
            self._producer = make_producer(self.kafka)
            await start_with_retry(
                self._producer, "replay ledger", self.kafka.unreachable_exit_seconds
            )
        value = orjson.dumps(
            {"state": state, "run": self.run, "replay_id": self.replay_id, "at": time.time()}
        )
        futures = [
            (
                c,
                await self._producer.send(
                    self.topic, value=value, key=str(c).encode(), partition=0
                ),
            )
            for c in coordinates
        ]
        return {c: (await future).offset for c, future in futures}

    async def _read(self) -> None:
        async for record in self._reader.records():
            self._add(record)

    def _add(self, record: DlqRecord) -> None:
        try:
            value = orjson.loads(record.value or b"")
            entry = Entry(
                record.offset,
                str(value["state"]),
                str(value["run"]),
                str(value.get("replay_id", "")),
                float(value["at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("replay_ledger_record_ignored", offset=record.offset)
            return
        if record.key is not None:
            self.entries[record.key.decode("utf-8", "replace")].append(entry)

    async def _find_topic(self, *, create: bool) -> bool:
        """Whether the ledger topic exists (asked without a metadata request that could
        auto-create it with the broker's defaults); with ``create``, create it if missing."""
        admin = AIOKafkaAdminClient(**connection_options(self.kafka))
        await start_with_retry(admin, "admin", self.kafka.unreachable_exit_seconds)
        try:
            if self.topic in set(await admin.list_topics()):
                return True
            if not create:
                return False
            await admin.create_topics(
                [NewTopic(self.topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
            )
            log.info("topics_created", topics=[self.topic], partitions=1)
        except KafkaError as exc:
            log.warning("topics_not_created", topic=self.topic, error=str(exc))
        finally:
            await admin.close()
        return True
