"""Consuming: the consumer seam (``consumer.py``) and fetching that never skips (``fetch.py``)."""

from aiokafka import TopicPartition

from worker.consume.consumer import Consumer, RebalanceListener, consumed
from worker.consume.fetch import GuardedFetcher

__all__ = [
    "Consumer",
    "GuardedFetcher",
    "RebalanceListener",
    "TopicPartition",
    "consumed",
]
