"""The package's shape: the runtime does not load the tools around it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_the_run_command_loads_no_devtools() -> None:
    """Simulators, the embedded broker, demo, bench and sample data stay out of a worker."""
    probe = (
        "import sys, worker.cli, worker.app, worker.pipeline, worker.ingest.service;"
        "print(sorted(m for m in sys.modules if m.startswith('worker.devtools')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


# The hot path's stages in flow order; a module may import its own stage and those after it,
# never one before it. Modules not listed (events, errors, config, destinations, observability,
# pipeline/common.py) are shared by every stage; the pipeline's loop.py wires them all.
FLOW = {
    "consume": ["worker/consume/*.py"],
    "route": [
        "worker/route.py",
        "worker/decode.py",
        "worker/event_model.py",
        "worker/pipeline/intake.py",
    ],
    "batch": ["worker/batching.py", "worker/pipeline/batches.py"],
    "deliver": ["worker/deliver/*.py", "worker/pipeline/dispatch.py"],
    "dead-letter": ["worker/deadletter.py", "worker/pipeline/dead_letters.py"],
    "commit": ["worker/offsets.py", "worker/pipeline/commit.py"],
}
REPO = Path(__file__).resolve().parents[2]


def _stage_of() -> dict[str, int]:
    stage_of: dict[str, int] = {}
    for index, patterns in enumerate(FLOW.values()):
        for pattern in patterns:
            for path in REPO.glob(pattern):
                module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                stage_of[module.removesuffix(".__init__")] = index
    return stage_of


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_stages_import_only_the_stages_after_them() -> None:
    stage_of = _stage_of()
    names = list(FLOW)
    assert len(stage_of) >= 15  # the globs found the modules
    upstream: list[str] = []
    for module, stage in stage_of.items():
        path = REPO / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = REPO / module.replace(".", "/") / "__init__.py"
        for imported in _imports(path):
            other = stage_of.get(imported)
            if other is not None and other < stage:
                upstream.append(f"{module} ({names[stage]}) imports {imported} ({names[other]})")
    assert upstream == []


def test_the_pipeline_is_small_pieces() -> None:
    """No class over 220 lines, no function over 50, in the pipeline and the consumer seam."""
    too_long = []
    for path in [*REPO.glob("worker/pipeline/*.py"), *REPO.glob("worker/consume/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            limit = {ast.ClassDef: 220, ast.FunctionDef: 50, ast.AsyncFunctionDef: 50}.get(
                type(node)
            )
            if limit and node.end_lineno - node.lineno + 1 > limit:  # type: ignore[attr-defined]
                too_long.append(f"{path.name}: {node.name}")  # type: ignore[attr-defined]
    assert too_long == []
