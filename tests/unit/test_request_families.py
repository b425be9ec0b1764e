"""Request families: each has its own slots and limiters, fed only by its own responses.

Braze limits /users/track, non-broadcast trigger sends and broadcast sends separately
(destination-apis.md §6.2); MoEngage limits bulk imports in users and in events per minute
(§6.3). These tests drive the real sender against the in-process simulators.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from worker.app import build_sender
from worker.config import load_settings
from worker.deliver.flow import FamilyFlow
from worker.destinations.base import DeliverySettings, Family, Item, Meter, Request
from worker.destinations.moengage.config import customers, events
from worker.destinations.registry import REGISTRY
from worker.devtools.simulators.runner import SimulatorSet
from worker.events import LoyaltyEvent


@pytest.fixture
async def sims() -> AsyncIterator[tuple[SimulatorSet, aiohttp.ClientSession]]:
    async with SimulatorSet.start() as simulators, aiohttp.ClientSession() as session:
        yield simulators, session


def _event(event_type: str, member: str, data: dict[str, Any]) -> LoyaltyEvent:
    return LoyaltyEvent(
        event_id=f"e-{event_type}-{member}",
        event_type=event_type,
        schema_version=1,
        occurred_at="2026-11-20T10:00:00Z",
        member_id=member,
        source="test",
        data=data,
    )


def _request(settings: Any, event: LoyaltyEvent) -> Request:
    destination = REGISTRY["braze"]
    (item,) = destination.transform(event, settings)
    return destination.build(item.group, [item], settings)


def _item(kind: str) -> Item:
    return Item("transition", kind, {}, b"{}", "m-1", "e-1")


async def test_exhausted_messaging_window_blocks_trigger_sends_only(sims: Any) -> None:
    """Once Braze says the hourly trigger-send window is spent, trigger sends wait for the
    reset while /users/track requests go out at once and its limiter never slows."""
    simulators, session = sims
    braze = simulators.braze.state
    braze.windows["messaging"].limit = braze.windows["messaging"].used + 1
    settings = load_settings(environ=simulators.env())
    dest_settings = settings.destinations["braze"]
    sender = build_sender("braze", settings, session)
    offer = {"offer_id": "o-1", "braze_campaign_id": "welcome"}

    first = await sender.deliver(_request(dest_settings, _event("offer_issued", "s-1", offer)))
    assert first.failed == {}
    messaging, track = sender.flows["messaging"], sender.flows["track"]
    assert messaging.limiter.blocked_for > 60  # X-RateLimit-Remaining: 0 until the clock hour
    second = asyncio.create_task(
        sender.deliver(_request(dest_settings, _event("offer_issued", "s-2", offer)))
    )
    started = time.monotonic()
    for n in range(40):
        reward = _event("rewards_issued", f"r-{n}", {"reward_type": "coffee", "points": 1})
        result = await sender.deliver(_request(dest_settings, reward))
        assert result.failed == {}
    assert time.monotonic() - started < 5.0
    assert track.limiter.blocked_for == 0
    assert track.limiter.effective_rate == settings.delivery["braze"].rate_limit
    assert not second.done()  # still waiting for the messaging window, not sent and refused
    assert [r.status for r in braze.requests if r.endpoint == "/campaigns/trigger/send"] == [201]
    second.cancel()


def test_braze_families_and_their_defaults() -> None:
    """Three families with Braze's documented rates: 1,000/s, 250,000/h and 250/min."""
    settings = load_settings(environ={"BRAZE_REST_ENDPOINT": "https://x", "BRAZE_API_KEY": "k"})
    families = {f.name: f for f in REGISTRY["braze"].families(settings.delivery["braze"])}
    assert {name: [m.per_second for m in f.meters] for name, f in families.items()} == {
        "track": [1000.0],
        "messaging": [pytest.approx(250_000 / 3600)],
        "broadcast": [pytest.approx(250 / 60)],
    }


def test_moengage_limits_are_set_in_users_and_events_per_minute() -> None:
    """MOENGAGE_USERS_PER_MINUTE and MOENGAGE_EVENTS_PER_MINUTE meter customers and events."""
    env = {
        "MOENGAGE_API_ENDPOINT": "https://x",
        "MOENGAGE_WORKSPACE_ID": "w",
        "MOENGAGE_API_KEY": "k",
    }
    defaults = load_settings(environ=env).delivery["moengage"]
    assert (defaults.users_per_minute, defaults.events_per_minute) == (60_000, 60_000)  # type: ignore[attr-defined]
    older = {"MOENGAGE_USERS_PER_MINUTE": "10000", "MOENGAGE_EVENTS_PER_MINUTE": "30000"}
    delivery = load_settings(environ={**env, **older}).delivery["moengage"]
    (family,) = REGISTRY["moengage"].families(delivery)
    assert [(m.unit, m.per_second) for m in family.meters] == [
        ("users", pytest.approx(10_000 / 60)),
        ("events", pytest.approx(30_000 / 60)),
    ]
    request = Request("POST", "u", b"", tuple(map(_item, ["customer", "event", "event"])), "x")
    assert (customers(request), events(request)) == (1.0, 2.0)


async def test_a_spent_users_meter_does_not_delay_event_only_requests() -> None:
    """With the users bucket empty, a request of events alone goes out at once; one carrying a
    customer waits for the users meter to refill."""
    flow = FamilyFlow(
        Family("transition", 4, (Meter("users", 2.0, customers), Meter("events", 1000.0, events)))
    )
    users = Request("POST", "u", b"", (_item("customer"), _item("customer")), "x")
    only_events = Request("POST", "u", b"", (_item("event"),) * 5, "x")
    await flow.acquire(users)  # spends the 2-user burst
    started = time.monotonic()
    await flow.acquire(only_events)
    assert time.monotonic() - started < 0.05
    await flow.acquire(users)
    assert time.monotonic() - started >= 0.8


async def test_braze_simulator_answers_each_family_with_its_own_window(sims: Any) -> None:
    """/users/track, trigger sends and broadcasts each carry their own X-RateLimit-* window,
    and a 429 for a spent trigger-send window does not touch /users/track's window."""
    simulators, session = sims
    base = simulators.braze.url
    headers = {"Authorization": "Bearer sim-braze-key", "Content-Type": "application/json"}
    recipient = {"external_user_id": "m-1"}
    calls = {
        "track": ("/users/track", {"attributes": [{"external_id": "m-1", "tier": "gold"}]}),
        "messaging": ("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [recipient]}),
        "broadcast": ("/canvas/trigger/send", {"canvas_id": "v", "broadcast": True}),
    }
    limits = {}
    for family, (path, body) in calls.items():
        async with session.post(base + path, data=orjson.dumps(body), headers=headers) as resp:
            assert resp.status == 201, (family, await resp.text())
            limits[family] = (
                resp.headers["X-RateLimit-Limit"],
                resp.headers["X-RateLimit-Remaining"],
            )
    assert limits == {
        "track": ("3000", "2999"),
        "messaging": ("250000", "249999"),
        "broadcast": ("250", "249"),
    }
    window = simulators.braze.state.windows["messaging"]
    window.limit = window.used
    path, body = calls["messaging"]
    async with session.post(base + path, data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 429
        assert resp.headers["X-RateLimit-Remaining"] == "0"
    path, body = calls["track"]
    async with session.post(base + path, data=orjson.dumps(body), headers=headers) as resp:
        assert (resp.status, resp.headers["X-RateLimit-Limit"]) == (201, "3000")
        assert int(resp.headers["X-RateLimit-Remaining"]) >= 2998  # its own 3-second window


def test_plain_delivery_settings_get_the_destination_defaults_they_do_not_set() -> None:
    """A sender built with plain DeliverySettings still gets every Braze family; what the
    settings say wins, the rest are Braze's defaults."""
    families = REGISTRY["braze"].request_families(DeliverySettings(concurrency=3))
    assert [(f.name, f.concurrency) for f in families] == [
        ("track", 3),
        ("messaging", 8),
        ("broadcast", 2),
    ]
    assert families[0].meters[0].per_second == 1000.0
