"""What every request built from an event must look like, shared by the property tests.

``expected_segments`` says, from the event alone, which decoded path segments each
destination's URL must have; ``requests_for`` runs transform and build for every destination.
The URL is parsed with yarl, the parser aiohttp sends with, so dot segments it would normalise
away or slashes it would split on show up as a different segment list.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from worker.destinations.base import Request
from worker.destinations.registry import REGISTRY
from worker.events import LoyaltyEvent

SETTINGS: dict[str, dict[str, Any]] = {
    "braze": {"rest_endpoint": "https://b.example/", "api_key": "k", "app_id": "a"},
    "moengage": {"api_endpoint": "https://m.example", "workspace_id": "w", "api_key": "k"},
    "sessionm": {"core_endpoint": "https://s.example", "api_key": "k/ey", "api_secret": "s"},
    "kognitiv": {"api_base_url": "https://k.example", "client_id": "c", "client_secret": "s"},
}
_FIXED = {
    "users/track": ["users", "track"],
    "campaigns/trigger/send": ["campaigns", "trigger", "send"],
    "canvas/trigger/send": ["canvas", "trigger", "send"],
    "transition": ["v1", "transition", "w"],
}


def requests_for(event: LoyaltyEvent) -> dict[str, list[Request]]:
    """Each destination's requests for ``event`` (one item per request); raises what they raise."""
    out: dict[str, list[Request]] = {}
    for name, destination in REGISTRY.items():
        settings = destination.settings_type.model_validate(SETTINGS[name])
        requests = []
        for item in destination.transform(event, settings):
            assert destination.batch_rule(item.group, settings).max_items >= 1
            request = destination.build(item.group, [item], settings)
            assert request.items == (item,)
            requests.append(request)
        out[name] = requests
    return out


def expected_segments(name: str, request: Request, event: LoyaltyEvent) -> list[str]:
    own = event.identifiers.get(name) or None
    if name == "sessionm":
        if own:
            return ["priv", "v1", "apps", "k/ey", "users", own, "tags"]
        return ["priv", "v1", "apps", "k/ey", "external", "users", event.member_id, "tags"]
    if name == "kognitiv":
        audience = event.data["audience"]
        return ["api", "groups", "promotionalMember", audience, "members", own or event.member_id]
    return _FIXED[request.endpoint]


def segments(url: str) -> list[str]:
    parsed = URL(url)
    assert parsed.raw_path.startswith("/")
    return list(parsed.parts[1:])


def assert_urls_exact(event: LoyaltyEvent, built: dict[str, list[Request]]) -> None:
    """Every built URL has exactly the expected path segments, no more, no fewer."""
    for name, requests in built.items():
        for request in requests:
            assert segments(request.url) == expected_segments(name, request, event), name
            raw = URL(request.url).raw_parts[1:]
            assert "." not in raw and ".." not in raw, name
