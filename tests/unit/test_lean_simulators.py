"""The lean simulators `bench` uses accept what the worker sends and count it exactly.

The worker's own transforms and request builders make the bodies; each goes to the lean and
the strict simulator alike, and the lean one must answer what the worker takes as a success
and count what the strict one accepted: items in total and per member, items per request,
bytes per request, and one latency stamp per Braze item that carries its time.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from worker.destinations.base import Destination, Item, Request, Response
from worker.destinations.braze import DESTINATION as BRAZE
from worker.destinations.braze.config import BrazeSettings
from worker.destinations.moengage import DESTINATION as MOENGAGE
from worker.destinations.moengage.config import MoEngageSettings
from worker.devtools.sample import make_event
from worker.devtools.simulators.lean import LeanState
from worker.devtools.simulators.runner import SimulatorSet
from worker.errors import Rejected
from worker.events import LoyaltyEvent

MIX = ("rewards_issued", "offer_issued", "member_enrolled", "audience_membership_changed")


def _events(count: int) -> list[LoyaltyEvent]:
    rng = random.Random(5)
    out = []
    for sequence in range(count):
        raw = make_event(rng.choice(MIX), f"member-{rng.randrange(40):03d}", sequence, rng)
        out.append(
            LoyaltyEvent(
                raw["event_id"],
                raw["event_type"],
                raw["schema_version"],
                raw["occurred_at"],
                raw["member_id"],
                raw["source"],
                raw["data"],
            )
        )
    return out


def _requests(destination: Destination[Any], settings: Any, items: Sequence[Item]) -> list[Request]:
    """The worker's requests for ``items``: grouped, and cut by the destination's batch rule."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    out = []
    for group, grouped in groups.items():
        rule = destination.batch_rule(group, settings)
        batch: list[Item] = []
        for item in grouped:
            size = rule.overhead_bytes + sum(len(i.encoded) + 1 for i in [*batch, item])
            if batch and (len(batch) == rule.max_items or size > rule.max_bytes):
                out.append(destination.build(group, batch, settings))
                batch = []
            batch.append(item)
        out.append(destination.build(group, batch, settings))
    return out


@pytest.fixture
async def both() -> AsyncIterator[tuple[SimulatorSet, SimulatorSet, aiohttp.ClientSession]]:
    async with (
        SimulatorSet.start(rate_limits=False) as strict,
        SimulatorSet.start(lean=True) as lean,
        aiohttp.ClientSession() as session,
    ):
        yield strict, lean, session


async def _send(
    session: aiohttp.ClientSession, base: str, request: Request, headers: Any
) -> Response:
    path = "/" + request.url.split("/", 3)[3]
    async with session.post(
        base + path, data=request.body, headers={"Content-Type": "application/json", **headers}
    ) as resp:
        return Response(resp.status, dict(resp.headers), await resp.read())


async def test_lean_simulators_accept_and_count_what_the_worker_sends(both: Any) -> None:
    strict, lean, session = both
    assert {sim.name for sim in lean} == {"braze", "moengage"}
    env = lean.env()
    braze_settings = BrazeSettings(
        rest_endpoint="http://unused", api_key=env["BRAZE_API_KEY"], max_objects_per_request=75
    )
    moengage_settings = MoEngageSettings(
        api_endpoint="http://unused",
        workspace_id=env["MOENGAGE_WORKSPACE_ID"],
        api_key=env["MOENGAGE_API_KEY"],
    )
    events = _events(600)
    cases: tuple[tuple[str, Destination[Any], Any], ...] = (
        ("braze", BRAZE, braze_settings),
        ("moengage", MOENGAGE, moengage_settings),
    )
    for name, destination, settings in cases:
        items = [item for event in events for item in destination.transform(event, settings)]
        requests = _requests(destination, settings, items)
        headers = destination.auth_headers(settings)
        for request in requests:
            for simulators in (strict, lean):
                response = await _send(session, simulators[name].url, request, headers)
                accepted = destination.check(response, request)
                assert not accepted.rejected, (name, response.body[:300])
        state: LeanState = lean[name].state
        strict_stats = strict[name].state.stats()
        lean_stats = state.stats()
        for figure in (
            "received",
            "requests",
            "accepted_requests",
            "statuses",
            "items_per_accepted_request",
            "bytes_per_accepted_request",
        ):
            assert lean_stats[figure] == strict_stats[figure], (name, figure)
        expected = len(items) if name == "braze" else len(events)
        assert lean_stats["received"] == expected
        assert lean_stats["requests"] == len(requests)
        strict_members = Counter(_member(record) for record in strict[name].state.received)
        assert state.per_member == strict_members
        assert sum(state.per_member.values()) == expected
    timed = [
        r
        for r in strict.braze.state.received
        if r["array"] == "events" or "issued_date" in r.get("properties", {})
    ]
    latencies = lean.braze.state.latencies_ms()
    assert len(latencies) == len(timed) > 0
    assert all(0 <= value < 60_000 for value in latencies)


def _member(record: dict[str, Any]) -> str:
    if "customer_id" in record:
        return str(record["customer_id"])
    if "recipient" in record:
        return str(record["recipient"]["external_user_id"])
    return str(record["object"]["external_id"])


async def test_lean_simulators_refuse_what_does_not_parse_in_the_api_shape(both: Any) -> None:
    _strict, lean, session = both
    env = lean.env()
    moengage = f"{env['MOENGAGE_API_ENDPOINT']}/v1/transition/{env['MOENGAGE_WORKSPACE_ID']}"
    braze = env["BRAZE_REST_ENDPOINT"] + "/users/track"
    for url, body in (
        (braze, b"{not json"),
        (braze, b'{"events": [1, 2]}'),
        (braze, b'{"events": []}'),
        (moengage, b"{not json"),
        (moengage, b'{"type": "transition", "elements": [7]}'),
    ):
        async with session.post(url, data=body) as resp:
            assert resp.status == 400, (url, body)
            answer = orjson.loads(await resp.read())
        if url == braze:
            assert isinstance(answer["message"], str)
            with pytest.raises(Rejected):
                BRAZE.check(
                    Response(400, {}, orjson.dumps(answer)),
                    Request("POST", url, body, (), "users/track"),
                )
        else:
            assert answer["status"] == "fail" and answer["error"]["type"]
    for name in ("braze", "moengage"):
        stats = lean[name].state.stats()
        assert stats["received"] == stats["accepted_requests"] == 0
        assert stats["requests"] == stats["statuses"]["400"]
    async with session.post(env["BRAZE_REST_ENDPOINT"] + "/_sim/reset") as resp:
        assert resp.status == 200
    async with session.get(env["BRAZE_REST_ENDPOINT"] + "/_sim/stats") as resp:
        assert (await resp.json())["requests"] == 0


def test_the_lean_simulators_import_nothing_from_the_worker() -> None:
    """Like the strict fakes, they answer from the reference, not from the code under test."""
    path = Path(__file__).resolve().parents[2] / "worker/devtools/simulators/lean.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("worker"), node.module
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("worker") for a in node.names)
