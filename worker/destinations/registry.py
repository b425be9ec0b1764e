"""Every destination the worker knows, by name. Adding one is one line here (README)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from worker.destinations import braze, kognitiv, moengage, sessionm
from worker.destinations.base import Destination

REGISTRY: Final[Mapping[str, Destination[Any]]] = {
    "braze": braze.DESTINATION,
    "moengage": moengage.DESTINATION,
    "sessionm": sessionm.DESTINATION,
    "kognitiv": kognitiv.DESTINATION,
}
