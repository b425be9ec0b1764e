"""Settings: environment variables, optionally a TOML file, validated once at start-up.

Everything has a default except each destination's credentials; a destination is enabled
when its settings are present. Environment variables win over the file. Every secret may also
come from ``<NAME>_FILE`` (a file path, as Docker and Kubernetes mount secrets).

Errors are :class:`~worker.errors.ConfigError` with one line naming the variable or key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from worker.deadletter import DLQ_SUFFIX
from worker.destinations.base import DeliverySettings as DeliverySettings
from worker.destinations.registry import REGISTRY
from worker.errors import ConfigError
from worker.events import EVENT_TYPES

DEFAULT_TOPICS: Final = (
    "loyalty.rewards_issued",
    "loyalty.enrollments",
    "loyalty.offers_issued",
    "loyalty.audience_membership",
)
# Kafka allows 249 characters; the worker appends DLQ_SUFFIX to every source topic
_MAX_TOPIC_LENGTH: Final = 249 - len(DLQ_SUFFIX)
_TOPIC_NAME: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{_MAX_TOPIC_LENGTH}}}")

# environment variable → (section, key) for Kafka and the worker. Destination variables come
# from each destination's package (DESTINATION_ENVIRONMENT). Secrets also accept NAME_FILE.
ENVIRONMENT: Final[Mapping[str, tuple[str, str]]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "KAFKA_GROUP_ID": ("kafka", "group_id"),
    "KAFKA_TOPICS": ("kafka", "topics"),
    "KAFKA_SECURITY_PROTOCOL": ("kafka", "security_protocol"),
    "KAFKA_SASL_MECHANISM": ("kafka", "sasl_mechanism"),
    "KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "KAFKA_SSL_CAFILE": ("kafka", "ssl_cafile"),
    "KAFKA_SSL_CERTFILE": ("kafka", "ssl_certfile"),
    "KAFKA_SSL_KEYFILE": ("kafka", "ssl_keyfile"),
    "KAFKA_SSL_KEY_PASSWORD": ("kafka", "ssl_key_password"),
    "KAFKA_SESSION_TIMEOUT_MS": ("kafka", "session_timeout_ms"),
    "KAFKA_MAX_POLL_INTERVAL_MS": ("kafka", "max_poll_interval_ms"),
    "KAFKA_FETCH_MAX_BYTES": ("kafka", "fetch_max_bytes"),
    "KAFKA_MAX_PARTITION_FETCH_BYTES": ("kafka", "max_partition_fetch_bytes"),
    "KAFKA_UNREACHABLE_EXIT_SECONDS": ("kafka", "unreachable_exit_seconds"),
    "KAFKA_ISOLATION_LEVEL": ("kafka", "isolation_level"),
    "KAFKA_CREATE_TOPICS": ("kafka", "create_topics"),
    "KAFKA_TOPIC_PARTITIONS": ("kafka", "topic_partitions"),
    "KAFKA_TOPIC_REPLICATION_FACTOR": ("kafka", "topic_replication_factor"),
    "METRICS_PORT": ("worker", "metrics_port"),
    "LOG_LEVEL": ("worker", "log_level"),
    "RELAY_DRAIN_SECONDS": ("worker", "drain_seconds"),
    "RELAY_LINGER_MS": ("worker", "linger_ms"),
    "RELAY_MAX_BUFFERED_EVENTS": ("worker", "max_buffered_events"),
    "RELAY_MAX_BUFFERED_BYTES": ("worker", "max_buffered_bytes"),
    "RELAY_MAX_NESTING_DEPTH": ("worker", "max_nesting_depth"),
    "RELAY_UNREADABLE_PARTITION_SECONDS": ("worker", "unreadable_partition_seconds"),
    "RELAY_DEAD_LETTER_STUB_BYTES": ("worker", "dead_letter_stub_bytes"),
}
SECRET_VARIABLES: Final = frozenset(
    {
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_KEY_PASSWORD",
    }
)

# Everything below about destinations is derived from worker/destinations/registry.py.
DESTINATION_NAMES: Final = tuple(REGISTRY)
DESTINATION_SETTINGS: Final[Mapping[str, type[BaseModel]]] = {
    name: destination.settings_type for name, destination in REGISTRY.items()
}
DESTINATION_ENVIRONMENT: Final[Mapping[str, tuple[str, str]]] = {
    variable: (name, key)
    for name, destination in REGISTRY.items()
    for variable, key in destination.environment.items()
}


def _is_secret(model: type[BaseModel], key: str) -> bool:
    annotation = model.model_fields[key].annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


DESTINATION_SECRETS: Final = frozenset(
    variable
    for variable, (name, key) in DESTINATION_ENVIRONMENT.items()
    if _is_secret(DESTINATION_SETTINGS[name], key)
)
VARIABLES: Final[Mapping[str, tuple[str, str]]] = {**ENVIRONMENT, **DESTINATION_ENVIRONMENT}


# <DEST>_<SUFFIX> → field: the delivery tuning every destination has (its package may add more)
DELIVERY_SUFFIXES: Final[Mapping[str, str]] = {
    key.upper(): key for key in DeliverySettings.model_fields
}


def delivery_variables(name: str) -> dict[str, str]:
    """``<NAME>_<FIELD>`` → field, for every field of the destination's delivery settings."""
    fields = REGISTRY[name].delivery_type.model_fields
    return {f"{name.upper()}_{key.upper()}": key for key in fields}


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "localhost:9092"
    # Each destination commits in its own group, "<group_id>.<destination>" (README: Guarantees).
    group_id: str = "loyalty-relay"
    topics: tuple[str, ...] = Field(default=DEFAULT_TOPICS, min_length=1)
    # Missing topics and their .dlq twins are created at start unless this is false; then a
    # missing one is a start-up error. None = the broker's num.partitions and
    # default.replication.factor (worker.kafka.ensure_topics).
    create_topics: bool = True
    topic_partitions: int | None = Field(default=None, ge=1)
    topic_replication_factor: int | None = Field(default=None, ge=1, le=32767)
    # read_committed: events of aborted upstream transactions are never delivered
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = None
    session_timeout_ms: int = Field(default=10_000, ge=6_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    # bounds aiokafka's prefetch per consumer (one per destination): with 16 MiB a worker with
    # 1,000,000 events waiting peaked at 268-273 MiB RSS, with 4 MiB at 243 MiB (bench)
    fetch_max_bytes: int = Field(default=4_194_304, ge=1024)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1024)
    # give up (exit 1) when the broker stays unreachable this long
    unreachable_exit_seconds: float = Field(default=300.0, gt=0)

    @field_validator("topics")
    @classmethod
    def _source_topics(cls, topics: tuple[str, ...]) -> tuple[str, ...]:
        for topic in topics:
            if topic.endswith(DLQ_SUFFIX):
                # its dead letters would go to the same topic and be consumed again, forever
                raise ValueError(
                    f"{topic!r} is a dead-letter topic; name the source topic (use replay for"
                    " dead letters)"
                )
            if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
                raise ValueError(
                    f"{topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at"
                    f" most {_MAX_TOPIC_LENGTH} characters so that its {DLQ_SUFFIX} twin fits)"
                )
        return topics


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    drain_seconds: float = Field(default=30.0, gt=0)
    linger_ms: float = Field(default=50.0, ge=0, le=1000)
    max_buffered_events: int = Field(default=10_000, ge=1)
    # consumed, uncommitted record bytes per destination (key + value); with the record count
    # above it bounds what one destination holds however large the events are
    max_buffered_bytes: int = Field(default=8 * 1024 * 1024, ge=1024 * 1024)
    # deeper JSON is a schema_violation: no destination accepts it and encoders recurse on it
    max_nesting_depth: int = Field(default=32, ge=4, le=1000)
    # a partition whose records cannot be fetched this long is reported and then salvaged
    unreadable_partition_seconds: float = Field(default=300.0, gt=0)
    # the value size of a stub dead letter, written when the broker refuses the full one
    dead_letter_stub_bytes: int = Field(default=64 * 1024, ge=0, le=512 * 1024)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    worker: WorkerSettings
    destinations: Mapping[str, BaseModel]
    delivery: Mapping[str, DeliverySettings]
    routing: Mapping[str, tuple[str, ...]]
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in DESTINATION_NAMES if name in self.destinations)

    def routing_table(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(topic, event_type, destinations) rows; routing is by event_type on every topic."""
        return [
            (topic, event_type, self.routing.get(event_type, ()))
            for topic in self.kafka.topics
            for event_type in EVENT_TYPES
        ]


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_destination: bool = True,
) -> Settings:
    """Read the file (if any) and the environment; raise ConfigError with one line."""
    try:
        return _load(config_file, environ, require_destination)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        if len(lines) == 1:
            raise
        # a path, key or value with a line break in it must not split the message
        raise ConfigError("\\n".join(lines) or "invalid configuration") from None


def _load(
    config_file: str | Path | None, environ: Mapping[str, str] | None, require_destination: bool
) -> Settings:
    env = dict(os.environ if environ is None else environ)
    raw = _read_file(Path(config_file)) if config_file else {}
    for name, section in raw.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{_shown(name)} in {config_file} must be a table, not a value")
    explicit_routing = raw.pop("routing", None)
    delivery_raw: dict[str, Any] = raw.pop("delivery", {})
    for name, section in delivery_raw.items():
        if name not in DESTINATION_NAMES:
            raise ConfigError(f"unknown section [delivery.{_shown(name)}] in {config_file}")
        if not isinstance(section, dict):
            raise ConfigError(f"delivery.{name} in {config_file} must be a table, not a value")
    sources: dict[tuple[str, str], str] = {}
    for (section, key), value, variable in _environment_values(env):
        raw.setdefault(section, {})[key] = value
        sources[(section, key)] = variable
    for name in DESTINATION_NAMES:
        for variable, key in delivery_variables(name).items():
            if variable in env:
                delivery_raw.setdefault(name, {})[key] = env[variable]
                sources[(f"delivery.{name}", key)] = variable

    kafka = _validate(KafkaSettings, raw.pop("kafka", {}), "kafka", sources)
    worker = _validate(WorkerSettings, raw.pop("worker", {}), "worker", sources)
    destinations: dict[str, BaseModel] = {}
    for name in DESTINATION_NAMES:
        section = raw.pop(name, None)
        if section:
            destinations[name] = _validate(DESTINATION_SETTINGS[name], section, name, sources)
    if raw:
        unknown = sorted(raw)[0]
        raise ConfigError(f"unknown section [{_shown(unknown)}] in {config_file}")

    delivery = {
        name: _validate(
            REGISTRY[name].delivery_type,
            delivery_raw.get(name) or {},
            f"delivery.{name}",
            sources,
        )
        for name in DESTINATION_NAMES
    }
    routing = _routing(explicit_routing, destinations, config_file)
    if not destinations and require_destination:
        choices = ", or ".join(" + ".join(required_variables(n)) for n in DESTINATION_NAMES)
        raise ConfigError(f"no destination is configured: set {choices} (see README)")
    return Settings(
        kafka=kafka,
        worker=worker,
        destinations=destinations,
        delivery=delivery,
        routing=routing,
        secrets=_secret_values(kafka, destinations),
    )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte {exc.start}); TOML files must be UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _environment_values(env: Mapping[str, str]) -> list[tuple[tuple[str, str], Any, str]]:
    values: list[tuple[tuple[str, str], Any, str]] = []
    for variable, target in VARIABLES.items():
        value: Any = env.get(variable)
        file_variable = f"{variable}_FILE"
        if variable in SECRET_VARIABLES | DESTINATION_SECRETS and env.get(file_variable):
            try:
                value = Path(env[file_variable]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{file_variable}: cannot read the secret file ({exc.strerror})"
                ) from None
            except ValueError:  # not UTF-8, or a NUL byte in the path
                raise ConfigError(
                    f"{file_variable}: the secret file is not UTF-8 text, or the path is invalid"
                ) from None
            variable = file_variable
        if value is None or value == "":
            continue
        if target == ("kafka", "topics"):
            value = tuple(topic.strip() for topic in str(value).split(",") if topic.strip())
        values.append((target, value, variable))
    return values


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any, section: str, sources: Mapping[tuple[str, str], str]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        where = (
            sources.get((section, key))
            or _missing_variable(section, key)
            or f"{section}.{_shown(key)}"
        )
        if error["type"] == "missing":
            raise ConfigError(f"{section} is configured but {where} is not set") from None
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"unknown key {section}.{_shown(key)}") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}") from None


def _shown(name: str) -> str:
    """A key or section name as the user wrote it, quoted when it is not a plain name."""
    return name if re.fullmatch(r"[\w.-]+", name) else repr(name)


def _missing_variable(section: str, key: str) -> str | None:
    for variable, target in VARIABLES.items():
        if target == (section, key):
            return variable
    return None


def _routing(
    explicit: Any, destinations: Mapping[str, BaseModel], config_file: str | Path | None
) -> dict[str, tuple[str, ...]]:
    if explicit is None:
        return {
            event_type: tuple(
                name
                for name in DESTINATION_NAMES
                if name in destinations and event_type in REGISTRY[name].event_types
            )
            for event_type in EVENT_TYPES
        }
    if not isinstance(explicit, Mapping):
        raise ConfigError(f"[routing] in {config_file} must map event types to destination lists")
    routing: dict[str, tuple[str, ...]] = dict.fromkeys(EVENT_TYPES, ())
    for event_type, names in explicit.items():
        if event_type not in EVENT_TYPES:
            raise ConfigError(f"routing: unknown event type {event_type!r}")
        if not isinstance(names, Sequence) or isinstance(names, str):
            raise ConfigError(f"routing.{event_type} must be a list of destinations")
        for name in names:
            if name not in DESTINATION_NAMES:
                raise ConfigError(f"routing.{event_type}: unknown destination {name!r}")
            if name not in destinations:
                required = (required_variables(name) or [name])[0]
                raise ConfigError(f"routing.{event_type} sends to {name} but {required} is not set")
            if event_type not in REGISTRY[name].event_types:
                raise ConfigError(f"routing.{event_type}: {name} cannot take {event_type}")
        routing[event_type] = tuple(dict.fromkeys(names))
    return routing


def required_variables(name: str) -> list[str]:
    """The variables a destination needs before it is enabled, in settings order."""
    return [
        _missing_variable(name, key) or f"{name}.{key}"
        for key, info in DESTINATION_SETTINGS[name].model_fields.items()
        if info.is_required()
    ]


def _secret_values(kafka: KafkaSettings, destinations: Mapping[str, BaseModel]) -> tuple[str, ...]:
    values: list[str] = []
    for model in (kafka, *destinations.values()):
        for value in model.__dict__.values():
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                values.append(value.get_secret_value())
    return tuple(values)
