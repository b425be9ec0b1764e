"""Start the four simulators together: in-process for tests and the demo, or as a server.

``async with SimulatorSet.start() as sims:`` listens on free loopback ports; ``sims.env()``
returns the variables that point a worker at them. ``serve()`` runs them until SIGTERM/SIGINT
for `loyalty-relay simulate` and prints one JSON line with the URLs and variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from . import braze, kognitiv, moengage, sessionm
from .common import SimulatorState


@dataclass
class Simulator:
    name: str
    url: str
    state: Any  # the simulator's own state class (BrazeState, ...)
    runner: web.AppRunner


class SimulatorSet:
    def __init__(self, simulators: Mapping[str, Simulator]) -> None:
        self._simulators = dict(simulators)

    @property
    def braze(self) -> Simulator:
        return self._simulators["braze"]

    @property
    def moengage(self) -> Simulator:
        return self._simulators["moengage"]

    @property
    def sessionm(self) -> Simulator:
        return self._simulators["sessionm"]

    @property
    def kognitiv(self) -> Simulator:
        return self._simulators["kognitiv"]

    def __iter__(self) -> Any:
        return iter(self._simulators.values())

    def env(self) -> dict[str, str]:
        return {
            "BRAZE_REST_ENDPOINT": self.braze.url,
            "BRAZE_API_KEY": next(iter(sorted(self.braze.state.api_keys)), "sim-braze-key"),
            "MOENGAGE_API_ENDPOINT": self.moengage.url,
            "MOENGAGE_WORKSPACE_ID": "sim-workspace",
            "MOENGAGE_API_KEY": "sim-moengage-key",
            "SESSIONM_CORE_ENDPOINT": self.sessionm.url,
            "SESSIONM_API_KEY": "sim-sessionm-key",
            "SESSIONM_API_SECRET": "sim-sessionm-secret",
            "KOGNITIV_API_BASE_URL": self.kognitiv.url,
            "KOGNITIV_CLIENT_ID": "sim-kognitiv-client",
            "KOGNITIV_CLIENT_SECRET": "sim-kognitiv-secret",
        }

    def summary(self, name: str) -> tuple[int, int]:
        """(accepted items, HTTP requests) at one simulator."""
        state: SimulatorState = self._simulators[name].state
        return len(state.received), len(state.requests)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        *,
        rate_limits: bool = True,
        states: Mapping[str, SimulatorState] | None = None,
    ) -> AsyncIterator[SimulatorSet]:
        states = dict(states or {})
        factories: dict[str, tuple[Callable[[Any], web.Application], type[SimulatorState]]] = {
            "braze": (braze.create_app, braze.BrazeState),
            "moengage": (moengage.create_app, moengage.MoEngageState),
            "sessionm": (sessionm.create_app, sessionm.SessionMState),
            "kognitiv": (kognitiv.create_app, kognitiv.KognitivState),
        }
        started: dict[str, Simulator] = {}
        try:
            for name, (create_app, state_type) in factories.items():
                state = states.get(name) or state_type()
                state.rate_limits = rate_limits
                runner = web.AppRunner(create_app(state), access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, host, (ports or {}).get(name, 0))
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                shown = "127.0.0.1" if host == "0.0.0.0" else host
                started[name] = Simulator(name, f"http://{shown}:{port}", state, runner)
            yield cls(started)
        finally:
            for simulator in started.values():
                await simulator.runner.cleanup()


def serve(host: str = "127.0.0.1", port_base: int = 9200, *, rate_limits: bool = True) -> None:
    """Run all four simulators until SIGTERM/SIGINT (ports base..base+3)."""

    async def main() -> None:
        ports = {
            "braze": port_base,
            "moengage": port_base + 1,
            "sessionm": port_base + 2,
            "kognitiv": port_base + 3,
        }
        if port_base == 0:
            ports = {}
        async with SimulatorSet.start(host, ports, rate_limits=rate_limits) as sims:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            urls = {sim.name: sim.url for sim in sims}
            sys.stdout.write(orjson.dumps({"simulators": urls, "env": sims.env()}).decode() + "\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(main())
