"""The msgspec model agrees with the JSON Schemas in schemas/ (the published contract).

The model is a fast check that may only accept what the JSON Schemas accept; it must also
accept every valid example and every realistic event, or it would be no faster.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.decode import FAST_CHECK_MAX_BYTES, _validators, decode
from worker.devtools.sample import make_event
from worker.errors import DecodeError
from worker.event_model import surely_valid
from worker.events import EVENT_TYPES, Consumed

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "schemas" / "examples").glob("*.json"))


def _schemas_accept(document: Any) -> bool:
    validators = _validators()
    try:
        validators["envelope"](document)
        validators[document["event_type"]](document["data"])
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_accepted_by_both(path: Path) -> None:
    value = path.read_bytes()
    assert _schemas_accept(orjson.loads(value))
    assert surely_valid(value)


def test_every_sample_event_is_accepted_by_both() -> None:
    rng = random.Random(3)
    for sequence in range(400):
        event = make_event(EVENT_TYPES[sequence % 4], f"member-{sequence}", sequence, rng)
        value = orjson.dumps(event)
        assert _schemas_accept(event), event
        assert surely_valid(value), event


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [
            "",
            "x" * 256,
            "2026-11-20T09:32:00Z",
            "2026-02-30T09:32:00Z",
            "2026-11-20T09:32:00",
            "2026-11-20 09:32:00Z",
            "2026-11-20T09:32:00+0100",
            "2026-11-20T09:32:00.5+01:00\n",
            "a@b.co",
            "a..b@c.de",
            "a@b",
            "FR",
            "FR\n",
            "Europe/Paris\n",
            "sessionm\n",
            "fr",
            "FRA",
            "Europe/Paris",
            "Europe/Paris/x/y",
            ".",
            "..",
            "a\x01b",
            "b\x9f",
            "8c1f2a9e",
            "add",
            "remove",
            "opted_in",
            "subscribed",
            *EVENT_TYPES,
        ]
    )
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_BASES = [orjson.loads(path.read_bytes()) for path in EXAMPLES]


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    """An example with a few fields (of the envelope or of data) replaced, removed or added."""
    document: dict[str, Any] = orjson.loads(orjson.dumps(draw(st.sampled_from(_BASES))))
    document["event_type"] = draw(st.sampled_from(EVENT_TYPES))  # data of another type, too
    for _ in range(draw(st.integers(1, 3))):
        data = document.get("data")
        nested = [data, document.get("identifiers")]
        if isinstance(data, dict):
            nested.append(data.get("enrollment"))
        targets = [document, *(part for part in nested if isinstance(part, dict))]
        target = draw(st.sampled_from(targets))
        names = [
            *target,
            "braze_campaign_id",
            "braze_canvas_id",
            "ttl_seconds",
            "campaign",
            "identifiers",
            "enrollment",
            "sessionm",
            "Kognitiv",
        ]
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0:
            target.pop(name, None)
        else:
            target[name] = draw(_JSON)
    return document


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_the_model_accepts_only_what_the_schemas_accept(document: dict[str, Any]) -> None:
    value = orjson.dumps(document)
    if surely_valid(value):
        assert _schemas_accept(document), document


@pytest.mark.parametrize(("version", "schemas_accept"), [(b"1.0", True), (b"true", False)])
def test_values_msgspec_reads_more_strictly_fall_back_to_the_schemas(
    version: bytes, schemas_accept: bool
) -> None:
    """``schema_version: 1.0`` is an integer to JSON Schema: the model says "not sure"."""
    value = (
        EXAMPLES[0].read_bytes().replace(b'"schema_version": 1', b'"schema_version": ' + version)
    )
    assert value != EXAMPLES[0].read_bytes()
    assert not surely_valid(value)
    assert _schemas_accept(orjson.loads(value)) is schemas_accept


def test_large_values_are_checked_by_the_json_schemas_alone() -> None:
    """Over FAST_CHECK_MAX_BYTES the model is not asked (its copy would double the memory)."""
    document = orjson.loads(EXAMPLES[-1].read_bytes())
    document["data"]["padding"] = "x" * FAST_CHECK_MAX_BYTES
    event = decode(Consumed("t", 0, 0, None, orjson.dumps(document)))
    assert event.data["padding"] == document["data"]["padding"]
    document["data"]["reward_type"] = ""
    with pytest.raises(DecodeError) as caught:
        decode(Consumed("t", 0, 0, None, orjson.dumps(document)))
    assert caught.value.reason == "schema_violation"
    assert "data.reward_type" in str(caught.value)
