"""The shared sender against the strict simulators: MoEngage bulk bisection, SessionM answers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from worker.config import DeliverySettings
from worker.deliver.sender import Sender
from worker.destinations.moengage import DESTINATION as MOENGAGE
from worker.destinations.moengage.config import MoEngageSettings
from worker.destinations.sessionm import DESTINATION as SESSIONM
from worker.destinations.sessionm.config import SessionMSettings
from worker.devtools.simulators.runner import SimulatorSet
from worker.events import LoyaltyEvent

FAST = DeliverySettings(max_attempts=2, backoff_base_seconds=0.01, backoff_cap_seconds=0.02)


@pytest.fixture
async def sims() -> AsyncIterator[tuple[SimulatorSet, aiohttp.ClientSession]]:
    async with (
        SimulatorSet.start(rate_limits=False) as simulators,
        aiohttp.ClientSession() as session,
    ):
        yield simulators, session


def _reward(i: int, extra: Any = None) -> LoyaltyEvent:
    data: dict[str, Any] = {"reward_type": "coffee", "points": i}
    if extra is not None:
        data["extra"] = extra
    return LoyaltyEvent(f"e-{i}", "rewards_issued", 1, "2026-11-20T10:00:00Z", f"m-{i}", None, data)


def _moengage(sims: SimulatorSet, **changes: Any) -> MoEngageSettings:
    return MoEngageSettings(
        api_endpoint=sims.moengage.url,
        workspace_id="sim-workspace",
        api_key="sim-moengage-key",
        **changes,
    )


def _bulk(settings: MoEngageSettings, count: int, bad: set[int]) -> Any:
    items = []
    for i in range(count):
        items += MOENGAGE.transform(_reward(i, {"nested": i} if i in bad else None), settings)
    return MOENGAGE.build("transition", items, settings)


def _delivered_ids(sims: SimulatorSet) -> list[str]:
    return [a["attributes"]["event_id"] for a in sims.moengage.state.actions()]


@pytest.mark.parametrize(
    ("count", "bad"), [(500, {0}), (500, {499}), (300, {137}), (64, {0, 63}), (2, {1})]
)
async def test_a_bulk_refused_for_one_element_is_bisected_and_only_it_fails(
    sims: Any, count: int, bad: set[int]
) -> None:
    """MoEngage 400 for the whole bulk: halves are retried until the bad element is alone."""
    simulators, session = sims
    # the worker believes the workspace has the Object data type; the simulator's has not
    settings = _moengage(simulators, object_attributes=True)
    request = _bulk(settings, count, bad)
    sender = Sender(MOENGAGE, settings, FAST, session)
    result = await sender.deliver(request)
    assert set(result.failed) == bad
    assert {f.reason for f in result.failed.values()} == {"permanent_http_error"}
    assert {f.http_status for f in result.failed.values()} == {400}
    assert "Object data type" in next(iter(result.failed.values())).error
    assert _delivered_ids(simulators) == [f"e-{i}" for i in range(count) if i not in bad]
    requests = len(simulators.moengage.state.requests)
    print(f"{count} elements ({len(request.body)} bytes), bad {sorted(bad)}: {requests} requests")
    assert requests <= 1 + 2 * len(bad) * math.ceil(math.log2(count))
    assert requests <= 1 + settings.bulk_split_max_requests


async def test_bisection_stops_at_its_budget_and_dead_letters_what_is_unresolved(
    sims: Any,
) -> None:
    """With a budget of 2 extra requests the good half is delivered and the bad half fails."""
    simulators, session = sims
    settings = _moengage(simulators, object_attributes=True, bulk_split_max_requests=2)
    sender = Sender(MOENGAGE, settings, FAST, session)
    result = await sender.deliver(_bulk(settings, 8, {6}))
    assert set(result.failed) == {4, 5, 6, 7}
    assert _delivered_ids(simulators) == ["e-0", "e-1", "e-2", "e-3"]
    assert len(simulators.moengage.state.requests) == 3


async def test_a_refusal_no_element_causes_is_not_bisected(sims: Any) -> None:
    """A 401 (bad key) fails the request once: bisecting it could not help."""
    simulators, session = sims
    settings = _moengage(simulators)
    wrong = MoEngageSettings.model_validate({**settings.model_dump(), "api_key": "wrong"})
    result = await Sender(MOENGAGE, wrong, FAST, session).deliver(_bulk(settings, 16, set()))
    assert len(result.failed) == 16
    assert {f.http_status for f in result.failed.values()} == {401}
    assert len(simulators.moengage.state.requests) == 1


def _tags(settings: SessionMSettings, member: str, identifiers: dict[str, str]) -> Any:
    event = LoyaltyEvent(
        "e",
        "audience_membership_changed",
        1,
        "2026-11-20T10:00:00Z",
        member,
        None,
        {"audience": "vip", "action": "add"},
        identifiers,
    )
    (item,) = SESSIONM.transform(event, settings)
    return SESSIONM.build(item.group, [item], settings)


async def test_unknown_sessionm_users_never_open_the_breaker(sims: Any) -> None:
    """Ten per-user permanent answers in a row are dead letters, not an outage."""
    simulators, session = sims
    state = simulators.sessionm.state
    state.known_external_ids = {"someone-else"}
    state.user_errors = {"s-1": "REQUIRES_REGISTERED_USER", "s-2": "not_found"}
    settings = SessionMSettings(
        core_endpoint=simulators.sessionm.url,
        api_key="sim-sessionm-key",
        api_secret="sim-sessionm-secret",
    )
    sender = Sender(SESSIONM, settings, FAST.model_copy(update={"breaker_threshold": 2}), session)
    for i in range(10):
        result = await sender.deliver(_tags(settings, f"m-{i}", {}))
        assert result.failed[0].reason == "permanent_http_error"
        assert "user_not_found" in result.failed[0].error
    for user in ("s-1", "s-2"):
        result = await sender.deliver(_tags(settings, "m-x", {"sessionm": user}))
        assert result.failed[0].reason == "permanent_http_error"
    assert sender.breaker.closed and sender.healthy
    result = await sender.deliver(_tags(settings, "someone-else", {}))
    assert not result.failed
    assert [(r["path"], r["user_id"]) for r in state.received] == [("external", "someone-else")]


async def test_refused_sessionm_credentials_pause_without_dead_letters_then_resume(
    sims: Any,
) -> None:
    """access_denied makes lag, not dead letters: the call waits and goes through once fixed."""
    simulators, session = sims
    state = simulators.sessionm.state
    state.credentials = {"sim-sessionm-key": "rotated-elsewhere"}
    settings = SessionMSettings(
        core_endpoint=simulators.sessionm.url,
        api_key="sim-sessionm-key",
        api_secret="sim-sessionm-secret",
    )
    sender = Sender(SESSIONM, settings, FAST, session)
    delivery = asyncio.create_task(sender.deliver(_tags(settings, "m-1", {})))
    for _ in range(50):
        if not sender.healthy:
            break
        await asyncio.sleep(0.1)
    assert not sender.healthy and not delivery.done()
    state.credentials = {"sim-sessionm-key": "sim-sessionm-secret"}
    result = await asyncio.wait_for(delivery, 30)
    assert not result.failed and sender.healthy
    assert [r["user_id"] for r in state.received] == ["m-1"]
