"""The real pipeline, in process, driven by a hypothesis state machine.

Two ``DestinationPipeline`` replicas (one consumer group) over one in-memory log, delivering to
the strict Braze simulator over loopback HTTP, dead letters to an in-memory producer. The rules
append events (valid and malformed, with small gaps), let time pass, make Braze fail (a 503
outage, 503 on half the requests, a 429 with Retry-After, a 400) or recover, move partitions
between the replicas (an eager rebalance), and crash a replica and restart it from the
committed offsets. After every case the faults are cleared, everything settles, the replicas
stop gracefully, and ``World.check`` verifies the guarantees (tests/inprocess/world.py says
exactly what at-least-once allows); every commit is checked as it happens.

Profiles: ``inprocess`` (default: 100 derandomized cases, 5-12 s here) and ``inprocess-long``
(``-m long``: 300 random cases of up to 25 steps).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from tests.inprocess.conftest import Loop
from tests.inprocess.world import MALFORMED, MEMBERS, PARTITIONS, World

settings.register_profile(
    "inprocess",
    max_examples=100,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "inprocess-long",
    max_examples=300,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# (member, malformed reason or None, ms to let pass after it): gaps split a member's events
# over several batches, which is where per-member order can break
_records = st.lists(
    st.tuples(
        st.sampled_from(MEMBERS),
        st.sampled_from([None, None, None, None, None, *MALFORMED]),
        st.sampled_from([0, 0, 1, 3]),
    ),
    min_size=1,
    max_size=10,
)


class PipelineMachine(RuleBasedStateMachine):
    loop: Loop  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        sims = self.loop.sims
        sims.braze.state.reset()
        sims.braze.state.faults.update({"clear": True})
        sims.braze.state.throttle_mode = "retry_after"
        self.world = World(self.loop.settings, sims, self.loop.session)

    def _run(self, awaitable: Any) -> Any:
        return self.loop.run(awaitable)

    @initialize()
    def start(self) -> None:
        self._run(self.world.start_replica("a", list(PARTITIONS)))
        self._run(self.world.start_replica("b", []))

    @rule(records=_records)
    def append(self, records: list[tuple[str, str | None, int]]) -> None:
        self._run(self._append(records))
        self.world.steps.append(f"append {records}")

    async def _append(self, records: list[tuple[str, str | None, int]]) -> None:
        for member, malformed, gap_ms in records:
            self.world.append(member, malformed)
            if gap_ms:
                await asyncio.sleep(gap_ms / 1000)

    @rule(ms=st.integers(min_value=1, max_value=10))
    def run_for(self, ms: int) -> None:
        self._run(asyncio.sleep(ms / 1000))
        self.world.steps.append(f"run {ms} ms")

    @rule(kind=st.sampled_from(["503", "flaky", "429", "400"]))
    def destination_fails(self, kind: str) -> None:
        faults = self.loop.sims.braze.state.faults
        faults.update({"clear": True})
        if kind == "503":  # an outage until a recover
            faults.update({"status": 503, "status_probability": 1.0})
        elif kind == "flaky":  # half the requests get a 503: retries finish in any order
            faults.update({"status": 503, "status_probability": 0.5})
        elif kind == "429":  # the next request: 429 with Retry-After: 1
            faults.update({"throttle_count": 1})
        else:  # the next request: 400, its items are dead-lettered
            faults.update({"status": 400, "status_count": 1})
        self.world.steps.append(f"fail {kind}")

    @rule()
    def destination_recovers(self) -> None:
        self.loop.sims.braze.state.faults.update({"clear": True})
        self.world.steps.append("recover")

    @rule(owners=st.tuples(*[st.sampled_from("ab")] * len(PARTITIONS)))
    def rebalance(self, owners: tuple[str, ...]) -> None:
        self._run(self.world.rebalance(dict(zip(PARTITIONS, owners, strict=True))))
        self.world.steps.append(f"rebalance {''.join(owners)}")

    @rule(name=st.sampled_from("ab"))
    def crash_and_restart(self, name: str) -> None:
        owned = [tp for tp, owner in self.world.owner.items() if owner == name]
        self._run(self.world.crash(name))
        self._run(self.world.start_replica(name, owned))
        self.world.steps.append(f"crash+restart {name}")

    def teardown(self) -> None:
        world = self.world
        self.loop.sims.braze.state.faults.update({"clear": True})
        try:
            self._run(world.settle())
            self._run(world.stop_all())
        finally:
            for name in list(world.replicas):  # a failed case: do not leave tasks running
                with contextlib.suppress(Exception):
                    self._run(world.crash(name))
        world.check()


def _machine(loop: Loop) -> type[PipelineMachine]:
    return type("Machine", (PipelineMachine,), {"loop": loop})


def test_pipeline_guarantees_hold_under_faults_rebalances_and_crashes(loop: Loop) -> None:
    run_state_machine_as_test(_machine(loop), settings=settings.get_profile("inprocess"))


@pytest.mark.long
def test_pipeline_guarantees_long(loop: Loop) -> None:
    run_state_machine_as_test(_machine(loop), settings=settings.get_profile("inprocess-long"))
