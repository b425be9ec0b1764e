"""MoEngage Data API: bulk ``POST /v1/transition/{workspace_id}`` (Basic auth).

Contract notes: ../shared/reference/destination-apis.md §2.
"""

from worker.destinations.base import Destination

from . import response, transform
from .config import MoEngageSettings

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
)
