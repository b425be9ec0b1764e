"""Settings come from the environment (and an optional TOML file) or fail with one line."""

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.cli import main
from worker.config import (
    DELIVERY_SUFFIXES,
    DESTINATION_NAMES,
    DESTINATION_SETTINGS,
    ENVIRONMENT,
    SECRET_VARIABLES,
    KafkaSettings,
    Settings,
    WorkerSettings,
    load_settings,
)
from worker.errors import ConfigError

BRAZE = {"BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com", "BRAZE_API_KEY": "k-123456"}
MOENGAGE = {
    "MOENGAGE_API_ENDPOINT": "https://api-01.moengage.com",
    "MOENGAGE_WORKSPACE_ID": "WS1",
    "MOENGAGE_API_KEY": "m-123456",
}


def test_defaults_and_enabled_destinations() -> None:
    """With only Braze variables set, Braze is enabled and Kafka has its defaults."""
    settings = load_settings(environ=BRAZE)
    assert settings.enabled == ("braze",)
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.group_id == "loyalty-relay"
    assert settings.routing["rewards_issued"] == ("braze",)
    assert settings.routing["audience_membership_changed"] == ("braze",)
    assert settings.worker.linger_ms == 50


def test_default_routing_covers_both_destinations() -> None:
    """Every event type Braze and MoEngage support is routed to both when both are set."""
    settings = load_settings(environ={**BRAZE, **MOENGAGE})
    for event_type in ("rewards_issued", "member_enrolled", "offer_issued"):
        assert settings.routing[event_type] == ("braze", "moengage")


def test_partial_destination_names_missing_variable() -> None:
    """A destination with some settings but not all is an error naming the missing variable."""
    with pytest.raises(ConfigError, match="MOENGAGE_API_KEY"):
        load_settings(environ={**BRAZE, "MOENGAGE_API_ENDPOINT": "x", "MOENGAGE_WORKSPACE_ID": "w"})


def test_file_routing_to_unconfigured_destination_names_variable(tmp_path: Path) -> None:
    """Routing to a destination without settings names its first missing variable."""
    config = tmp_path / "relay.toml"
    config.write_text('[routing]\nrewards_issued = ["braze", "moengage"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=BRAZE)
    assert str(caught.value) == (
        "routing.rewards_issued sends to moengage but MOENGAGE_API_ENDPOINT is not set"
    )


def test_no_destination_is_an_error() -> None:
    """Starting with no destination configured is refused."""
    with pytest.raises(ConfigError, match="no destination is configured"):
        load_settings(environ={})


def test_bad_value_names_the_variable() -> None:
    """A value that fails validation names the environment variable it came from."""
    with pytest.raises(ConfigError, match=r"^RELAY_LINGER_MS"):
        load_settings(environ={**BRAZE, "RELAY_LINGER_MS": "soon"})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    """An unknown key in a known section is reported with its dotted name."""
    config = tmp_path / "relay.toml"
    config.write_text('[kafka]\nbootstrap = "x:1"\n')
    with pytest.raises(ConfigError, match=r"unknown key kafka\.bootstrap"):
        load_settings(config, environ=BRAZE)


def test_secret_from_file(tmp_path: Path) -> None:
    """BRAZE_API_KEY_FILE supplies the key and the value never shows in the settings repr."""
    secret = tmp_path / "key"
    secret.write_text("from-file-key\n")
    settings = load_settings(
        environ={"BRAZE_REST_ENDPOINT": "https://x", "BRAZE_API_KEY_FILE": str(secret)}
    )
    assert settings.destinations["braze"].api_key.get_secret_value() == "from-file-key"  # type: ignore[attr-defined]
    assert "from-file-key" not in repr(settings)
    assert "from-file-key" in settings.secrets


def test_delivery_override_from_environment() -> None:
    """Per-destination delivery settings come from <DEST>_<SETTING> variables."""
    settings = load_settings(
        environ={**BRAZE, "BRAZE_RATE_LIMIT": "250", "BRAZE_MAX_ATTEMPTS": "3"}
    )
    assert settings.delivery["braze"].rate_limit == 250
    assert settings.delivery["braze"].max_attempts == 3
    assert settings.delivery["moengage"].rate_unit == "items"


# -- Kafka settings ------------------------------------------------------------------------


def test_kafka_defaults_read_committed_and_broker_topic_layout() -> None:
    """Consumers read committed data and new topics take the broker's layout unless told."""
    kafka = load_settings(environ=BRAZE).kafka
    assert kafka.isolation_level == "read_committed"
    assert kafka.create_topics is True
    assert kafka.topic_partitions is None
    assert kafka.topic_replication_factor is None


def test_kafka_topic_settings_from_environment() -> None:
    """Isolation level, topic creation and layout come from KAFKA_* variables."""
    kafka = load_settings(
        environ={
            **BRAZE,
            "KAFKA_ISOLATION_LEVEL": "read_uncommitted",
            "KAFKA_CREATE_TOPICS": "false",
            "KAFKA_TOPIC_PARTITIONS": "12",
            "KAFKA_TOPIC_REPLICATION_FACTOR": "3",
        }
    ).kafka
    assert kafka.isolation_level == "read_uncommitted"
    assert kafka.create_topics is False
    assert (kafka.topic_partitions, kafka.topic_replication_factor) == (12, 3)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KAFKA_ISOLATION_LEVEL", "serializable", "KAFKA_ISOLATION_LEVEL: Input should be"),
        ("KAFKA_TOPIC_PARTITIONS", "0", "KAFKA_TOPIC_PARTITIONS: Input should be greater"),
        ("KAFKA_TOPIC_REPLICATION_FACTOR", "-1", "KAFKA_TOPIC_REPLICATION_FACTOR: Input should"),
        ("KAFKA_CREATE_TOPICS", "perhaps", "KAFKA_CREATE_TOPICS: Input should be a valid boolean"),
        ("KAFKA_TOPICS", "a,b.dlq", "KAFKA_TOPICS: 'b.dlq' is a dead-letter topic"),
        ("KAFKA_TOPICS", "a,b c", "KAFKA_TOPICS: 'b c' is not a Kafka topic name"),
        ("KAFKA_TOPICS", "..", "KAFKA_TOPICS: '..' is not a Kafka topic name"),
        ("KAFKA_TOPICS", "t" * 246, "is not a Kafka topic name"),
        ("KAFKA_TOPICS", " , ", "KAFKA_TOPICS: Tuple should have at least 1 item"),
    ],
)
def test_bad_kafka_values_are_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    """Each bad Kafka value is refused with one line that names the variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**BRAZE, variable: value})
    assert expected in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_dlq_topic_in_the_file_is_refused(tmp_path: Path) -> None:
    """A .dlq topic in [kafka] topics would dead-letter into itself: refused."""
    config = tmp_path / "relay.toml"
    config.write_text('[kafka]\ntopics = ["loyalty.enrollments.dlq"]\n')
    with pytest.raises(ConfigError, match=r"'loyalty\.enrollments\.dlq' is a dead-letter topic"):
        load_settings(config, environ=BRAZE)


# -- the loader never ends in a traceback ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[kafka]\nbootstrap_servers = '\xff\xfe'\n", "is not UTF-8"),
        (b"[delivery]\nbraze = 5\n", "delivery.braze in"),
        (b"delivery = 5\n", "delivery in"),
        (b"kafka = 'broker:9092'\n", "kafka in"),
        (b"[delivery.salesforce]\nrate_limit = 1\n", "unknown section [delivery.salesforce]"),
        (b'[kafka]\n"bad\\nkey" = 1\n', "unknown key kafka.'bad\\nkey'"),
        (b"[moengage]\napi_key = 5\napi_endpoint = []\n", "MOENGAGE_API_ENDPOINT"),
        (b"[routing]\nrewards_issued = [[1]]\n", "routing.rewards_issued"),
        (b"[worker]\ndrain_seconds = 1979-05-27\n", "RELAY_DRAIN_SECONDS"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    """Wrong encodings, shapes and types in the TOML file are ConfigErrors of one line."""
    config = tmp_path / "relay.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=BRAZE)
    message = str(caught.value)
    assert expected in message
    assert len(message.splitlines()) == 1


def test_unreadable_file_and_secret_file_are_one_line_errors(tmp_path: Path) -> None:
    """A directory as the config file, a binary secret file: one line each, no traceback."""
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path, environ=BRAZE)
    secret = tmp_path / "key"
    secret.write_bytes(b"\xff\xfe\x00key")
    with pytest.raises(ConfigError, match="BRAZE_API_KEY_FILE: the secret file is not UTF-8"):
        load_settings(
            environ={"BRAZE_REST_ENDPOINT": "https://x", "BRAZE_API_KEY_FILE": str(secret)}
        )


@pytest.mark.parametrize("command", ["run", "check"])
def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """`loyalty-relay run|check --config` with a non-UTF-8 file: one line, exit 2."""
    for variable, value in BRAZE.items():
        monkeypatch.setenv(variable, value)
    config = tmp_path / "relay.toml"
    config.write_bytes(b"[delivery]\nbraze = 5\n\xff\n")
    assert main([command, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    output = (captured.out + captured.err).strip()
    assert output.startswith("loyalty-relay: configuration error:"), output
    assert "not UTF-8" in output
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output


# -- property: any document, any environment → Settings or one ConfigError line ------------

_SECTION_KEYS = {
    "kafka": list(KafkaSettings.model_fields),
    "worker": list(WorkerSettings.model_fields),
    "delivery": list(DESTINATION_NAMES),
    "routing": ["rewards_issued", "member_enrolled", "offer_issued", "audience_membership_changed"],
    **{name: list(DESTINATION_SETTINGS[name].model_fields) for name in DESTINATION_NAMES},
}
_MARKER_SECRET = "s3cr3t-marker-value"
_scalars = st.one_of(
    st.none(),  # left out of the document (TOML has no null)
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["read_committed", "PLAINTEXT", "braze", "moengage", "a.dlq", "-1", "0"]),
    st.datetimes(),
    st.dates(),
)
_values = st.recursive(
    _scalars.filter(lambda v: v is not None),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.one_of(
    st.sampled_from(sorted({key for keys in _SECTION_KEYS.values() for key in keys})),
    st.text(max_size=12),
)
_sections = st.one_of(st.sampled_from(sorted(_SECTION_KEYS)), st.text(max_size=10))
_documents = st.dictionaries(
    _sections, st.one_of(st.dictionaries(_keys, _values, max_size=5), _values), max_size=5
)
_variables = st.sampled_from(
    sorted(
        [*ENVIRONMENT, *(f"{v}_FILE" for v in SECRET_VARIABLES)]
        + [f"{d.upper()}_{s}" for d in DESTINATION_NAMES for s in DELIVERY_SUFFIXES]
    )
)
_environments = st.dictionaries(
    _variables,
    st.one_of(
        st.text(max_size=40),
        st.integers().map(str),
        st.floats().map(str),
        st.sampled_from(["true", "false", "read_uncommitted", "a,b.dlq", " , ", "/nonexistent"]),
    ),
    max_size=8,
)


def _assert_settings_or_one_line(load: Any) -> None:
    try:
        settings = load()
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), "empty message"
        assert len(message.splitlines()) == 1, message
        assert _MARKER_SECRET not in message
    else:
        assert isinstance(settings, Settings)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents, environ=_environments, with_secret=st.booleans())
def test_any_toml_document_and_environment_gives_settings_or_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    document: dict[str, Any],
    environ: dict[str, str],
    with_secret: bool,
) -> None:
    """Random TOML documents and variables: Settings, or a one-line ConfigError (no secrets)."""
    config = tmp_path_factory.mktemp("toml") / "relay.toml"
    config.write_text(tomli_w.dumps(_drop_none(document)), encoding="utf-8")
    if with_secret:
        environ = {**environ, "BRAZE_API_KEY": _MARKER_SECRET}
    _assert_settings_or_one_line(lambda: load_settings(config, environ=environ))


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_the_file_give_settings_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    """Arbitrary bytes as the config file never end in anything but a one-line ConfigError."""
    config = tmp_path_factory.mktemp("bytes") / "relay.toml"
    config.write_bytes(content)
    _assert_settings_or_one_line(lambda: load_settings(config, environ=BRAZE))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value
