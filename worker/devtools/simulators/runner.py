"""Start every registered simulator together: in-process for tests and the demo, or as a server.

``async with SimulatorSet.start() as sims:`` listens on free loopback ports; ``sims.env()``
returns the variables that point a worker at them and ``sims.<name>`` (or ``sims[name]``) is one
simulator. ``serve()`` runs them until SIGTERM/SIGINT for `loyalty-relay simulate` and prints
one JSON line with the URLs and variables. The simulators come from
:data:`worker.devtools.simulators.registry.SIMULATORS`; with ``lean=True`` only those with a
lean form start, in it (:mod:`worker.devtools.simulators.lean`, for `bench`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .common import SimulatorState
from .lean import LEAN, LeanState
from .registry import SIMULATORS


@dataclass
class Simulator:
    name: str
    url: str
    state: Any  # the simulator's own state class (see the registry)
    runner: web.AppRunner


class SimulatorSet:
    def __init__(self, simulators: Mapping[str, Simulator]) -> None:
        self._simulators = dict(simulators)

    def __getattr__(self, name: str) -> Simulator:
        try:
            return self.__dict__["_simulators"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Simulator:
        return self._simulators[name]

    def __iter__(self) -> Iterator[Simulator]:
        return iter(self._simulators.values())

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for name, simulator in self._simulators.items():
            state = simulator.state
            if isinstance(state, LeanState):  # accepts any key: give the strict defaults
                state = SIMULATORS[name].state_type()
            env.update(SIMULATORS[name].env(simulator.url, state))
        return env

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
        lean: bool = False,
    ) -> AsyncIterator[SimulatorSet]:
        states = dict(states or {})
        started: dict[str, Simulator] = {}
        try:
            for name, fake in SIMULATORS.items():
                app: web.Application
                if lean:
                    if name not in LEAN:
                        continue
                    state: Any = LeanState(name)
                    app = LEAN[name](state)
                else:
                    state = states.get(name) or fake.state_type()
                    state.rate_limits = rate_limits
                    app = fake.create_app(state)
                runner = web.AppRunner(app, access_log=None)
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


def serve(
    host: str = "127.0.0.1", port_base: int = 9200, *, rate_limits: bool = True, lean: bool = False
) -> None:
    """Run every simulator until SIGTERM/SIGINT (ports base, base+1, ... in registry order)."""

    async def main() -> None:
        ports = {name: port_base + index for index, name in enumerate(SIMULATORS)}
        if port_base == 0:
            ports = {}
        async with SimulatorSet.start(host, ports, rate_limits=rate_limits, lean=lean) as sims:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            urls = {sim.name: sim.url for sim in sims}
            sys.stdout.write(orjson.dumps({"simulators": urls, "env": sims.env()}).decode() + "\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(main())
