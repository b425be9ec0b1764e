"""Topic creation at start: layout from the settings or the broker, or refuse when not allowed."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from tests.support import REPO
from worker.config import KafkaSettings
from worker.devtools.embedded_broker import run_in_fresh_loop
from worker.kafka import FALLBACK_PARTITIONS, TopicsUnavailable, ensure_topics

pytestmark = pytest.mark.integration


def _names(*bases: str) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"topics-{run}.{base}" for base in bases]


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        listed = set(await admin.list_topics())  # never auto-creates (a describe can, on Tansu)
        present = [t for t in topics if t in listed]
        described = await admin.describe_topics(present) if present else []
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


async def _reported_num_partitions(bootstrap: str) -> int | None:
    """The broker's own num.partitions, when it answers DescribeConfigs (Tansu does not)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        node = (await admin.describe_cluster())["brokers"][0]["node_id"]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(node), {"num.partitions": None})]
        )
    except KafkaError:
        return None
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "num.partitions":
                    return int(entry[1])
    return None


async def test_configured_layout_applies_to_topics_and_their_dlq_twins(
    kafka_bootstrap: str,
) -> None:
    """KAFKA_TOPIC_PARTITIONS / _REPLICATION_FACTOR shape the topics and the .dlq twins alike."""
    topics = _names("a", "b")
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topics=tuple(topics),
        topic_partitions=2,
        topic_replication_factor=1,
    )
    await ensure_topics(kafka, kafka.topics, 30)
    counts = await _partition_counts(kafka_bootstrap, [*topics, *(t + ".dlq" for t in topics)])
    assert counts == dict.fromkeys([*topics, *(t + ".dlq" for t in topics)], 2)


async def test_default_layout_is_the_brokers(kafka_bootstrap: str) -> None:
    """Unset, new topics get the broker's num.partitions (the fallback where it is not told)."""
    topics = _names("c")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=tuple(topics))
    await ensure_topics(kafka, kafka.topics, 30)
    expected = await _reported_num_partitions(kafka_bootstrap) or FALLBACK_PARTITIONS
    counts = await _partition_counts(kafka_bootstrap, [topics[0], topics[0] + ".dlq"])
    assert counts == {topics[0]: expected, topics[0] + ".dlq": expected}


async def test_replication_factor_the_cluster_cannot_meet(
    kafka_bootstrap: str, broker_kind: str
) -> None:
    """Apache Kafka refuses 3 replicas on one broker: a one-line error naming topic and cause."""
    topics = _names("d")
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topics=tuple(topics), topic_replication_factor=3
    )
    if broker_kind == "tansu":  # Tansu has no replicas and accepts any factor (a known quirk)
        await ensure_topics(kafka, kafka.topics, 30)
        return
    with pytest.raises(TopicsUnavailable) as caught:
        await ensure_topics(kafka, kafka.topics, 30)
    message = str(caught.value)
    assert f"{topics[0]}: InvalidReplicationFactorError" in message
    assert f"{topics[0]}.dlq: InvalidReplicationFactorError" in message
    assert "KAFKA_TOPIC_REPLICATION_FACTOR" in message
    assert len(message.splitlines()) == 1
    assert await _partition_counts(kafka_bootstrap, [topics[0]]) == {}


async def test_create_topics_false_accepts_existing_topics(kafka_bootstrap: str) -> None:
    """With KAFKA_CREATE_TOPICS=false, topics and twins that exist are fine."""
    topics = _names("e")
    await ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=tuple(topics)), topics, 30
    )
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topics=tuple(topics), create_topics=False
    )
    await ensure_topics(kafka, kafka.topics, 30)


def test_missing_topic_with_create_topics_false_stops_the_worker_with_exit_2(
    kafka_bootstrap: str,
) -> None:
    """`run` with KAFKA_CREATE_TOPICS=false and a missing topic: one line naming it, exit 2."""
    present, absent = _names("present", "absent")
    run_in_fresh_loop(
        ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [present], 30)
    )
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPICS": f"{present},{absent}",
            "KAFKA_CREATE_TOPICS": "false",
            "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9",
            "BRAZE_API_KEY": "k-topics-test",
            "METRICS_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert errors == [
        f"loyalty-relay: configuration error: missing topics and KAFKA_CREATE_TOPICS=false: "
        f"{absent}, {absent}.dlq (create them, or allow the worker to)"
    ], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert present not in errors[0]
