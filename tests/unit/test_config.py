"""Settings come from the environment (and an optional TOML file) or fail with one line."""

from pathlib import Path

import pytest

from worker.config import load_settings
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
