"""INGEST_* settings, from the environment; errors are one-line ConfigErrors naming the variable.

The Kafka connection and the nesting limit come from the worker's settings (``KAFKA_*``,
``RELAY_MAX_NESTING_DEPTH``, ``--config``); the ingest needs no destination. Tokens come from
``INGEST_TOKEN`` or the file named by ``INGEST_TOKEN_FILE``, several separated by commas or new
lines (for rotation: add the new token, switch the senders, remove the old one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from worker.config import KafkaSettings, Settings, load_settings
from worker.errors import ConfigError
from worker.events import EVENT_TYPES

# the README's default topic per event type (the worker's KAFKA_TOPICS default, in this order)
DEFAULT_TOPICS: Final[Mapping[str, str]] = {
    "rewards_issued": "loyalty.rewards_issued",
    "member_enrolled": "loyalty.enrollments",
    "offer_issued": "loyalty.offers_issued",
    "audience_membership_changed": "loyalty.audience_membership",
}
MIN_TOKEN_LENGTH: Final = 16
_SHARED: Final = ("KAFKA_", "LOG_LEVEL", "RELAY_MAX_NESTING_DEPTH")
ENVIRONMENT: Final[Mapping[str, str]] = {
    "INGEST_HOST": "host",
    "INGEST_PORT": "port",
    "INGEST_MAX_BODY_BYTES": "max_body_bytes",
    "INGEST_MAX_ITEMS": "max_items",
    "INGEST_RATE_LIMIT": "rate_limit",
    "INGEST_RATE_BURST": "rate_burst",
    "INGEST_PRODUCE_TIMEOUT_SECONDS": "produce_timeout_seconds",
    "INGEST_RETRY_AFTER_SECONDS": "retry_after_seconds",
    "INGEST_DRAIN_SECONDS": "drain_seconds",
}


class IngestSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    tokens: tuple[SecretStr, ...] = Field(min_length=1, repr=False)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_items: int = Field(default=500, ge=1)
    # requests per second per token (a token bucket of rate_burst requests); 0 = no limit
    rate_limit: float = Field(default=50.0, ge=0)
    rate_burst: int = Field(default=100, ge=1)
    # how long a request waits for the broker to acknowledge every record before a 503
    produce_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_after_seconds: int = Field(default=5, ge=1)
    drain_seconds: float = Field(default=10.0, gt=0)
    topics: Mapping[str, str] = Field(default_factory=lambda: dict(DEFAULT_TOPICS))


@dataclass(frozen=True)
class IngestConfig:
    ingest: IngestSettings
    kafka: KafkaSettings
    log_level: str
    # the worker's RELAY_MAX_NESTING_DEPTH, so the ingest refuses what the worker would
    max_nesting_depth: int
    secrets: tuple[str, ...] = field(default=(), repr=False)


def load_ingest_config(
    config_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> IngestConfig:
    env = dict(os.environ if environ is None else environ)
    # only the Kafka and logging settings matter here: a pod that shares the worker's ConfigMap
    # but not its destination keys must not fail on them (a --config file is read whole, with
    # the whole environment, exactly as the worker reads it)
    shared = env if config_file else {k: v for k, v in env.items() if k.startswith(_SHARED)}
    settings: Settings = load_settings(config_file, shared, require_destination=False)
    raw: dict[str, Any] = {key: env[name] for name, key in ENVIRONMENT.items() if env.get(name)}
    raw["tokens"] = _tokens(env)
    raw["topics"] = _topics(env.get("INGEST_TOPICS", ""))
    try:
        ingest = IngestSettings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        variable = next((n for n, k in ENVIRONMENT.items() if k == key), f"INGEST_{key.upper()}")
        raise ConfigError(f"{variable}: {error['msg']}") from None
    tokens = tuple(t.get_secret_value() for t in ingest.tokens)
    return IngestConfig(
        ingest=ingest,
        kafka=settings.kafka,
        log_level=settings.worker.log_level,
        max_nesting_depth=settings.worker.max_nesting_depth,
        secrets=(*settings.secrets, *tokens),
    )


def _tokens(env: Mapping[str, str]) -> tuple[str, ...]:
    variable = "INGEST_TOKEN"
    text = env.get(variable, "")
    if env.get("INGEST_TOKEN_FILE"):
        variable = "INGEST_TOKEN_FILE"
        try:
            text = Path(env["INGEST_TOKEN_FILE"]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"INGEST_TOKEN_FILE: cannot read the token file ({exc.strerror})"
            ) from None
    tokens = tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())
    if not tokens:
        raise ConfigError(
            "INGEST_TOKEN (or INGEST_TOKEN_FILE) is not set: the ingest needs at least one token"
        )
    short = [i for i, t in enumerate(tokens, 1) if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ConfigError(
            f"{variable}: token #{short[0]} is shorter than {MIN_TOKEN_LENGTH} characters"
        )
    return tokens


def _topics(text: str) -> dict[str, str]:
    """``INGEST_TOPICS=rewards_issued=t1,member_enrolled=t2``; unnamed types keep the default."""
    topics = dict(DEFAULT_TOPICS)
    for pair in (p.strip() for p in text.split(",") if p.strip()):
        event_type, sep, topic = (part.strip() for part in pair.partition("="))
        if not sep or not topic:
            raise ConfigError(f"INGEST_TOPICS: {pair!r} is not event_type=topic")
        if event_type not in EVENT_TYPES:
            raise ConfigError(
                f"INGEST_TOPICS: unknown event type {event_type!r} "
                f"(one of {', '.join(EVENT_TYPES)})"
            )
        topics[event_type] = topic
    return topics
