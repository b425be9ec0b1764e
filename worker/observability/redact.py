"""Keep secrets and personal data out of logs and dead-letter headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

_EMAIL: Final = re.compile(r"([^\s\"'<>@:/]{1,64})@([^\s\"'<>@]+\.[A-Za-z]{2,})")
_AUTH_HEADER: Final = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)\s+\S+")
_SENSITIVE_KEYS: Final = frozenset(
    {"authorization", "api_key", "api_secret", "client_secret", "password", "token", "secret"}
)


class Redactor:
    """Replaces known secret values, Authorization headers, and masks e-mail addresses."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, "***")
        value = _AUTH_HEADER.sub(r"\1\2 ***", value)
        return _EMAIL.sub(_mask_email, value)

    def event_dict(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor."""
        for key, value in event.items():
            if key.lower() in _SENSITIVE_KEYS:
                event[key] = "***"
            elif isinstance(value, str):
                event[key] = self.text(value)
        return event


def _mask_email(match: re.Match[str]) -> str:
    local = match.group(1)
    return f"{local[:1]}***@{match.group(2)}"
