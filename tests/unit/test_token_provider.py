"""Kognitiv's OAuth token provider against the Kognitiv simulator on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from worker.destinations.kognitiv.config import KognitivSettings
from worker.destinations.kognitiv.token import TokenProvider
from worker.devtools.simulators.runner import SimulatorSet
from worker.errors import AuthFailed


@pytest.fixture
async def kognitiv() -> AsyncIterator[tuple[Any, KognitivSettings, aiohttp.ClientSession]]:
    async with SimulatorSet.start() as sims, aiohttp.ClientSession() as session:
        settings = KognitivSettings(
            api_base_url=sims.kognitiv.url,
            client_id="sim-kognitiv-client",
            client_secret="sim-kognitiv-secret",
            token_refresh_margin_seconds=60,
        )
        yield sims.kognitiv.state, settings, session


async def test_concurrent_callers_share_one_token_request(kognitiv: Any) -> None:
    """Fifty concurrent first calls cause exactly one token request."""
    state, settings, session = kognitiv
    provider = TokenProvider(settings, session)
    headers = await asyncio.gather(*(provider.headers() for _ in range(50)))
    assert state.token_requests == 1
    assert len({h["Authorization"] for h in headers}) == 1
    assert "sim-kognitiv-secret" not in repr(provider)


async def test_refresh_ahead_of_expiry_at_half_life(kognitiv: Any) -> None:
    """A 2-second token (shorter than twice the margin) is refreshed after 1 second."""
    state, settings, session = kognitiv
    state.token_lifetime = 2.0
    provider = TokenProvider(settings, session)
    first = await provider.headers()
    await asyncio.sleep(0.5)
    assert await provider.headers() == first
    await asyncio.sleep(0.7)
    assert await provider.headers() != first
    assert state.token_requests == 2


async def test_invalidate_refreshes_once_for_many_401s(kognitiv: Any) -> None:
    """Twenty invalidations with the same stale token cause one refresh."""
    state, settings, session = kognitiv
    provider = TokenProvider(settings, session)
    used = await provider.headers()
    await asyncio.gather(*(provider.invalidate(used) for _ in range(20)))
    fresh = await asyncio.gather(*(provider.headers() for _ in range(20)))
    assert state.token_requests == 2
    assert {h["Authorization"] for h in fresh} != {used["Authorization"]}
    await provider.invalidate(used)  # stale token: no further refresh
    await provider.headers()
    assert state.token_requests == 2


async def test_invalid_client_fails_then_recovers(kognitiv: Any) -> None:
    """invalid_client raises AuthFailed naming the variables; a later refresh succeeds."""
    state, settings, session = kognitiv
    state.clients = {"sim-kognitiv-client": "rotated"}
    provider = TokenProvider(settings, session, retry_seconds=0.2)
    with pytest.raises(AuthFailed) as caught:
        await provider.headers()
    assert "KOGNITIV_CLIENT_SECRET" in str(caught.value)
    assert "sim-kognitiv-secret" not in str(caught.value)
    with pytest.raises(AuthFailed):
        await provider.headers()  # within retry_seconds: no new request
    assert state.token_requests == 1
    state.clients = {"sim-kognitiv-client": "sim-kognitiv-secret"}
    await asyncio.sleep(0.25)
    assert (await provider.headers())["Authorization"].startswith("Bearer ")
    assert state.token_requests == 2
