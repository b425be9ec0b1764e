"""worker.ingest.config and worker.ingest.auth: INGEST_* settings, tokens, per-token rate."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.ingest.auth import BASIC, BEARER, RateLimiter, Tokens, retry_after_header
from worker.ingest.config import DEFAULT_TOPICS, load_ingest_config

NEW = "new-token-0123456789"
OLD = "old-token-0123456789"


def basic(password: str, user: str = "app") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_tokens_match_by_scheme_and_report_the_index_only() -> None:
    """Bearer and Basic(anything:token) as the routes allow; several tokens for rotation."""
    tokens = Tokens([OLD, NEW])
    both = frozenset({BEARER, BASIC})
    assert tokens.match(f"Bearer {NEW}", frozenset({BEARER})) == 1
    assert tokens.match(f"bearer {OLD}", both) == 0
    assert tokens.match(basic(NEW), frozenset({BASIC})) == 1
    assert tokens.match(basic(NEW, user=""), both) == 1
    assert tokens.match(basic(f"{NEW}:x"), both) is None  # the password is all after the colon
    for header in (
        None,
        "",
        f"Bearer {NEW}x",
        f"Basic {NEW}",
        "Basic !!!",
        "Basic " + base64.b64encode(NEW.encode()).decode(),  # no colon
        f"Token {NEW}",
        "Bearer ",
    ):
        assert tokens.match(header, both) is None, header
    assert tokens.match(basic(NEW), frozenset({BEARER})) is None
    assert tokens.match(f"Bearer {NEW}", frozenset({BASIC})) is None


def test_rate_limiter_is_a_bucket_per_token() -> None:
    """``burst`` at once, then ``rate`` per second; each key on its own; 0 turns it off."""
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take(0) for _ in range(3)] == [None, None, None]
    wait = limiter.take(0)
    assert wait == pytest.approx(0.5)
    assert limiter.take(1) is None
    now[0] += 0.5
    assert limiter.take(0) is None
    assert limiter.take(0) is not None
    assert RateLimiter(rate=0, burst=1).take(0) is None
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    """Defaults as documented; INGEST_TOPICS overrides one event type and keeps the others."""
    config = load_ingest_config(environ={"INGEST_TOKEN": NEW})
    ingest = config.ingest
    assert (ingest.port, ingest.max_body_bytes, ingest.max_items) == (8080, 1_048_576, 500)
    assert dict(ingest.topics) == dict(DEFAULT_TOPICS)
    assert NEW in config.secrets and NEW not in repr(config) and NEW not in repr(ingest)
    config = load_ingest_config(
        environ={
            "INGEST_TOKEN": f" {OLD} , {NEW} ",
            "INGEST_PORT": "9000",
            "INGEST_TOPICS": "rewards_issued=kognitiv.rewards",
        }
    )
    assert [t.get_secret_value() for t in config.ingest.tokens] == [OLD, NEW]
    assert config.ingest.port == 9000
    assert config.ingest.topics["rewards_issued"] == "kognitiv.rewards"
    assert config.ingest.topics["member_enrolled"] == "loyalty.enrollments"
    secret = tmp_path / "tokens"
    secret.write_text(f"{OLD}\n{NEW}\n")
    config = load_ingest_config(environ={"INGEST_TOKEN_FILE": str(secret)})
    assert len(config.ingest.tokens) == 2


def test_destination_variables_of_a_shared_configmap_are_ignored() -> None:
    """The ingest pod shares the worker's ConfigMap without the destinations' keys."""
    config = load_ingest_config(
        environ={
            "INGEST_TOKEN": NEW,
            "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com",
            "MOENGAGE_WORKSPACE_ID": "w",
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9096",
            "LOG_LEVEL": "warning",
        }
    )
    assert config.kafka.bootstrap_servers == "broker:9096"
    assert config.log_level == "warning"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "INGEST_TOKEN (or INGEST_TOKEN_FILE) is not set"),
        ({"INGEST_TOKEN": "short"}, "INGEST_TOKEN: token #1 is shorter than 16 characters"),
        ({"INGEST_TOKEN_FILE": "/nonexistent/tokens"}, "INGEST_TOKEN_FILE: cannot read"),
        ({"INGEST_TOKEN": NEW, "INGEST_PORT": "http"}, "INGEST_PORT:"),
        ({"INGEST_TOKEN": NEW, "INGEST_MAX_ITEMS": "0"}, "INGEST_MAX_ITEMS:"),
        ({"INGEST_TOKEN": NEW, "INGEST_TOPICS": "points=t"}, "INGEST_TOPICS: unknown event type"),
        ({"INGEST_TOKEN": NEW, "INGEST_TOPICS": "rewards_issued"}, "is not event_type=topic"),
        ({"INGEST_TOKEN": NEW, "KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    """ConfigError (exit 2 from the CLI) with one line; the token's value never appears."""
    with pytest.raises(ConfigError) as caught:
        load_ingest_config(environ=environ)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "short" not in text.replace("shorter", "")


def test_ingest_command_exits_2_on_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`loyalty-relay ingest` without a token stops at once with exit status 2."""
    from worker.cli import main

    monkeypatch.delenv("INGEST_TOKEN", raising=False)
    monkeypatch.delenv("INGEST_TOKEN_FILE", raising=False)
    assert main(["ingest"]) == 2
