"""aiokafka clients built from settings, topic creation, and start-up retries.

Tansu (the embedded test broker) has no idempotent producer, so the dead-letter producer uses
``acks=all`` without idempotence; a dead letter written twice after a crash is harmless.
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
from aiokafka.errors import KafkaConnectionError, KafkaError

from worker.config import KafkaSettings
from worker.deadletter import DLQ_SUFFIX

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


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[str], give_up_after: float) -> None:
    """Create missing topics and their ``.dlq`` twins; warn (not fail) if the broker refuses."""
    wanted = set()
    for topic in topics:
        wanted.add(topic)
        wanted.add(topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX)
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await start_with_retry(admin, "admin", give_up_after)
    try:
        existing = set(await admin.list_topics())
        missing = sorted(wanted - existing)
        if missing:
            await admin.create_topics(
                [NewTopic(name, kafka.topic_partitions, 1) for name in missing]
            )
            log.info("topics_created", topics=missing, partitions=kafka.topic_partitions)
    except KafkaError as exc:
        log.warning("topics_not_created", error=str(exc), hint="create them before starting")
    finally:
        await admin.close()
