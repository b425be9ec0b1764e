"""Kognitiv Inspire: promotional member groups, with OAuth 2.0 client credentials.

Contract notes: ../shared/reference/destination-apis.md §4, §5.4 and §6.5 (the REST path and
status codes are unconfirmed by public sources and follow the Zeotap integration). The bearer
token comes from :class:`~worker.destinations.kognitiv.token.TokenProvider` at send time;
fetching it is also the ``check --connect`` probe.
"""

from worker.destinations.base import Destination, SendTimeAuth

from . import response, transform
from .config import ENVIRONMENT, KognitivDelivery, KognitivSettings
from .token import TokenProvider

DESTINATION = Destination(
    name="kognitiv",
    settings_type=KognitivSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=("audience_membership_changed",),
    environment=ENVIRONMENT,
    delivery_type=KognitivDelivery,
    send_time_auth=SendTimeAuth(TokenProvider, response.TokenRejected),
)
