"""`loyalty-relay check`: validate the configuration without starting; optionally probe.

Prints the routing table, which destinations are enabled and why the others are not, and
flags bad values with the file line. ``--connect`` also asks the broker for metadata and makes
one harmless call per destination to see whether its credentials are accepted (an empty
request that a valid key gets a 400 for, a bad key a 401).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from worker.config import (
    DESTINATION_NAMES,
    DESTINATION_SETTINGS,
    ENVIRONMENT,
    Settings,
    load_settings,
)
from worker.errors import ConfigError


def run_check(config_file: str | None, *, connect: bool = False) -> int:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        line = _line_of(config_file, str(exc))
        where = f" ({config_file}:{line})" if line else ""
        console.print(f"loyalty-relay: configuration error: {exc}{where}", soft_wrap=True)
        return 2
    _print_destinations(console, settings)
    _print_routing(console, settings)
    if not connect:
        console.print("configuration OK")
        return 0
    problems = asyncio.run(_probe(console, settings))
    console.print("configuration OK, connections OK" if not problems else f"{problems} problem(s)")
    return 0 if not problems else 2


def _print_destinations(console: Console, settings: Settings) -> None:
    table = Table(title="Destinations")
    table.add_column("destination")
    table.add_column("status")
    table.add_column("why")
    for name in DESTINATION_NAMES:
        if name in settings.enabled:
            table.add_row(name, "enabled", "settings present")
        else:
            missing = [
                variable
                for key, info in DESTINATION_SETTINGS[name].model_fields.items()
                if info.is_required()
                for variable, target in ENVIRONMENT.items()
                if target == (name, key)
            ]
            table.add_row(name, "disabled", "not set: " + ", ".join(missing))
    console.print(table)


def _print_routing(console: Console, settings: Settings) -> None:
    table = Table(title="Routing (by event_type, on every topic)")
    table.add_column("topics")
    table.add_column("event type")
    table.add_column("destinations")
    topics = ", ".join(settings.kafka.topics)
    for event_type, names in settings.routing.items():
        table.add_row(topics, event_type, ", ".join(names) or "(none: skipped)")
    console.print(table)


def _line_of(config_file: str | None, message: str) -> int | None:
    """Best effort: the first line of the file that mentions the key named in the error."""
    if not config_file or not Path(config_file).is_file():
        return None
    candidates = re.findall(r"[\w.]+", message)
    text = Path(config_file).read_text(encoding="utf-8", errors="replace").splitlines()
    for candidate in candidates:
        key = candidate.split(".")[-1]
        if len(key) < 3:
            continue
        for number, line in enumerate(text, start=1):
            if re.match(rf"\s*\[?\s*{re.escape(key)}\b", line):
                return number
    return None


async def _probe(console: Console, settings: Settings) -> int:
    from worker.app import build_sender
    from worker.kafka import connection_options

    problems = 0
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout=15)
        topics = await admin.list_topics()
        missing = [t for t in settings.kafka.topics if t not in topics]
        console.print(
            f"broker {settings.kafka.bootstrap_servers}: reachable"
            + (f" (missing topics: {', '.join(missing)}; {_at_start(settings)})" if missing else "")
        )
    except Exception as exc:
        problems += 1
        console.print(
            f"broker {settings.kafka.bootstrap_servers}: UNREACHABLE ({type(exc).__name__})"
        )
    finally:
        await admin.close()
    async with aiohttp.ClientSession() as session:
        for name in settings.enabled:
            verdict = await _probe_destination(name, settings, session, build_sender)
            if verdict != "credentials accepted":
                problems += 1
            console.print(f"{name}: {verdict}")
    return problems


def _at_start(settings: Settings) -> str:
    if settings.kafka.create_topics:
        return "created at start"
    return "KAFKA_CREATE_TOPICS=false: the worker will refuse to start"


async def _probe_destination(
    name: str, settings: Settings, session: aiohttp.ClientSession, build_sender: Any
) -> str:
    sender = build_sender(name, settings, session)
    dest = settings.destinations[name]
    headers = dict(sender._static_headers)
    try:
        if sender._auth is not None:
            headers.update(await sender._auth.headers())
            return "credentials accepted"
        url, body = _harmless_call(name, dest)
        timeout = aiohttp.ClientTimeout(total=15)
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            status = resp.status
    except Exception as exc:
        return f"UNREACHABLE or refused ({type(exc).__name__}: {str(exc)[:120]})"
    if status in (401, 403):
        return f"CREDENTIALS REFUSED (HTTP {status})"
    if status >= 500:
        return f"DESTINATION ERROR (HTTP {status})"
    return "credentials accepted"


def _harmless_call(name: str, dest: Any) -> tuple[str, bytes]:
    if name == "braze":
        return f"{dest.rest_endpoint.rstrip('/')}/users/track", b"{}"
    if name == "moengage":
        base = dest.api_endpoint.rstrip("/")
        return f"{base}/v1/transition/{dest.workspace_id}", b'{"type":"transition","elements":[]}'
    if name == "sessionm":
        key = dest.api_key.get_secret_value()
        base = dest.core_endpoint.rstrip("/")
        return f"{base}/priv/v1/apps/{key}/users/loyalty-relay-check/tags", b'{"tags":[]}'
    raise ValueError(name)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_check(os.environ.get("RELAY_CONFIG")))
