"""The transforms' fast paths give exactly what the general code (or the code they replaced) gives.

Each fast path serves the common case (flat properties, datetimes in UTC, scalar values) at a
fraction of the cost; here each is held to its reference on generated inputs: the same value,
or the same error message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.destinations.test_transform_properties import DATETIME, NESTED, SCALAR
from worker.destinations.braze import transform as braze
from worker.destinations.moengage import transform as moengage
from worker.destinations.values import check_nesting, invalid, utc_datetime
from worker.errors import TransformError

NAMES = st.one_of(
    st.sampled_from(["", "$x", "event_id", "n" * 255, "n" * 256, "é" * 300, "a.b"]),
    st.text(max_size=10),
)
# strings around Braze's 255-character limit, where an off-by-one would hide
EDGE_STRINGS = st.integers(250, 260).map(lambda n: "v" * n)
VALUES = st.one_of(SCALAR, EDGE_STRINGS, NESTED, st.tuples(SCALAR))


def _outcome(check: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", check())
    except TransformError as exc:
        return ("error", str(exc))


# -- the code the fast paths replaced, kept here as the reference ----------------------------

_LEAP_SECOND = re.compile(r"(?<=\d{2}:\d{2}:)60(?=\D|$)")


def _reference_utc_datetime(value: str, what: str, destination: str) -> datetime:
    if isinstance(value, str):
        value = _LEAP_SECOND.sub("59", value[:-1] + "Z" if value.endswith("z") else value, 1)
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise invalid(destination, f"{what} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise invalid(destination, f"{what} is outside the years 1..9999 in UTC") from None


def _reference_check_nesting(value: Any, limit: int, what: str, destination: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list | tuple):
            children = current
        else:
            continue
        if depth > limit:
            raise invalid(destination, f"{what} nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _deep(depth: int, leaf: Any, kind: int) -> Any:
    for _ in range(depth):
        leaf = ({"k": leaf}, [leaf], (leaf,))[kind]
    return leaf


# -- the tests -----------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(st.one_of(DATETIME, st.sampled_from(["2026-06-30T23:59:60Z", "2026-01-01T00:60:00Z"])))
def test_utc_datetime_equals_the_reference(value: str) -> None:
    assert _outcome(lambda: utc_datetime(value, "t", "d")) == _outcome(
        lambda: _reference_utc_datetime(value, "t", "d")
    )


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        VALUES,
        st.builds(_deep, st.integers(0, 40), VALUES, st.integers(0, 2)),
        st.dictionaries(st.text(max_size=4), VALUES, max_size=5),
    ),
    st.integers(1, 35),
)
def test_check_nesting_equals_the_reference(value: Any, limit: int) -> None:
    assert _outcome(lambda: check_nesting(value, limit, "v", "d")) == _outcome(
        lambda: _reference_check_nesting(value, limit, "v", "d")
    )


@settings(max_examples=600, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_moengage_format_time_equals_strftime(moment: datetime) -> None:
    assert moengage.format_time(moment) == moment.strftime(moengage.MOENGAGE_TIME)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(NAMES, VALUES, max_size=6))
def test_moengage_flatten_fast_path_equals_the_general_walk(fields: dict[str, Any]) -> None:
    assert moengage._flatten(fields) == moengage._flatten_nested(fields)
    assert list(moengage._flatten(fields)) == list(moengage._flatten_nested(fields))


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(NAMES, st.one_of(SCALAR, EDGE_STRINGS, VALUES), max_size=6))
def test_braze_flat_property_check_equals_the_general_walk(properties: dict[str, Any]) -> None:
    """Flat properties take the one-pass check; its verdict is the general walk's."""
    assert _outcome(lambda: braze._check_properties(properties)) == _outcome(
        lambda: braze._check_nested_properties(properties)
    )


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(
        st.one_of(NAMES, st.sampled_from(["moe_x", "id", "_id", "moe_"])),
        st.one_of(SCALAR, EDGE_STRINGS, VALUES),
        max_size=6,
    ),
    st.booleans(),
)
def test_moengage_flat_attributes_equal_the_general_path(
    fields: dict[str, Any], object_attributes: bool
) -> None:
    config = moengage.MoEngageSettings(
        api_endpoint="https://api-01.moengage.com",
        workspace_id="WS",
        api_key="k",
        object_attributes=object_attributes,
    )
    fast = _outcome(lambda: moengage._attributes(fields, config))
    assert fast == _outcome(lambda: moengage._nested_attributes(fields, config))
    if fast[0] == "ok":
        assert list(fast[1]) == list(moengage._nested_attributes(fields, config))
