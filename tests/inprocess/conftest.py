"""One event loop, one set of simulators and one HTTP session for every in-process case.

Hypothesis runs a state machine's rules as plain calls, so the cases share an
``asyncio.Runner`` (its loop keeps the simulators and the pipelines' tasks alive between
rules) instead of pytest-asyncio's loop per test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
import structlog

from tests.inprocess.world import fast_settings
from worker.config import Settings
from worker.devtools.simulators.runner import SimulatorSet

T = TypeVar("T")


@dataclass
class Loop:
    runner: asyncio.Runner
    sims: Any
    session: aiohttp.ClientSession
    settings: Settings

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return self.runner.run(wrapped())


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    """Errors only (after the root conftest's reset): the pipelines log every batch at info."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    with asyncio.Runner() as runner:
        sims_context = SimulatorSet.start(rate_limits=False)
        sims = runner.run(sims_context.__aenter__())

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession()

        session = runner.run(open_session())
        try:
            yield Loop(runner, sims, session, fast_settings(sims.env()))
        finally:
            runner.run(session.close())
            runner.run(sims_context.__aexit__(None, None, None))
