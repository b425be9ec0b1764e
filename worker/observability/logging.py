"""The structlog configuration, in one place: JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from worker.observability.redact import Redactor

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(
    level: str = "info", *, redactor: Redactor | None = None, json: bool | None = None
) -> None:
    """Configure structlog for the process; secrets in ``redactor`` never reach the output."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    redact = redactor or Redactor()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact.event_dict,
    ]
    numeric = _LEVELS.get(level, 20)
    if use_json:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
            cache_logger_on_first_use=True,
        )
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=True,
        )
    # aiokafka logs through the standard library; keep its noise at warning and above
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
