"""Realistic loyalty events (and some bad ones) for the demo, `produce-sample` and `bench`."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from worker.config import KafkaSettings

TOPIC_FOR: Final[Mapping[str, str]] = {
    "rewards_issued": "loyalty.rewards_issued",
    "member_enrolled": "loyalty.enrollments",
    "offer_issued": "loyalty.offers_issued",
    "audience_membership_changed": "loyalty.audience_membership",
}
_CITIES: Final = (
    ("US", "Chicago", "America/Chicago"),
    ("FR", "Lyon", "Europe/Paris"),
    ("CA", "Toronto", "America/Toronto"),
    ("AU", "Sydney", "Australia/Sydney"),
)
_NAMES: Final = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Katherine", "Dennis", "Barbara")
_REWARDS: Final = ("free_coffee", "birthday_treat", "tier_bonus", "double_points")
_AUDIENCES: Final = ("vip", "lapsed_90d", "coffee_lovers", "high_spenders")


@dataclass(frozen=True, slots=True)
class SampleRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    event_type: str  # "invalid:<why>" for the bad ones


def member_id(index: int) -> str:
    return f"member-{index:06d}"


def make_event(
    event_type: str, member: str, sequence: int, rng: random.Random, *, when: datetime | None = None
) -> dict[str, Any]:
    """One valid event of ``event_type`` for ``member``."""
    occurred = when or datetime.now(UTC)
    stamp = occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, Any]
    if event_type == "rewards_issued":
        data = {
            "reward_type": rng.choice(_REWARDS),
            "issued_date": stamp,
            "issued_location_name": f"Store #{rng.randint(1, 400)}",
            "reward_id": f"rw-{sequence}",
            "points": rng.choice((50, 100, 250, 500)),
        }
    elif event_type == "member_enrolled":
        country, city, zone = rng.choice(_CITIES)
        first = rng.choice(_NAMES)
        data = {
            "email": f"{first.lower()}.{member}@example.com",
            "first_name": first,
            "last_name": "Sample",
            "country": country,
            "home_city": city,
            "time_zone": zone,
            "points_available": rng.randint(0, 5000),
            "email_contact_allowed": True,
            "sms_contact_allowed": rng.random() < 0.5,
            "email_subscribe": "opted_in",
            "date_joined": stamp,
        }
    elif event_type == "offer_issued":
        data = {
            "offer_id": f"offer-{rng.randint(1, 50)}",
            "user_offer_id": f"uo-{sequence}",
            "offer_title": "20% off your next visit",
            "description": "Show this offer at the till.",
            "expires_at": (occurred + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
            "points_award_amount": 100,
            "point_account_name": "Stars",
        }
        if rng.random() < 0.3:
            data["braze_campaign_id"] = "campaign-welcome-offer"
    else:
        data = {"audience": rng.choice(_AUDIENCES), "action": rng.choice(("add", "add", "remove"))}
        if data["action"] == "add" and rng.random() < 0.5:
            data["ttl_seconds"] = 2_592_000
    return {
        "event_id": f"evt-{sequence:08d}-{rng.getrandbits(32):08x}",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": stamp,
        "source": "kognitiv" if event_type != "offer_issued" else "sessionm",
        "member_id": member,
        "data": data,
    }


def sample_records(
    count: int,
    *,
    bad: int = 0,
    members: int = 50,
    seed: int = 7,
    mix: Mapping[str, float] | None = None,
) -> Iterator[SampleRecord]:
    """``count`` valid events in a weighted mix, then ``bad`` malformed ones of every kind."""
    rng = random.Random(seed)
    weights = mix or {
        "rewards_issued": 0.4,
        "member_enrolled": 0.2,
        "offer_issued": 0.2,
        "audience_membership_changed": 0.2,
    }
    types = list(weights)
    for sequence in range(count):
        event_type = rng.choices(types, weights=[weights[t] for t in types])[0]
        member = member_id(rng.randrange(members))
        event = make_event(event_type, member, sequence, rng)
        yield SampleRecord(TOPIC_FOR[event_type], member.encode(), orjson.dumps(event), event_type)
    for index, (why, value) in enumerate(bad_values(rng)):
        if index >= bad:
            break
        yield SampleRecord("loyalty.rewards_issued", b"member-bad", value, f"invalid:{why}")


def bad_values(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    good = make_event("rewards_issued", "member-bad", 0, rng)
    yield "invalid_json", b'{"event_id": "broken", '
    yield "invalid_utf8", b"\xff\xfe not text"
    missing = dict(good)
    del missing["member_id"]
    yield "missing_member_id", orjson.dumps(missing)
    yield "unknown_event_type", orjson.dumps({**good, "event_type": "points_transferred"})
    yield "unknown_schema_version", orjson.dumps({**good, "schema_version": 2})
    yield "schema_violation", orjson.dumps({**good, "data": {"issued_date": "yesterday"}})
    yield "not_an_object", b"[1, 2, 3]"


async def produce_sample(kafka: KafkaSettings, *, count: int, bad: int, seed: int) -> int:
    """Produce a sample to the default topics; returns how many records were written."""
    from worker.kafka import ensure_topics, make_producer, start_with_retry

    await ensure_topics(kafka, TOPIC_FOR.values(), 60)
    producer = make_producer(kafka)
    await start_with_retry(producer, "producer", 60)
    written = 0
    try:
        futures = []
        for record in sample_records(count, bad=bad, seed=seed):
            futures.append(await producer.send(record.topic, value=record.value, key=record.key))
            written += 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    print(f"produced {written} records ({count} good, {min(bad, 7)} bad)")
    return written
