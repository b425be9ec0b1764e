"""Every simulator, by the name of the destination it fakes. Adding one is one line here.

Each entry gives the simulator's app factory, its state class and the environment that points
a worker at it (the destination's documented variables, with the simulator's default
credentials).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from . import braze, kognitiv, moengage, sessionm
from .common import SimulatorState


@dataclass(frozen=True, slots=True)
class Fake:
    create_app: Callable[[Any], web.Application]
    state_type: type[SimulatorState]
    env: Callable[[str, Any], dict[str, str]]  # (base URL, state) → environment variables


def _braze_env(url: str, state: braze.BrazeState) -> dict[str, str]:
    return {
        "BRAZE_REST_ENDPOINT": url,
        "BRAZE_API_KEY": next(iter(sorted(state.api_keys)), "sim-braze-key"),
    }


def _moengage_env(url: str, _state: moengage.MoEngageState) -> dict[str, str]:
    return {
        "MOENGAGE_API_ENDPOINT": url,
        "MOENGAGE_WORKSPACE_ID": "sim-workspace",
        "MOENGAGE_API_KEY": "sim-moengage-key",
    }


def _sessionm_env(url: str, _state: sessionm.SessionMState) -> dict[str, str]:
    return {
        "SESSIONM_CORE_ENDPOINT": url,
        "SESSIONM_API_KEY": "sim-sessionm-key",
        "SESSIONM_API_SECRET": "sim-sessionm-secret",
    }


def _kognitiv_env(url: str, _state: kognitiv.KognitivState) -> dict[str, str]:
    return {
        "KOGNITIV_API_BASE_URL": url,
        "KOGNITIV_CLIENT_ID": "sim-kognitiv-client",
        "KOGNITIV_CLIENT_SECRET": "sim-kognitiv-secret",
    }


SIMULATORS: Final[Mapping[str, Fake]] = {
    "braze": Fake(braze.create_app, braze.BrazeState, _braze_env),
    "moengage": Fake(moengage.create_app, moengage.MoEngageState, _moengage_env),
    "sessionm": Fake(sessionm.create_app, sessionm.SessionMState, _sessionm_env),
    "kognitiv": Fake(kognitiv.create_app, kognitiv.KognitivState, _kognitiv_env),
}
