"""Braze forwards only the contract's fields: its field lists follow schemas/ exactly."""

from __future__ import annotations

import pytest

from worker.decode import load_schemas
from worker.destinations.braze import transform as braze

# data fields that steer delivery rather than describe the event
ROUTING = {"braze_campaign_id", "braze_canvas_id", "broadcast", "enrollment"}


@pytest.mark.parametrize("event_type", ["rewards_issued", "offer_issued"])
def test_braze_event_fields_are_the_schemas_properties(event_type: str) -> None:
    properties = set(load_schemas()[event_type]["properties"]) - ROUTING
    braze_fields = braze._REWARD_FIELDS if event_type == "rewards_issued" else braze._OFFER_FIELDS
    assert set(braze_fields) == properties
