"""Metrics, health and readiness on a running worker; the `check` command."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO, event, produce, topic_for, unique_topics, wait_for

pytestmark = pytest.mark.integration

REWARD = {"reward_type": "free_coffee", "issued_date": "2026-11-20T10:00:00Z"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(sims: Any, bootstrap: str, topics: tuple[str, ...], **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in sims.env().items() if k.startswith(("BRAZE_", "MOENGAGE_"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": ",".join(topics),
        "KAFKA_GROUP_ID": f"g-{topics[0].split('.')[0]}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, keys), value in samples.items()
        if sample == name and all((k, v) in keys for k, v in labels.items())
    )


async def test_metrics_move_with_traffic_and_lag_drains_to_zero(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """/metrics counts consumed and delivered events, lag reaches 0; /healthz and /readyz answer."""
    topics = unique_topics()
    port = _free_port()
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics, METRICS_PORT=str(port)))
    base = f"http://127.0.0.1:{port}"
    await wait_for(lambda: _ok(base + "/healthz"), 30, "/healthz")
    await wait_for(lambda: _ok(base + "/readyz"), 30, "/readyz after partition assignment")

    records = [
        (
            topic_for(topics, "rewards_issued"),
            f"m-{i}".encode(),
            orjson.dumps(event("rewards_issued", f"m-{i}", f"e-{i}", REWARD)),
        )
        for i in range(40)
    ] + [(topics[0], b"m-bad", b"not json")]
    await produce(kafka_bootstrap, records)

    async def delivered_everywhere() -> bool:
        _, text = await _get(base + "/metrics")
        samples = _samples(text)
        return all(
            _total(samples, "relay_deliveries_total", destination=d, outcome="delivered") == 40
            for d in ("braze", "moengage")
        )

    await wait_for(delivered_everywhere, 60, "40 deliveries per destination in /metrics")

    async def lag_is_zero() -> bool:
        _, text = await _get(base + "/metrics")
        samples = _samples(text)
        lags = [v for (name, _), v in samples.items() if name == "relay_consumer_lag"]
        return bool(lags) and all(v == 0 for v in lags)

    await wait_for(lag_is_zero, 30, "consumer lag 0 on every partition")
    _, text = await _get(base + "/metrics")
    samples = _samples(text)
    assert (
        _total(
            samples, "relay_events_consumed_total", destination="braze", event_type="rewards_issued"
        )
        == 40
    )
    assert (
        _total(samples, "relay_events_consumed_total", destination="braze", event_type="invalid")
        == 1
    )
    assert _total(samples, "relay_dead_letters_total", destination="*", reason="invalid_json") == 1
    assert (
        _total(samples, "relay_http_requests_total", destination="braze", status_class="2xx") >= 1
    )
    assert _total(samples, "relay_batch_items_count", destination="moengage") >= 1
    # sampled: the first delivered item of each batch and every 16th after it
    assert 1 <= _total(samples, "relay_end_to_end_seconds_count", destination="braze") <= 40
    assert _total(samples, "relay_circuit_breaker_state", destination="braze") == 0
    assert _total(samples, "relay_rate_limit", destination="braze") == 1000
    assert "sim-braze-key" not in text
    assert await worker.stop() == 0


async def test_readyz_is_not_ready_while_draining(
    kafka_bootstrap: str, simulators: Any, worker_factory: Any
) -> None:
    """After SIGTERM, /readyz answers 503 while slow in-flight deliveries drain."""
    topics = unique_topics()
    port = _free_port()
    simulators.braze.state.faults.update({"latency_ms": 3000})
    worker = worker_factory(_env(simulators, kafka_bootstrap, topics, METRICS_PORT=str(port)))
    base = f"http://127.0.0.1:{port}"
    await wait_for(lambda: _ok(base + "/readyz"), 30, "/readyz")
    await produce(
        kafka_bootstrap,
        [(topics[0], b"m-1", orjson.dumps(event("rewards_issued", "m-1", "e-1", REWARD)))],
    )
    await asyncio.sleep(1.0)  # the request is now in flight at the slow simulator
    worker.process.send_signal(15)
    await asyncio.sleep(0.5)
    status, body = await _get(base + "/readyz")
    assert (status, orjson.loads(body)["reason"]) == (503, "draining")
    assert await asyncio.to_thread(worker.process.wait, 30) == 0
    assert len(simulators.braze.state.received) == 1


async def _ok(url: str) -> bool:
    status, _ = await _get(url)
    return status == 200


def _check(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "check", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_check_connect_probes_broker_and_credentials(
    kafka_bootstrap: str, simulators: Any
) -> None:
    """check --connect passes with good credentials and exits 2 naming a refused key."""
    env = {**simulators.env(), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    good = await asyncio.to_thread(_check, ["--connect"], env)
    assert good.returncode == 0, good.stdout + good.stderr
    for name in ("braze", "moengage", "sessionm", "kognitiv"):
        assert f"{name}: credentials accepted" in good.stdout
    bad = await asyncio.to_thread(_check, ["--connect"], {**env, "MOENGAGE_API_KEY": "nope-1234"})
    assert bad.returncode == 2
    assert "moengage: CREDENTIALS REFUSED (HTTP 401)" in bad.stdout
    assert "nope-1234" not in bad.stdout + bad.stderr


def test_check_reports_routing_and_config_errors(tmp_path: Path) -> None:
    """check prints the routing table, and a bad file gets one line with its line number."""
    env = {"BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com", "BRAZE_API_KEY": "k-123456"}
    ok = _check([], env)
    assert ok.returncode == 0
    assert "braze" in ok.stdout and "enabled" in ok.stdout
    assert "not set: MOENGAGE_API_ENDPOINT, MOENGAGE_WORKSPACE_ID, MOENGAGE_API_KEY" in ok.stdout
    config = tmp_path / "relay.toml"
    config.write_text('[kafka]\nbootstrap_servers = "x:1"\nlinger = 5\n')
    bad = _check(["--config", str(config)], env)
    assert bad.returncode == 2
    assert bad.stdout.strip().endswith(f"unknown key kafka.linger ({config}:3)")
    assert "k-123456" not in bad.stdout
    routed = tmp_path / "routed.toml"
    routed.write_text('[routing]\nmember_enrolled = ["moengage"]\n')
    missing = _check(["--config", str(routed)], env)
    assert missing.returncode == 2
    assert "routing.member_enrolled sends to moengage but MOENGAGE_API_ENDPOINT is not set" in (
        missing.stdout
    )
