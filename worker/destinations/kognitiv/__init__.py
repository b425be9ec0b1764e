"""Kognitiv Inspire: promotional member groups, with OAuth 2.0 client credentials.

Contract notes: ../shared/reference/destination-apis.md §4 and §5.4 (the REST path and status
codes are unconfirmed by public sources and follow the Zeotap integration).
"""

from worker.destinations.base import Destination

from . import response, transform
from .config import KognitivSettings

DESTINATION = Destination(
    name="kognitiv",
    settings_type=KognitivSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=("audience_membership_changed",),
)
