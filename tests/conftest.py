"""Shared fixtures: the Kafka broker (tests/brokers.py), simulators and a worker factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.brokers import broker_kind, kafka_bootstrap, topic_factory  # noqa: F401
from tests.support import WorkerProcess


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (tests never cache loggers)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
async def simulators() -> AsyncIterator[Any]:
    """The four destination simulators on free loopback ports."""
    from worker.devtools.simulators.runner import SimulatorSet

    async with SimulatorSet.start() as sims:
        yield sims


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    """Start `loyalty-relay run` subprocesses; every one still running is killed afterwards."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "worker") -> WorkerProcess:
        process = WorkerProcess(env, tmp_path / f"{name}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
