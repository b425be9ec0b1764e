"""loyalty-relay: Kafka loyalty events to engagement platforms, with dead-letter topics."""

__version__ = "0.1.0"
