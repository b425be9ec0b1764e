"""The consumer seam: what the pipeline needs from a Kafka consumer, and aiokafka's records
turned into the worker's own :class:`~worker.events.Consumed` values.

The pipeline uses aiokafka's consumer through this protocol only (``dlq``, ``replay`` and
``bench`` read with their own consumers); a test can hand the pipeline any object with these
methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from worker.events import Consumed


class Consumer(Protocol):
    """The part of ``AIOKafkaConsumer`` the pipeline and the fetcher use."""

    def subscribe(self, topics: Sequence[str], *, listener: Any) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> Collection[TopicPartition]: ...
    def assignment(self) -> Collection[TopicPartition]: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def committed(self, partition: TopicPartition) -> int | None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    async def position(self, partition: TopicPartition) -> int: ...
    async def topics(self) -> Collection[str]: ...  # a metadata request: the broker answers


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, forwarded to two functions."""

    def __init__(
        self,
        assigned: Callable[[list[TopicPartition]], None],
        revoked: Callable[[list[TopicPartition]], Awaitable[None]],
    ) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._assigned(list(assigned))


def consumed(message: Any) -> Consumed:
    """An aiokafka ConsumerRecord as the worker's own value; a null header value becomes b""."""
    headers = message.headers
    return Consumed(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        tuple((k, v if v is not None else b"") for k, v in headers) if headers else (),
        message.timestamp or 0,
    )
