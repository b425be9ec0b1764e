"""`loyalty-relay ingest`: events over HTTP into the Kafka topics the worker consumes.

mapping.py (pure: request bodies → validated records), auth.py (tokens and per-token rate),
config.py (INGEST_* settings), service.py (aiohttp handlers, the producer, health and metrics).
"""
