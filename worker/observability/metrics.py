"""Prometheus metrics (served on METRICS_PORT at /metrics by worker.observability.health)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_E2E_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

EVENTS_CONSUMED = Counter(
    "relay_events_consumed_total",
    "Kafka records read, per destination pipeline",
    ["destination", "topic", "event_type"],
)
DELIVERIES = Counter(
    "relay_deliveries_total",
    "Final outcome of each event at each destination (delivered, dead_lettered, skipped)",
    ["destination", "outcome"],
)
RETRIES = Counter(
    "relay_retries_total", "Requests that will be retried", ["destination", "status_class"]
)
HTTP_REQUESTS = Counter(
    "relay_http_requests_total",
    "HTTP requests sent to destinations",
    ["destination", "endpoint", "status_class"],
)
HTTP_LATENCY = Histogram(
    "relay_http_request_seconds",
    "HTTP request latency",
    ["destination", "endpoint"],
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "relay_end_to_end_seconds",
    "occurred_at to accepted by the destination",
    ["destination"],
    buckets=_E2E_BUCKETS,
)
BATCH_SIZE = Histogram(
    "relay_batch_items",
    "Items per request",
    ["destination", "endpoint"],
    buckets=(1, 2, 5, 10, 25, 50, 75, 100, 200, 500, 1000),
)
IN_FLIGHT = Gauge("relay_in_flight_items", "Items in batches not finished yet", ["destination"])
BUFFERED = Gauge(
    "relay_buffered_events", "Consumed events whose outcomes are not final yet", ["destination"]
)
BREAKER_STATE = Gauge(
    "relay_circuit_breaker_state", "0 closed, 1 open, 2 half-open", ["destination"]
)
RATE_LIMIT = Gauge(
    "relay_rate_limit", "Current adaptive rate limit (units per second; 0 = off)", ["destination"]
)
DESTINATION_PAUSED = Gauge(
    "relay_destination_paused", "1 while deliveries wait for working credentials", ["destination"]
)
CONSUMER_LAG = Gauge(
    "relay_consumer_lag",
    "High watermark minus committed offset",
    ["destination", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "relay_dead_letters_total", "Dead letters written", ["destination", "reason"]
)
TOKEN_REFRESHES = Counter(
    "relay_token_refreshes_total", "OAuth token refreshes", ["destination", "cause"]
)
UNREADABLE_PARTITIONS = Gauge(
    "relay_unreadable_partitions",
    "1 while a partition's records cannot be fetched (reported after "
    "RELAY_UNREADABLE_PARTITION_SECONDS; its records are then salvaged one by one)",
    ["destination", "topic", "partition"],
)
KEY_MISMATCH = Counter(
    "relay_key_mismatch_total",
    "Records whose Kafka key is not their member_id (per-member order then holds only "
    "within the record's own partition)",
    ["destination", "topic"],
)
DESTINATION_HALTED = Gauge(
    "relay_destination_halted",
    "1 while a destination stopped consuming because the broker refuses its dead letters",
    ["destination"],
)
