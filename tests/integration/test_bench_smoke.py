"""`loyalty-relay bench` completes at a small N and reports every figure (a smoke check only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support import REPO

pytestmark = pytest.mark.integration

FIELDS = {
    "events",
    "ceiling_events_per_s",
    "worker_events_per_s",
    "worker_to_ceiling_ratio",
    "webhook_events_per_s",
    "braze_requests_per_event",
    "moengage_requests_per_event",
    "webhook_requests_per_event",
    "braze_objects_per_request",
    "moengage_fill_of_100kb",
    "latency_full_load_ms",
    "latency_half_load_ms",
    "half_load_events_per_s",
    "worker_peak_rss_mb",
    "worker_cpu_seconds_per_1000_events",
    "simulator_cpu_seconds_per_1000_events",
    "minimal_loop_events_per_s",
    "worker_to_minimal_loop_ratio",
    "backlog_events_waiting",
    "phase_seconds",
    "targets",
}


def test_bench_smoke(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A 3,000-event bench run exits 0 and its JSON has every figure with a sane type."""
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "bench",
            "--events",
            "3000",
            "--half-load-seconds",
            "2",
            "--json",
            str(output),
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = orjson.loads(output.read_bytes())
    assert set(result) >= FIELDS
    assert result["events"] == 3000
    for name in ("ceiling_events_per_s", "worker_events_per_s", "webhook_events_per_s"):
        assert result[name] > 0
    for name in ("latency_full_load_ms", "latency_half_load_ms"):
        assert set(result[name]) == {"p50", "p95", "p99"}
    assert 0 < result["braze_objects_per_request"] <= 75
    assert result["simulators"] == "lean"
    assert result["simulator_cpu_seconds_per_1000_events"] > 0
    assert result["backlog_events_waiting"] == 3000
    assert set(result["targets"]) == {
        "worker_cpu_seconds_per_1000_events",
        "worker_to_minimal_loop_ratio",
        "latency_half_load_ms.p99",
        "worker_peak_rss_mb",
    }
    for target in result["targets"].values():
        assert isinstance(target["met"], bool) and target["value"] > 0
