"""Prometheus metrics of the ingest service (served on INGEST_PORT at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "relay_ingest_requests_total", "HTTP requests to the ingest routes", ["route", "status"]
)
ITEMS_ACCEPTED = Counter(
    "relay_ingest_items_accepted_total",
    "Items the broker acknowledged (a 202 reported them)",
    ["route", "event_type"],
)
ITEMS_REJECTED = Counter(
    "relay_ingest_items_rejected_total",
    "Items refused, by dead-letter reason (or broker_unavailable: not acknowledged in time)",
    ["route", "reason"],
)
PRODUCE_LATENCY = Histogram(
    "relay_ingest_produce_seconds",
    "From the first send to the last broker acknowledgement of one request's records",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
