"""The contract every registered destination meets, checked over the registry (no mocks).

Each destination's settings round-trip through its declared environment variables and the
TOML file, its ``check --connect`` probe tells good credentials from bad ones at its simulator,
and every event type it supports becomes requests that its simulator accepts, sent by the real
sender (send-time credentials included) through each of its request families.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from worker.app import build_sender
from worker.check import ACCEPTED, probe_destination
from worker.config import (
    DESTINATION_ENVIRONMENT,
    DESTINATION_SECRETS,
    ENVIRONMENT,
    delivery_variables,
    load_settings,
)
from worker.decode import decode
from worker.destinations.base import Destination, Item, Request, Response
from worker.destinations.registry import REGISTRY
from worker.devtools.simulators.registry import SIMULATORS
from worker.devtools.simulators.runner import SimulatorSet
from worker.errors import Retryable, Throttled
from worker.events import Consumed, LoyaltyEvent

REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(REGISTRY)


@pytest.fixture
async def sims() -> AsyncIterator[tuple[SimulatorSet, aiohttp.ClientSession]]:
    async with SimulatorSet.start() as simulators, aiohttp.ClientSession() as session:
        yield simulators, session


def _example(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        (REPO / "schemas" / "examples" / f"{event_type}.json").read_bytes()
    )
    return document


def _variants(event_type: str) -> Iterator[dict[str, Any]]:
    """The schema example of ``event_type`` plus the shapes that change where it is sent."""
    example = _example(event_type)
    yield example
    data = example["data"]
    if event_type == "offer_issued":
        plain = {k: v for k, v in data.items() if not k.startswith("braze_")}
        yield {**example, "event_id": "evt-offer-event", "data": plain}
        yield {
            **example,
            "event_id": "evt-offer-canvas",
            "data": {**plain, "braze_canvas_id": "cv"},
        }
        yield {
            **example,
            "event_id": "evt-offer-broadcast",
            "data": {**data, "broadcast": True},
        }
    if event_type == "audience_membership_changed":
        yield {**example, "event_id": "evt-audience-remove", "data": {**data, "action": "remove"}}


def _events(destination: Destination[Any]) -> list[LoyaltyEvent]:
    """Every variant of every event type the destination supports, decoded as the worker would."""
    events = []
    for event_type in destination.event_types:
        for offset, document in enumerate(_variants(event_type)):
            record = Consumed("t", 0, offset, b"member-000042", orjson.dumps(document))
            events.append(decode(record))
    return events


def _requests(destination: Destination[Any], settings: Any) -> list[Request]:
    groups: dict[str, list[Item]] = {}
    for event in _events(destination):
        for item in destination.transform(event, settings):
            groups.setdefault(item.group, []).append(item)
    requests = []
    for group, items in groups.items():
        rule = destination.batch_rule(group, settings)
        for start in range(0, len(items), rule.max_items):
            requests.append(
                destination.build(group, items[start : start + rule.max_items], settings)
            )
    return requests


def _distinct_values(destination: Destination[Any]) -> dict[str, Any]:
    """A different valid value for each variable, typed as its settings field is (URLs look
    like URLs, booleans are true, numbers are 7)."""
    fields = destination.settings_type.model_fields
    values: dict[str, Any] = {}
    for variable, key in destination.environment.items():
        annotation = fields[key].annotation
        if annotation is bool:
            values[variable] = True
        elif annotation in (int, float):
            values[variable] = 7
        elif variable.endswith(("ENDPOINT", "URL")):
            values[variable] = f"https://{variable.lower()}.test"
        else:
            values[variable] = f"value-of-{variable.lower()}"
    return values


def _environ(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def _secret_text(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.mark.parametrize("name", NAMES)
def test_settings_round_trip_through_environment_and_file(name: str, tmp_path: Path) -> None:
    """Every declared variable lands on its settings key, the file gives the same settings,
    secrets are collected for redaction and never shown in the settings repr."""
    destination = REGISTRY[name]
    values = _distinct_values(destination)
    settings = load_settings(environ=_environ(values))
    model = settings.destinations[name]
    assert settings.enabled == (name,)
    for variable, key in destination.environment.items():
        assert _secret_text(getattr(model, key)) == values[variable], variable
        if variable in DESTINATION_SECRETS:
            assert values[variable] in settings.secrets
            assert values[variable] not in repr(settings)
    table = "\n".join(
        f"{key} = {orjson.dumps(values[var]).decode()}"
        for var, key in destination.environment.items()
    )
    config = tmp_path / "relay.toml"
    config.write_text(f"[{name}]\n{table}\n")
    assert load_settings(config, environ={}).destinations[name] == model


@pytest.mark.parametrize("name", NAMES)
def test_delivery_settings_and_families_come_from_the_package(name: str) -> None:
    """Every delivery field is a <NAME>_<FIELD> variable; the families build from the defaults
    and from overrides, and every variable name is used once across the whole worker."""
    destination = REGISTRY[name]
    env = _environ(_distinct_values(destination))
    variables = delivery_variables(name)
    assert set(variables.values()) == set(destination.delivery_type.model_fields)
    settings = load_settings(environ={**env, f"{name.upper()}_CONCURRENCY": "3"})
    delivery = settings.delivery[name]
    assert isinstance(delivery, destination.delivery_type)
    assert delivery.concurrency == 3
    families = destination.families(delivery)
    assert families, name
    assert len({family.name for family in families}) == len(families)
    assert families[0].concurrency == 3
    assert all(family.concurrency >= 1 for family in families)
    every = [*ENVIRONMENT, *DESTINATION_ENVIRONMENT]
    every += [v for n in NAMES for v in delivery_variables(n)]
    assert len(every) == len(set(every)), sorted(v for v in every if every.count(v) > 1)


@pytest.mark.parametrize("name", NAMES)
async def test_probe_accepts_good_credentials_and_refuses_bad_ones(name: str, sims: Any) -> None:
    """`check --connect`'s probe says "credentials accepted" only for the right credentials."""
    simulators, session = sims
    destination = REGISTRY[name]
    assert destination.probe is not None or destination.send_time_auth is not None
    env = {k: v for k, v in simulators.env().items() if k in destination.environment}
    good = load_settings(environ=env).destinations[name]
    assert await probe_destination(destination, good, session) == ACCEPTED
    wrong = {k: ("wrong-" + v if k in DESTINATION_SECRETS else v) for k, v in env.items()}
    bad = load_settings(environ=wrong).destinations[name]
    verdict = await probe_destination(destination, bad, session)
    assert verdict != ACCEPTED
    for variable in DESTINATION_SECRETS & set(wrong):
        assert wrong[variable] not in verdict


@pytest.mark.parametrize("name", NAMES)
async def test_every_supported_event_type_is_accepted_by_its_simulator(
    name: str, sims: Any
) -> None:
    """The schema example of every supported event type (and the variants that change the
    endpoint) is transformed, batched, sent by the real sender and accepted in full; the
    requests cover every request family the destination declares."""
    simulators, session = sims
    assert name in SIMULATORS, f"{name} has no simulator in worker/devtools/simulators/registry.py"
    destination = REGISTRY[name]
    settings = load_settings(environ=simulators.env())
    requests = _requests(destination, settings.destinations[name])
    assert requests, f"{name} sent nothing for {destination.event_types}"
    sender = build_sender(name, settings, session)
    families = {destination.family_of(request) for request in requests}
    assert families == set(sender.flows), families
    before = len(simulators[name].state.received)
    secrets = [v for k, v in simulators.env().items() if k in DESTINATION_SECRETS]
    for request in requests:
        assert not [secret for secret in secrets if secret in repr(request)]
        result = await sender.deliver(request)
        assert result.failed == {}, (request.endpoint, result.failed)
    assert len(simulators[name].state.received) > before


@pytest.mark.parametrize("name", NAMES)
def test_answers_are_classified_by_the_destination(name: str) -> None:
    """Every destination's classification keeps the generic rules: 429 is Throttled with the
    server's wait, 5xx is Retryable (and not Throttled)."""
    destination = REGISTRY[name]
    request = Request("POST", "https://example.test", b"{}", (), "probe")
    with pytest.raises(Throttled) as throttled:
        destination.check(Response(429, {"Retry-After": "7"}, b"{}"), request)
    assert throttled.value.retry_after == 7
    with pytest.raises(Retryable) as failed:
        destination.check(Response(503, {}, b""), request)
    assert not isinstance(failed.value, Throttled)


@pytest.mark.parametrize("name", NAMES)
def test_pure_modules_import_no_io_library(name: str) -> None:
    """transform.py and response.py stay pure: no aiohttp, aiokafka or asyncio import."""
    package = REPO / "worker" / "destinations" / name
    for module in ("transform.py", "response.py"):
        tree = ast.parse((package / module).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"aiohttp", "aiokafka", "asyncio"}, (module, imported)


def test_no_module_outside_destinations_names_a_destination() -> None:
    """The wiring modules derive everything from the registry: none names a destination."""
    pattern = re.compile("|".join(NAMES), re.IGNORECASE)
    modules = [
        "worker/config.py",
        "worker/check.py",
        "worker/app.py",
        "worker/devtools/simulators/runner.py",
        *(str(p.relative_to(REPO)) for p in (REPO / "worker" / "deliver").glob("*.py")),
        *(str(p.relative_to(REPO)) for p in (REPO / "worker" / "pipeline").glob("*.py")),
    ]
    named = {
        module: sorted({m.group(0).lower() for m in pattern.finditer((REPO / module).read_text())})
        for module in modules
    }
    assert {module: names for module, names in named.items() if names} == {}


# A fifth destination, written as the README's "Adding a destination" says: one package and
# its line in registry.py. The test copies worker/ (and schemas/) untouched apart from that, and
# checks that settings, `check`, the probe and the sender pick it up with no other edit.
ACME_PACKAGE = {
    "config.py": """
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.destinations.base import DeliverySettings

ENVIRONMENT = {"ACME_ENDPOINT": "endpoint", "ACME_TOKEN": "token"}


class AcmeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str
    token: SecretStr


class AcmeDelivery(DeliverySettings):
    concurrency: int = Field(default=4, ge=1)
""",
    "transform.py": """
import orjson

from worker.destinations.base import BatchRule, Request, encode_item


def transform(event, settings):
    payload = {"member": event.member_id, "points": event.data.get("points", 0)}
    return [encode_item("points", "points", payload, event, orjson.dumps)]


def batch_rule(group, settings):
    return BatchRule(max_items=10, max_bytes=10_000)


def build(group, items, settings):
    body = b"[" + b",".join(item.encoded for item in items) + b"]"
    return Request("POST", settings.endpoint + "/points", body, tuple(items), "points")


def auth_headers(settings):
    return {"Authorization": "Bearer " + settings.token.get_secret_value()}
""",
    "response.py": """
import time

from worker.deliver.backoff import raise_for_status
from worker.destinations.base import Accepted


def check(response, request):
    raise_for_status("acme", response.status, response.headers, response.body, time.time())
    return Accepted()
""",
    "__init__.py": """
from worker.destinations.base import Destination, Request

from . import response, transform
from .config import ENVIRONMENT, AcmeDelivery, AcmeSettings


def probe(settings):
    return Request("POST", settings.endpoint + "/points", b"[]", (), "points")


DESTINATION = Destination(
    name="acme",
    settings_type=AcmeSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=("rewards_issued",),
    auth_headers=transform.auth_headers,
    environment=ENVIRONMENT,
    delivery_type=AcmeDelivery,
    probe=probe,
)
""",
}

ACME_SCRIPT = """
import asyncio, contextlib, io, os, sys
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

import worker
assert worker.__file__.startswith(sys.argv[1]), worker.__file__

from worker.app import build_sender
from worker.check import ACCEPTED, probe_destination, run_check
from worker.config import load_settings
from worker.decode import decode
from worker.destinations.registry import REGISTRY
from worker.events import Consumed

received = []


async def points(request):
    if request.headers.get("Authorization") != "Bearer acme-token":
        return web.json_response({"error": "unauthorized"}, status=401)
    body = await request.json()
    if not body:
        return web.json_response({"error": "empty"}, status=400)
    received.extend(body)
    return web.json_response({"ok": True})


async def main():
    app = web.Application()
    app.router.add_post("/points", points)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1]
    secret = Path(sys.argv[1]) / "acme-token"
    secret.write_text("acme-token")
    env = {"ACME_ENDPOINT": url, "ACME_TOKEN_FILE": str(secret), "ACME_RATE_LIMIT": "50"}
    settings = load_settings(environ=env)
    assert settings.enabled == ("acme",), settings.enabled
    assert settings.routing["rewards_issued"] == ("acme",)
    assert settings.delivery["acme"].rate_limit == 50 and settings.delivery["acme"].concurrency == 4
    assert "acme-token" in settings.secrets

    os.environ.update(env)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_check(None) == 0
    rows = [line for line in printed.getvalue().splitlines() if "acme" in line]
    assert any("enabled" in row for row in rows), printed.getvalue()
    assert "acme-token" not in printed.getvalue()

    destination = REGISTRY["acme"]
    async with aiohttp.ClientSession() as session:
        verdict = await probe_destination(destination, settings.destinations["acme"], session)
        assert verdict == ACCEPTED, verdict
        wrong = load_settings(environ={**env, "ACME_TOKEN_FILE": "", "ACME_TOKEN": "nope"})
        refused = await probe_destination(destination, wrong.destinations["acme"], session)
        assert refused.startswith("CREDENTIALS REFUSED"), refused
        event = {"event_id": "e-1", "event_type": "rewards_issued", "schema_version": 1,
                 "occurred_at": "2026-11-20T10:00:00Z", "member_id": "m-1",
                 "data": {"reward_type": "coffee", "points": 7,
                          "issued_date": "2026-11-20T10:00:00Z"}}
        loyalty = decode(Consumed("t", 0, 0, b"m-1", orjson.dumps(event)))
        items = destination.transform(loyalty, settings.destinations["acme"])
        request = destination.build("points", items, settings.destinations["acme"])
        result = await build_sender("acme", settings, session).deliver(request)
        assert result.failed == {}, result.failed
    assert received == [{"member": "m-1", "points": 7}], received
    await runner.cleanup()
    print("ACME OK")


asyncio.run(main())
"""


def test_a_fifth_destination_is_one_package_and_one_registry_line(tmp_path: Path) -> None:
    """A copy of worker/ plus one package and its registry line: settings, check, the probe
    and the sender take the new destination with no other edit."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(
        REPO / "worker", tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    package = tmp_path / "worker" / "destinations" / "acme"
    package.mkdir()
    for filename, text in ACME_PACKAGE.items():
        (package / filename).write_text(text.lstrip())
    registry = tmp_path / "worker" / "destinations" / "registry.py"
    source = registry.read_text()
    entry = '    "kognitiv": kognitiv.DESTINATION,\n'
    assert entry in source
    source = source.replace(entry, entry + '    "acme": acme.DESTINATION,\n')
    source = source.replace(
        "from worker.destinations import ", "from worker.destinations import acme, "
    )
    registry.write_text(source)
    script = tmp_path / "acme_check.py"
    script.write_text(ACME_SCRIPT)
    others = tuple(f"{name.upper()}_" for name in NAMES)  # only acme is configured
    env = {k: v for k, v in os.environ.items() if not k.startswith(others)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ACME OK" in done.stdout
