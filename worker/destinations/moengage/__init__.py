"""MoEngage Data API: bulk ``POST /v1/transition/{workspace_id}`` (Basic auth).

Contract notes: ../shared/reference/destination-apis.md §2 and §6.3.
"""

from worker.destinations.base import Destination, Request

from . import response, transform
from .config import ENVIRONMENT, MoEngageDelivery, MoEngageSettings, families


def probe(settings: MoEngageSettings) -> Request:
    """A bulk import with no elements: a valid key gets a 400, a bad one a 401."""
    url = f"{settings.api_endpoint.rstrip('/')}/v1/transition/{settings.workspace_id}"
    return Request("POST", url, b'{"type":"transition","elements":[]}', (), "transition")


DESTINATION = Destination(
    name="moengage",
    settings_type=MoEngageSettings,
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
    split_budget=response.split_budget,
    auth_headers=transform.auth_headers,
    environment=ENVIRONMENT,
    delivery_type=MoEngageDelivery,
    families=families,
    family_of=lambda _request: "transition",
    probe=probe,
)
