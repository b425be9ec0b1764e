"""Kognitiv's webhook templates (seeds 000 and 001) filled in as Kognitiv renders them.

Every value is a string, as the templates' ``{{placeholders}}`` produce; the demo posts these
through the ingest service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.ingest.mapping import BRAZE_ROUTE, MOENGAGE_ROUTE


@dataclass(frozen=True, slots=True)
class WebhookSample:
    name: str
    route: str
    scheme: str  # "Bearer" or "Basic", as the template sends it
    body: dict[str, Any]
    member_id: str


def webhook_samples(now: datetime | None = None) -> list[WebhookSample]:
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return [
        WebhookSample(
            "000 rewards_issued",
            BRAZE_ROUTE,
            "Bearer",
            {
                "events": [
                    {
                        "external_id": "kls-member-1001",
                        "app_id": "93ec5a59-3752-4a45-8559-55b61209ba38",
                        "name": "rewards_issued",
                        "time": stamp,
                        "issued_date": stamp,
                        "issued_location_name": "Store #12 Lincoln Park",
                        "reward_type": "free_coffee",
                    }
                ]
            },
            "kls-member-1001",
        ),
        WebhookSample(
            "000 enrollment",
            BRAZE_ROUTE,
            "Bearer",
            {
                "attributes": [
                    {
                        "app_id": "93ec5a59-3752-4a45-855b6109ba38",
                        "bio": "Software Architect",
                        "country": "US",
                        "email": "grace.sample@example.com",
                        "email_subscribe": "opted_in",
                        "external_id": "kls-member-1002",
                        "first_name": "Grace",
                        "home_city": "Chicago",
                        "time_zone": "America/Chicago",
                        "total_points_balance": "1200",
                        "CreatedKLS": stamp,
                        "email_contact_allowed": "true",
                        "sms_contact_allowed": "false",
                        "date_joined": stamp,
                    }
                ]
            },
            "kls-member-1002",
        ),
        WebhookSample(
            "001 rewards_issued",
            MOENGAGE_ROUTE,
            "Basic",
            {
                "type": "event",
                "customer_id": "kls-member-1003",
                "actions": [
                    {
                        "action": "rewards_issued",
                        "attributes": {
                            "time": stamp,
                            "issued_date": stamp,
                            "issued_location_name": "Store #7 Wicker Park",
                            "reward_type": "birthday_treat",
                        },
                    }
                ],
            },
            "kls-member-1003",
        ),
    ]
