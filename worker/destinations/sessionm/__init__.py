"""SessionM Core: customer tags, ``POST /priv/v1/apps/{api_key}/users/{user_id}/tags``.

Contract notes: ../shared/reference/destination-apis.md §3, §5.3 and §6.4.
"""

from urllib.parse import quote

from worker.destinations.base import Destination, Request

from . import response, transform
from .config import ENVIRONMENT, SessionMDelivery, SessionMSettings


def probe(settings: SessionMSettings) -> Request:
    """An empty tag list for a made-up user: valid credentials get an error body, bad a 401."""
    key = quote(settings.api_key.get_secret_value(), safe="")
    base = settings.core_endpoint.rstrip("/")
    url = f"{base}/priv/v1/apps/{key}/users/loyalty-relay-check/tags"
    return Request("POST", url, b'{"tags":[]}', (), "users/tags")


DESTINATION = Destination(
    name="sessionm",
    settings_type=SessionMSettings,
    transform=transform.transform,
    batch_rule=transform.batch_rule,
    build=transform.build,
    check=response.check,
    event_types=("audience_membership_changed",),
    auth_headers=transform.auth_headers,
    environment=ENVIRONMENT,
    delivery_type=SessionMDelivery,
    probe=probe,
)
