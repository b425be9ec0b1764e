"""An in-memory producer for the DeadLetterWriter: it records what it acknowledges.

``send`` returns a future like aiokafka's; the acknowledgement comes on a later loop turn. Told
to refuse (``refuse`` set to an exception), every send from then on fails with it at the
future, as a broker's refusal does; nothing refused is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class MemoryProducer:
    def __init__(self) -> None:
        self.acknowledged: list[Produced] = []
        self.refused = 0
        self.refuse: BaseException | None = None

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        record = Produced(topic, key, value, dict(headers or ()))
        asyncio.get_running_loop().call_soon(self._answer, future, record, self.refuse)
        return future

    def _answer(
        self, future: asyncio.Future[None], record: Produced, refuse: BaseException | None
    ) -> None:
        if future.done():
            return
        if refuse is not None:
            self.refused += 1
            future.set_exception(refuse)
            return
        self.acknowledged.append(record)
        future.set_result(None)
