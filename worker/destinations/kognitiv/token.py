"""Kognitiv OAuth 2.0 client-credentials token: fetched once, shared, refreshed ahead of expiry.

One token per worker. All concurrent callers share it; one refresh runs at a time (callers that
queued behind the lock see the fresh token and do not fetch again). ``invalidate`` after a 401
forces a refresh only if the token that failed is still the current one, so twenty concurrent
401s cause one refresh. Refused credentials raise :class:`AuthFailed`; while they keep failing,
at most one token request is made per ``retry_seconds``. The token and secret are never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp
import orjson
import structlog

from worker.errors import AuthFailed, Retryable
from worker.observability import metrics

from .config import KognitivSettings

log = structlog.get_logger("worker.kognitiv")

_CREDENTIAL_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})


class TokenProvider:
    def __init__(
        self,
        settings: KognitivSettings,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = 5.0,
    ) -> None:
        self._settings = settings
        self._session = session
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._last_failure: AuthFailed | None = None
        self.token_refreshes = 0

    def __repr__(self) -> str:
        return f"TokenProvider(client_id={self._settings.client_id!r}, token=***)"

    async def headers(self) -> Mapping[str, str]:
        token = self._token
        if token is None or self._clock() >= self._refresh_at:
            token = await self._refresh(stale=token)
        return {"Authorization": f"Bearer {token}"}

    async def invalidate(self, headers_used: Mapping[str, str]) -> None:
        used = headers_used.get("Authorization", "").removeprefix("Bearer ")
        if used and used == self._token:
            self._refresh_at = 0.0

    async def _refresh(self, stale: str | None) -> str:
        async with self._lock:
            if (
                self._token is not None
                and self._token != stale
                and self._clock() < self._refresh_at
            ):
                return self._token  # another caller refreshed while we waited
            failure = self._last_failure
            if (
                failure is not None
                and self._clock() - (self._failed_at or 0.0) < self._retry_seconds
            ):
                raise failure
            token, lifetime = await self._fetch()
            self._token = token
            margin = self._settings.token_refresh_margin_seconds
            ahead = margin if lifetime > 2 * margin else lifetime / 2
            self._refresh_at = self._clock() + max(0.0, lifetime - ahead)
            self.token_refreshes += 1
            metrics.TOKEN_REFRESHES.labels("kognitiv", "scheduled").inc()
            if self._failed_at is not None:
                log.warning("token_refresh_recovered", destination="kognitiv")
            self._failed_at = None
            self._last_failure = None
            return token

    async def _fetch(self) -> tuple[str, float]:
        url = f"{self._settings.api_base_url.rstrip('/')}/Auth/connect/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.get_secret_value(),
        }
        try:
            async with self._session.post(
                url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp:
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Retryable(f"kognitiv token endpoint unreachable: {type(exc).__name__}") from exc
        document = _json(body)
        access_token = document.get("access_token")
        if status == 200 and isinstance(access_token, str):
            expires_in = document.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            return access_token, lifetime
        error = str(document.get("error", ""))
        if status in (400, 401) and (error in _CREDENTIAL_ERRORS or status == 401):
            failure = AuthFailed(
                f"kognitiv refused the client credentials ({error or status}): "
                "check KOGNITIV_CLIENT_ID and KOGNITIV_CLIENT_SECRET",
                status=status,
            )
            self._failed_at = self._clock()
            self._last_failure = failure
            raise failure
        raise Retryable(f"kognitiv token endpoint answered HTTP {status}", status=status)


def _json(body: bytes) -> dict[str, object]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}
