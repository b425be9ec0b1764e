"""Braze: ``POST /users/track``, ``/campaigns/trigger/send``, ``/canvas/trigger/send``.

Contract notes: ../shared/reference/destination-apis.md §1 and §6.2 (auth, limits per request
family, partial failures).
"""

from worker.destinations.base import Destination, Request

from . import response, transform
from .config import ENVIRONMENT, BrazeDelivery, BrazeSettings, families


def family_of(request: Request) -> str:
    """``track`` for /users/track; trigger sends are ``broadcast`` or ``messaging``."""
    if request.endpoint == transform.TRACK:
        return "track"
    broadcast = any(item.group.startswith("broadcast:") for item in request.items)
    return "broadcast" if broadcast else "messaging"


def probe(settings: BrazeSettings) -> Request:
    """An empty /users/track: a valid key gets a 400, a bad one a 401."""
    url = f"{settings.rest_endpoint.rstrip('/')}/users/track"
    return Request("POST", url, b"{}", (), "users/track")


DESTINATION = Destination(
    name="braze",
    settings_type=BrazeSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=(
        "rewards_issued",
        "member_enrolled",
        "offer_issued",
        "audience_membership_changed",
    ),
    auth_headers=transform.auth_headers,
    environment=ENVIRONMENT,
    delivery_type=BrazeDelivery,
    families=families,
    family_of=family_of,
    probe=probe,
)
