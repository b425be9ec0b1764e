"""A throttle waits as the server says and spends no retry budget; other failures do.

The Braze simulator answers 429 with its window's ``X-RateLimit-*`` headers; here its
``/users/track`` window allows one request per window.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from worker.config import DeliverySettings
from worker.deliver.sender import Sender
from worker.destinations.braze.config import BrazeSettings
from worker.destinations.registry import REGISTRY
from worker.devtools.simulators.common import Window
from worker.devtools.simulators.runner import SimulatorSet
from worker.events import LoyaltyEvent


@pytest.fixture
async def braze() -> AsyncIterator[tuple[Any, BrazeSettings, aiohttp.ClientSession]]:
    async with SimulatorSet.start() as sims, aiohttp.ClientSession() as session:
        settings = BrazeSettings(rest_endpoint=sims.braze.url, api_key=SecretStr("sim-braze-key"))
        yield sims.braze, settings, session


def _window(sim: Any, seconds: float) -> Window:
    """One /users/track request per window, the window starting now (reset in ``seconds``)."""
    window = Window(1, seconds)
    window.start = time.time()
    sim.state.windows["track"] = window
    return window


def _request(settings: BrazeSettings, member: str) -> Any:
    destination = REGISTRY["braze"]
    event = LoyaltyEvent(
        event_id=f"e-{member}",
        event_type="rewards_issued",
        schema_version=1,
        occurred_at="2026-11-20T10:00:00Z",
        member_id=member,
        source="kognitiv",
        data={"reward_type": "coffee", "issued_date": "2026-11-20T10:00:00Z"},
    )
    items = destination.transform(event, settings)
    return destination.build(items[0].group, items, settings)


async def test_a_reset_beyond_the_retry_budget_is_waited_for_not_dead_lettered(
    braze: Any,
) -> None:
    sim, settings, session = braze
    delivery = DeliverySettings(max_retry_seconds=1.0, backoff_base_seconds=0.05)
    sender = Sender(REGISTRY["braze"], settings, delivery, session)
    _window(sim, 3.0)

    first = await sender.deliver(_request(settings, "m-1"))
    assert first.failed == {} and first.status == 201

    started = time.monotonic()
    second = await sender.deliver(_request(settings, "m-2"))
    waited = time.monotonic() - started
    # the server said "in about 3 s", three times the budget: the request waited and went through
    assert second.failed == {}, second.failed
    assert second.status == 201
    assert waited >= 1.5, waited
    statuses = [r.status for r in sim.state.requests]
    assert statuses[0] == 201 and statuses[-1] == 201 and 429 in statuses, statuses


async def test_server_errors_still_spend_the_budget_and_then_dead_letter(braze: Any) -> None:
    sim, settings, session = braze
    sim.state.faults.update({"status": 503, "status_probability": 1.0})
    delivery = DeliverySettings(max_retry_seconds=1.0, backoff_base_seconds=0.3)
    sender = Sender(REGISTRY["braze"], settings, delivery, session)
    started = time.monotonic()
    result = await sender.deliver(_request(settings, "m-1"))
    waited = time.monotonic() - started
    assert {f.reason for f in result.failed.values()} == {"retries_exhausted"}
    assert 0.9 <= waited < 5.0, waited
    assert result.attempts >= 2
