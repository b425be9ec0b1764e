"""aiokafka clients built from settings, topic creation, and start-up retries.

Tansu (the embedded test broker) has no idempotent producer, so the dead-letter producer uses
``acks=all`` without idempotence; a dead letter written twice after a crash is harmless.

Every consumer reads with ``KAFKA_ISOLATION_LEVEL`` (``read_committed`` by default): records of
aborted upstream transactions are never delivered, dead-lettered or replayed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from worker.config import KafkaSettings
from worker.deadletter import DLQ_SUFFIX
from worker.errors import ConfigError

log = structlog.get_logger("worker.kafka")


def connection_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Security options shared by consumers, producers and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            context.load_cert_chain(
                kafka.ssl_certfile,
                kafka.ssl_keyfile,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


def make_consumer(kafka: KafkaSettings, group_id: str | None, **overrides: Any) -> Any:
    options = {
        **connection_options(kafka),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, kafka.session_timeout_ms // 10),
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "fetch_max_bytes": kafka.fetch_max_bytes,
        "max_partition_fetch_bytes": kafka.max_partition_fetch_bytes,
        "rebalance_timeout_ms": kafka.max_poll_interval_ms,
        "isolation_level": kafka.isolation_level,
        **overrides,
    }
    return AIOKafkaConsumer(**options)


def make_producer(kafka: KafkaSettings, **overrides: Any) -> Any:
    options = {
        **connection_options(kafka),
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_request_size": 8 * 1024 * 1024,
        **overrides,
    }
    return AIOKafkaProducer(**options)


async def start_with_retry(client: Any, what: str, give_up_after: float) -> None:
    """Start an aiokafka client, retrying with backoff while the broker is unreachable."""
    deadline = time.monotonic() + give_up_after
    delay = 0.5
    while True:
        try:
            await client.start()
        except KafkaConnectionError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "broker_unreachable", client=what, error=str(exc), retry_in_s=round(delay, 1)
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
        else:
            return


class TopicsUnavailable(ConfigError):
    """Topics the worker needs are missing and it may not, or could not, create them."""


# When neither the settings nor the broker say (Tansu reports no broker configs): the layout
# the demo, the benchmark and deploy/kubernetes are sized for.
FALLBACK_PARTITIONS = 6
FALLBACK_REPLICATION_FACTOR = 1


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[str], give_up_after: float) -> None:
    """Make sure the topics and their ``.dlq`` twins exist, creating them when allowed.

    Raises :class:`TopicsUnavailable` (a config error: one line, exit 2) naming the topics when
    one is missing and ``KAFKA_CREATE_TOPICS=false``, or when the broker refuses to create one.
    A client error on the way (the broker busy, a timeout) is logged and start-up goes on.
    """
    wanted = set()
    for topic in topics:
        wanted.add(topic)
        wanted.add(topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX)
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await start_with_retry(admin, "admin", give_up_after)
    try:
        missing = sorted(wanted - set(await admin.list_topics()))
        if not missing:
            return
        if not kafka.create_topics:
            raise TopicsUnavailable(
                f"missing topics and KAFKA_CREATE_TOPICS=false: {', '.join(missing)}"
                " (create them, or allow the worker to)"
            )
        partitions, replicas, source = await _topic_layout(admin, kafka)
        response = await admin.create_topics(
            [NewTopic(name, partitions, replicas) for name in missing]
        )
        refused = [
            _refusal(error)
            for error in response.topic_errors
            if error[1] not in (0, TopicAlreadyExistsError.errno)
        ]
        if refused:
            raise TopicsUnavailable(
                f"cannot create topics with {partitions} partitions and replication factor"
                f" {replicas}: {'; '.join(refused)} (set KAFKA_TOPIC_PARTITIONS and"
                " KAFKA_TOPIC_REPLICATION_FACTOR, or create the topics and set"
                " KAFKA_CREATE_TOPICS=false)"
            )
        log.info(
            "topics_created",
            topics=missing,
            partitions=partitions,
            replication_factor=replicas,
            layout_from=source,
        )
    except KafkaError as exc:
        log.warning("topics_not_checked", error=str(exc), hint="create them before starting")
    finally:
        await admin.close()


async def _topic_layout(admin: Any, kafka: KafkaSettings) -> tuple[int, int, str]:
    """(partitions, replication factor, where they came from) for new topics.

    aiokafka speaks CreateTopics v0-v3, which cannot ask for "the broker's default" (-1 needs
    v4), so the defaults are read from the broker's ``num.partitions`` and
    ``default.replication.factor`` instead.
    """
    if kafka.topic_partitions is not None and kafka.topic_replication_factor is not None:
        return kafka.topic_partitions, kafka.topic_replication_factor, "settings"
    reported = await _broker_defaults(admin)
    partitions = kafka.topic_partitions or reported.get("num.partitions")
    replicas = kafka.topic_replication_factor or reported.get("default.replication.factor")
    if partitions is None or replicas is None:
        log.warning(
            "broker_topic_defaults_unknown",
            fallback_partitions=FALLBACK_PARTITIONS,
            fallback_replication_factor=FALLBACK_REPLICATION_FACTOR,
            hint="set KAFKA_TOPIC_PARTITIONS and KAFKA_TOPIC_REPLICATION_FACTOR",
        )
        return (
            partitions or FALLBACK_PARTITIONS,
            replicas or FALLBACK_REPLICATION_FACTOR,
            "fallback",
        )
    return partitions, replicas, "broker"


async def _broker_defaults(admin: Any) -> dict[str, int]:
    """The broker's num.partitions and default.replication.factor, as far as it tells them."""
    wanted = ("num.partitions", "default.replication.factor")
    try:
        cluster = await admin.describe_cluster()
        node = cluster.get("controller_id")
        if node is None or node < 0:
            node = cluster["brokers"][0]["node_id"]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(node), dict.fromkeys(wanted))]
        )
    except (KafkaError, LookupError) as exc:
        log.warning("broker_configs_unavailable", error=str(exc) or type(exc).__name__)
        return {}
    found: dict[str, int] = {}
    for response in responses:
        for resource in response.resources:
            error_code, entries = resource[0], resource[4]
            if error_code:
                log.warning("broker_configs_refused", error=for_code(error_code).__name__)
                continue
            for entry in entries:
                name, value = entry[0], entry[1]
                if name in wanted and str(value).isdigit() and int(value) > 0:
                    found[name] = int(value)
    return found


def _refusal(topic_error: tuple[Any, ...]) -> str:
    """``name: ErrorName (broker message)`` from a CreateTopics (name, code[, message]) entry."""
    name, code = topic_error[0], topic_error[1]
    message = " ".join(str(topic_error[2]).split()) if len(topic_error) > 2 else ""
    described = f"{name}: {for_code(code).__name__}"
    return f"{described} ({message})" if message and message != "None" else described
