"""The package's shape: the runtime does not load the tools around it."""

from __future__ import annotations

import subprocess
import sys


def test_the_run_command_loads_no_devtools() -> None:
    """Simulators, embedded broker, demo, bench and sample data stay out of a worker's process."""
    probe = (
        "import sys, worker.cli, worker.app, worker.pipeline, worker.ingest.service;"
        "print(sorted(m for m in sys.modules if m.startswith('worker.devtools')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
