"""`loyalty-relay check`: validate the configuration without starting; optionally probe.

Prints the routing table, which destinations are enabled and why the others are not, and
flags bad values with the file line. ``--connect`` also asks the broker for metadata and makes
one harmless call per destination to see whether its credentials are accepted: the probe each
destination declares (an empty request that a valid key gets a 400 for, a bad key a 401), after
fetching its send-time credentials if it has any.
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

from worker.config import DESTINATION_NAMES, Settings, load_settings, required_variables
from worker.destinations.base import Destination, Request, Response
from worker.destinations.registry import REGISTRY
from worker.errors import AuthFailed, ConfigError, DeliveryError

_PROBE_TIMEOUT_SECONDS = 15.0
ACCEPTED = "credentials accepted"  # the verdict `check --connect` expects for each destination


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
            table.add_row(name, "disabled", "not set: " + ", ".join(required_variables(name)))
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
    from aiokafka.admin import AIOKafkaAdminClient

    from worker.kafka import connection_options

    problems = 0
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(15):
            await admin.start()
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
            verdict = await probe_destination(REGISTRY[name], settings.destinations[name], session)
            if verdict != ACCEPTED:
                problems += 1
            console.print(f"{name}: {verdict}")
    return problems


def _at_start(settings: Settings) -> str:
    if settings.kafka.create_topics:
        return "created at start"
    return "KAFKA_CREATE_TOPICS=false: the worker will refuse to start"


async def probe_destination(
    destination: Destination[Any], dest_settings: Any, session: aiohttp.ClientSession
) -> str:
    """Fetch the send-time credentials (if any), make the declared probe call, judge it."""
    headers = {"Content-Type": "application/json", **destination.auth_headers(dest_settings)}
    try:
        if destination.send_time_auth is not None:
            auth = destination.send_time_auth.provider(dest_settings, session)
            headers.update(await auth.headers())
        if destination.probe is None:
            return ACCEPTED
        probe = destination.probe(dest_settings)
        timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_SECONDS)
        async with session.request(
            probe.method, probe.url, data=probe.body, headers=headers, timeout=timeout
        ) as resp:
            response = Response(resp.status, dict(resp.headers), await resp.read())
    except AuthFailed as exc:
        return f"CREDENTIALS REFUSED ({exc})"
    except Exception as exc:  # any failure is the verdict; the URL may carry a key: not shown
        return f"UNREACHABLE or refused ({type(exc).__name__}: {_without_url(exc)})"
    return _verdict(destination, response, probe)


def _verdict(destination: Destination[Any], response: Response, probe: Request) -> str:
    status = response.status
    if status in (401, 403):
        return f"CREDENTIALS REFUSED (HTTP {status})"
    if status >= 500:
        return f"DESTINATION ERROR (HTTP {status})"
    try:
        destination.check(response, probe)
    except AuthFailed:
        return f"CREDENTIALS REFUSED (HTTP {status})"
    except DeliveryError:
        pass  # the probe is meant to be refused for its content, not for its credentials
    return ACCEPTED


def _without_url(exc: BaseException) -> str:
    return str(exc).split(" url=")[0][:120]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_check(os.environ.get("RELAY_CONFIG")))
