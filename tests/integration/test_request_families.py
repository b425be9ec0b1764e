"""Braze request families end to end: a spent trigger-send window leaves /users/track alone.

Braze limits /users/track (3,000 requests per 3 s), non-broadcast trigger sends (250,000 per
hour, campaigns and canvases together) and broadcast sends separately, and each response's
``X-RateLimit-*`` headers describe its own family only (destination-apis.md §6.2). The worker
keeps one limiter per family, so members with no trigger send waiting keep flowing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from tests.support import event, produce, wait_for

pytestmark = pytest.mark.integration

SENDS = 6
WINDOW = 2  # trigger sends allowed in the simulator's hourly window
REWARDS = 600


def _sends(sims: Any) -> list[Any]:
    return [r for r in sims.braze.state.requests if r.endpoint == "/campaigns/trigger/send"]


def _rewards_at_braze(sims: Any) -> list[dict[str, Any]]:
    return [
        r["object"]
        for r in sims.braze.state.received
        if r["array"] == "events" and r["object"]["name"] == "rewards_issued"
    ]


async def test_spent_trigger_send_window_does_not_slow_users_track(
    kafka_bootstrap: str, topic_factory: Any, simulators: Any, worker_factory: Any
) -> None:
    """With Braze's hourly trigger-send window spent after two sends, 600 rewards for other
    members all reach /users/track within seconds and no /users/track request is throttled."""
    rewards_topic, offers_topic = topic_factory("rewards_issued", "offers_issued")
    window = simulators.braze.state.windows["messaging"]
    window.limit = window.used + WINDOW
    env = {
        **{k: v for k, v in simulators.env().items() if k.startswith("BRAZE_")},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPICS": f"{rewards_topic},{offers_topic}",
        "KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RELAY_DRAIN_SECONDS": "2",
    }
    worker = worker_factory(env)
    offers = [
        event(
            "offer_issued",
            f"s-{n}",
            f"o-{n}",
            {"offer_id": f"o-{n}", "braze_campaign_id": f"c-{n}"},
        )
        for n in range(SENDS)  # one campaign each: one trigger send each
    ]
    await produce(
        kafka_bootstrap, [(offers_topic, o["member_id"].encode(), orjson.dumps(o)) for o in offers]
    )
    await wait_for(
        lambda: sum(r.status == 201 for r in _sends(simulators)) == WINDOW,
        60,
        "the trigger-send window spent",
    )
    await asyncio.sleep(1.0)  # sends already in flight when the window ran out get their 429
    statuses = sorted(r.status for r in _sends(simulators))
    assert statuses == [201] * WINDOW + [429] * (len(statuses) - WINDOW), statuses

    began = time.time()
    rewards = [
        event(
            "rewards_issued",
            f"r-{n % 100}",
            f"e-{n}",
            {"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z"},
        )
        for n in range(REWARDS)
    ]
    await produce(
        kafka_bootstrap,
        [(rewards_topic, r["member_id"].encode(), orjson.dumps(r)) for r in rewards],
    )
    await wait_for(
        lambda: len(_rewards_at_braze(simulators)) >= REWARDS, 60, "every reward at Braze"
    )
    took = time.time() - began

    assert sorted(e["properties"]["event_id"] for e in _rewards_at_braze(simulators)) == sorted(
        r["event_id"] for r in rewards
    )
    track = [r for r in simulators.braze.state.requests if r.endpoint == "/users/track"]
    assert track and all(r.status == 201 for r in track), {r.status for r in track}
    assert took < 30, f"rewards took {took:.1f} s behind a spent trigger-send window"
    # the refused trigger sends wait for their own window's reset instead of retrying into it
    assert not [r for r in _sends(simulators) if r.at >= began]
    worker.terminate()
