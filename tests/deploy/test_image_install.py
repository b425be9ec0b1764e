"""The image's install steps, run in a fresh virtual environment (no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_install_as_the_dockerfile_does_then_help_and_check(tmp_path: Path) -> None:
    """A non-editable install from the copied build context runs --help and check."""
    context = tmp_path / "src"  # what the builder stage COPYs
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    for name in ("schemas", "worker"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "--no-cache-dir", "-q", "."],
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    helped = subprocess.run(
        [str(venv / "bin/loyalty-relay"), "--help"], capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0
    for command in ("run", "ingest", "check", "demo", "replay", "dlq", "bench", "simulate"):
        assert command in helped.stdout
    env = {
        "PATH": "/usr/bin:/bin",
        "BRAZE_REST_ENDPOINT": "http://simulators:9200",
        "BRAZE_API_KEY": "sim-braze-key",
    }
    checked = subprocess.run(
        [str(venv / "bin/loyalty-relay"), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "braze" in checked.stdout and "enabled" in checked.stdout
    # the wheel carries its own copy of the JSON Schemas (worker/_schemas)
    probe = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "from worker.decode import schema_dir; print(schema_dir())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().endswith("worker/_schemas")
    # every compression codec Kafka defines can be read (aiokafka's extras, issue 10)
    codecs = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "from aiokafka import codec as c; "
            "print(c.has_gzip(), c.has_snappy(), c.has_lz4(), c.has_zstd())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert codecs.stdout.split() == ["True"] * 4, codecs.stdout
