"""SessionM Core: customer tags, ``POST /priv/v1/apps/{api_key}/users/{user_id}/tags``.

Contract notes: ../shared/reference/destination-apis.md §3 and §5.3.
"""

from worker.destinations.base import Destination

from . import response, transform
from .config import SessionMSettings

DESTINATION = Destination(
    name="sessionm",
    settings_type=SessionMSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=("audience_membership_changed",),
    auth_headers=transform.auth_headers,
)
