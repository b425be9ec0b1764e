"""Braze: ``POST /users/track``, ``/campaigns/trigger/send``, ``/canvas/trigger/send``.

Contract notes: ../shared/reference/destination-apis.md §1 (auth, limits, partial failures).
"""

from worker.destinations.base import Destination

from . import response, transform
from .config import BrazeSettings

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
)
