"""The simulators enforce the documented contracts (destination-apis.md §5).

They are strict fakes, not mocks that accept anything.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from worker.devtools.simulators.runner import SimulatorSet

BRAZE_AUTH = {"Authorization": "Bearer sim-braze-key"}
MOE_AUTH = {
    "Authorization": "Basic " + base64.b64encode(b"sim-workspace:sim-moengage-key").decode()
}


@pytest.fixture
async def sims() -> AsyncIterator[tuple[SimulatorSet, aiohttp.ClientSession]]:
    async with SimulatorSet.start() as simulators, aiohttp.ClientSession() as session:
        yield simulators, session


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(
        url, data=data, headers={"Content-Type": "application/json", **headers}
    ) as resp:
        raw = await resp.read()
        return resp.status, (orjson.loads(raw) if raw else None), resp.headers


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"external_id": f"m-{i}", "name": "x", "time": "2026-11-20T10:00:00Z", **extra}


async def test_braze_users_track_rules(sims: Any) -> None:
    """Auth, the 75-object cap, per-object errors and the all-invalid 400 follow §5.1."""
    simulators, session = sims
    url = simulators.braze.url + "/users/track"
    status, body, _ = await _post(
        session, url, {"events": [_event(1)]}, {"Authorization": "Bearer no"}
    )
    assert (status, body) == (401, {"message": "Invalid API Key"})
    status, body, headers = await _post(
        session, url, {"events": [_event(i) for i in range(76)]}, BRAZE_AUTH
    )
    assert (status, body["message"]) == (400, "Max Input Length Exceeded")
    status, body, headers = await _post(
        session,
        url,
        {
            "events": [
                _event(1),
                {"name": "x", "time": "2026-11-20T10:00:00Z"},
                _event(3, properties={"$bad": 1}),
            ]
        },
        BRAZE_AUTH,
    )
    assert status == 201
    assert body["events_processed"] == 1
    assert [(e["input_array"], e["index"]) for e in body["errors"]] == [
        ("events", 1),
        ("events", 2),
    ]
    assert headers["X-RateLimit-Limit"] == "3000"
    status, body, _ = await _post(session, url, {"events": [{"name": "x"}]}, BRAZE_AUTH)
    assert status == 400 and body["message"].startswith("Valid data must be provided")
    status, _, _ = await _post(session, url, b"x" * (4 * 1024 * 1024 + 1), BRAZE_AUTH)
    assert status == 413
    assert len(simulators.braze.state.received) == 1


async def test_braze_trigger_send_rules(sims: Any) -> None:
    """Recipients cap, one identifier each, broadcast without recipients (§5.1.4)."""
    simulators, session = sims
    url = simulators.braze.url + "/campaigns/trigger/send"
    many = [{"external_user_id": f"m-{i}"} for i in range(51)]
    status, _, _ = await _post(session, url, {"campaign_id": "c", "recipients": many}, BRAZE_AUTH)
    assert status == 400
    both = [{"external_user_id": "m", "user_alias": {"alias_name": "a", "alias_label": "b"}}]
    status, _, _ = await _post(session, url, {"campaign_id": "c", "recipients": both}, BRAZE_AUTH)
    assert status == 400
    status, body, _ = await _post(
        session, url, {"campaign_id": "c", "broadcast": True, "recipients": many[:1]}, BRAZE_AUTH
    )
    assert status == 400
    status, body, _ = await _post(session, url, {"campaign_id": "c"}, BRAZE_AUTH)
    assert (status, body["message"]) == (400, "No Recipients")
    status, body, _ = await _post(
        session,
        url,
        {"campaign_id": "c", "recipients": many[:2], "trigger_properties": {"a": 1}},
        BRAZE_AUTH,
    )
    assert status == 201 and body["message"] == "success"
    assert [r["properties"] for r in simulators.braze.state.sends()] == [{"a": 1}, {"a": 1}]


async def test_braze_rate_limit_and_faults(sims: Any) -> None:
    """Over the window → 429 with reset headers; injected faults answer without recording."""
    simulators, session = sims
    state = simulators.braze.state
    state.windows["track"].limit = 2
    url = simulators.braze.url + "/users/track"
    statuses = [
        (await _post(session, url, {"events": [_event(i)]}, BRAZE_AUTH))[0] for i in range(3)
    ]
    assert statuses == [201, 201, 429]
    state.rate_limits = False
    state.faults.update({"status": 503, "status_count": 1})
    assert (await _post(session, url, {"events": [_event(9)]}, BRAZE_AUTH))[0] == 503
    state.faults.update({"throttle_count": 1})
    state.throttle_mode = "retry_after"
    status, _, headers = await _post(session, url, {"events": [_event(9)]}, BRAZE_AUTH)
    assert (status, headers["X-Ratelimit-Retry-After"]) == (429, "1")
    state.faults.update({"reset_count": 1})
    with pytest.raises(aiohttp.ClientError):
        await _post(session, url, {"events": [_event(9)]}, BRAZE_AUTH)
    assert len(state.received) == 2


async def test_moengage_auth_and_limits(sims: Any) -> None:
    """Basic auth messages, 409 on a path mismatch, 100 KB bulk cap, blocked ids (§5.2)."""
    simulators, session = sims
    url = simulators.moengage.url + "/v1/transition/sim-workspace"
    element = {"type": "event", "customer_id": "m-1", "actions": [{"action": "a"}]}
    status, body, _ = await _post(session, url, {"type": "transition", "elements": [element]}, {})
    assert (status, body["error"]["message"]) == (401, "Authentication Header Required")
    bad_key = {"Authorization": "Basic " + base64.b64encode(b"sim-workspace:x").decode()}
    status, body, _ = await _post(
        session, url, {"type": "transition", "elements": [element]}, bad_key
    )
    assert body["error"]["message"].startswith("App Secret key mismatch")
    other = simulators.moengage.url + "/v1/transition/other"
    assert (await _post(session, other, {"type": "transition", "elements": [element]}, MOE_AUTH))[
        0
    ] == 409
    big = {"type": "transition", "elements": [element] * 2000}
    assert (await _post(session, url, big, MOE_AUTH))[0] == 413
    blocked = {**element, "customer_id": "null"}
    assert (await _post(session, url, {"type": "transition", "elements": [blocked]}, MOE_AUTH))[
        0
    ] == 400
    status, body, headers = await _post(
        session, url, {"type": "transition", "elements": [element]}, MOE_AUTH
    )
    assert (status, body["status"]) == (200, "success")
    assert "x-ratelimit-remaining" in headers
    assert simulators.moengage.state.actions() == [{"customer_id": "m-1", "action": "a"}]


async def test_sessionm_and_kognitiv_contracts(sims: Any) -> None:
    """SessionM status-error bodies and auth; Kognitiv invalid_client, token use and 404s."""
    simulators, session = sims
    auth = {
        "Authorization": "Basic "
        + base64.b64encode(b"sim-sessionm-key:sim-sessionm-secret").decode()
    }
    tags = simulators.sessionm.url + "/priv/v1/apps/sim-sessionm-key/users/u-1/tags"
    assert (await _post(session, tags, {"tags": ["t"]}, {}))[0] == 401
    status, body, _ = await _post(session, tags, {"tags": []}, auth)
    assert (status, body) == (200, {"status": "error", "errors": {"code": "missing_data"}})
    simulators.sessionm.state.known_users = {"u-2"}
    status, body, _ = await _post(session, tags, {"tags": ["t"]}, auth)
    assert body["errors"]["code"] == "user_not_found"

    base = simulators.kognitiv.url
    form = {
        "grant_type": "client_credentials",
        "client_id": "sim-kognitiv-client",
        "client_secret": "no",
    }
    async with session.post(base + "/Auth/connect/token", data=form) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "invalid_client"})
    form["client_secret"] = "sim-kognitiv-secret"
    async with session.post(base + "/Auth/connect/token", data=form) as resp:
        token = (await resp.json())["access_token"]
    member = base + "/api/groups/promotionalMember/vip/members/m-1"
    async with session.put(member) as resp:
        assert resp.status == 401
    simulators.kognitiv.state.known_members = {"m-2"}
    async with session.put(member, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 404
    simulators.kognitiv.state.known_members = None
    async with session.put(member, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
    assert simulators.kognitiv.state.members == {"vip": {"m-1"}}


async def test_braze_counts_app_id_in_attributes_and_skips_unknown_recipients(sims: Any) -> None:
    """§6.2: app_id in an attributes object is a defect; existing-only sends skip new users."""
    simulators, session = sims
    state = simulators.braze.state
    track = simulators.braze.url + "/users/track"
    body = {
        "attributes": [{"external_id": "m-1", "app_id": "a", "first_name": "A"}],
        "events": [_event(1, app_id="a")],
    }
    assert (await _post(session, track, body, BRAZE_AUTH))[0] == 201
    assert state.defects == [{"defect": "app_id_in_attributes", "external_id": "m-1"}]
    state.existing_users = {"m-old"}
    send = simulators.braze.url + "/campaigns/trigger/send"
    recipients = [
        {"external_user_id": "m-old"},
        {"external_user_id": "m-new"},
        {"external_user_id": "m-created", "send_to_existing_only": False, "attributes": {"a": 1}},
    ]
    status, _, _ = await _post(
        session, send, {"campaign_id": "c", "recipients": recipients}, BRAZE_AUTH
    )
    assert status == 201
    assert [s["recipient"]["external_user_id"] for s in state.sends()] == ["m-old", "m-created"]
    assert state.skipped_recipients == ["m-new"]
    assert "m-created" in state.existing_users
    missing = [{"external_user_id": "m-x", "send_to_existing_only": False}]
    status, _, _ = await _post(
        session, send, {"campaign_id": "c", "recipients": missing}, BRAZE_AUTH
    )
    assert status == 400


async def test_moengage_objects_datetimes_future_events_and_appkey(sims: Any) -> None:
    """§6.3: objects refused unless enabled, odd datetimes recorded, future events refused."""
    simulators, session = sims
    state = simulators.moengage.state
    url = simulators.moengage.url + "/v1/transition/sim-workspace"
    with_object = {"type": "customer", "customer_id": "m-1", "attributes": {"c": {"id": 1}}}
    status, body, _ = await _post(
        session, url, {"type": "transition", "elements": [with_object]}, MOE_AUTH
    )
    assert (status, body["error"]["attribute"]) == (400, "c")
    array_op = {
        "type": "customer",
        "customer_id": "m-1",
        "attributes": {"addValueToArrayField": {"loyalty_audiences": ["vip"]}},
    }
    assert (await _post(session, url, {"type": "transition", "elements": [array_op]}, MOE_AUTH))[
        0
    ] == 200
    state.object_attributes = True
    headers = {**MOE_AUTH, "MOE-APPKEY": "sim-workspace"}
    assert (await _post(session, url, {"type": "transition", "elements": [with_object]}, headers))[
        0
    ] == 200
    assert state.appkey_requests == 1
    action = {
        "action": "a",
        "current_time": "2026-11-20T10:00:00+01:00",
        "attributes": {
            "ok": "2026-11-20T09:00:00Z",
            "day": "2026-11-20",
            "odd": "2026-11-20 10:00",
        },
    }
    event = {"type": "event", "customer_id": "m-2", "actions": [action]}
    assert (await _post(session, url, {"type": "transition", "elements": [event]}, MOE_AUTH))[
        0
    ] == 200
    assert sorted(state.string_datetimes) == [
        ("m-2", "current_time", "2026-11-20T10:00:00+01:00"),
        ("m-2", "odd", "2026-11-20 10:00"),
    ]
    future = {**event, "actions": [{**action, "current_time": "2099-01-01T00:00:00Z"}]}
    status, body, _ = await _post(
        session, url, {"type": "transition", "elements": [future]}, MOE_AUTH
    )
    assert (status, body["error"]["attribute"]) == (400, "current_time")


async def test_sessionm_serves_both_user_paths_and_documented_codes(sims: Any) -> None:
    """§6.1/§6.4: users/{id} and external/users/{id}, key and per-user error codes."""
    simulators, session = sims
    state = simulators.sessionm.state
    auth = {
        "Authorization": "Basic "
        + base64.b64encode(b"sim-sessionm-key:sim-sessionm-secret").decode()
    }
    base = simulators.sessionm.url + "/priv/v1/apps/sim-sessionm-key"
    assert (await _post(session, base + "/users/s-1/tags", {"tags": ["t"]}, auth))[0] == 200
    assert (await _post(session, base + "/external/users/m-1/tags", {"tags": ["t"]}, auth))[
        0
    ] == 200
    assert [(r["path"], r["user_id"]) for r in state.received] == [
        ("users", "s-1"),
        ("external", "m-1"),
    ]
    state.known_users = {"s-1"}
    state.known_external_ids = {"m-1"}
    status, body, _ = await _post(session, base + "/users/m-1/tags", {"tags": ["t"]}, auth)
    assert (status, body["errors"]["code"]) == (200, "user_not_found")
    state.user_errors = {"s-1": "requires_registered_user"}
    state.uppercase_codes = True
    status, body, _ = await _post(session, base + "/users/s-1/tags", {"tags": ["t"]}, auth)
    assert (status, body["errors"]["code"]) == (200, "REQUIRES_REGISTERED_USER")
    other = simulators.sessionm.url + "/priv/v1/apps/unknown-key/users/s-1/tags"
    status, body, _ = await _post(session, other, {"tags": ["t"]}, auth)
    assert (status, body["errors"]["code"]) == (401, "INVALID_API_KEY")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"sim-sessionm-key:no").decode()}
    status, body, _ = await _post(session, base + "/users/s-1/tags", {"tags": ["t"]}, wrong)
    assert (status, body["errors"]["code"]) == (401, "ACCESS_DENIED")


async def test_kognitiv_remove_of_a_non_member_is_404_not_a_member(sims: Any) -> None:
    """A DELETE for someone not in the group answers 404 member_not_in_group (configurable)."""
    simulators, session = sims
    base = simulators.kognitiv.url
    form = {
        "grant_type": "client_credentials",
        "client_id": "sim-kognitiv-client",
        "client_secret": "sim-kognitiv-secret",
    }
    async with session.post(base + "/Auth/connect/token", data=form) as resp:
        bearer = {"Authorization": "Bearer " + (await resp.json())["access_token"]}
    member = base + "/api/groups/promotionalMember/vip/members/m-1"
    async with session.delete(member, headers=bearer) as resp:
        assert (resp.status, await resp.json()) == (404, {"error": "member_not_in_group"})
    async with session.put(member, headers=bearer) as resp:
        assert resp.status == 200
    async with session.delete(member, headers=bearer) as resp:
        assert resp.status == 200
    simulators.kognitiv.state.absent_remove_404 = False
    async with session.delete(member, headers=bearer) as resp:
        assert resp.status == 200
    assert [r["op"] for r in simulators.kognitiv.state.received] == ["add", "remove", "remove"]


def test_simulators_import_nothing_from_the_worker() -> None:
    """The fakes check the reference's rules, not the code under test's (issue 12).

    The runner, which only starts them, is left out: it may take the list from the registry.
    """
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "worker" / "devtools" / "simulators"
    fakes = ("braze.py", "moengage.py", "sessionm.py", "kognitiv.py", "common.py")
    for path in (folder / name for name in fakes):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("worker"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("worker") for a in node.names), path.name
