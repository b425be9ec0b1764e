"""Send one request until it reaches a final outcome: the only place HTTP happens.

aiohttp and timeout errors become :class:`~worker.errors.Retryable` here and nowhere else. A
request is retried with full-jitter exponential backoff (or the server's ``Retry-After``)
until it is accepted, refused for good, or out of budget (``max_attempts`` and
``max_retry_seconds``). Waiting on an open circuit breaker or on refused OAuth credentials
spends no attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog

from worker.config import DeliverySettings
from worker.deliver.backoff import backoff_delay
from worker.deliver.flow import AdaptiveRateLimiter, CircuitBreaker
from worker.destinations.base import Accepted, Destination, Request, Response
from worker.errors import AuthFailed, DeliveryError, Rejected, Retryable, Throttled
from worker.observability import metrics

log = structlog.get_logger("worker.deliver")

_AUTH_RETRY_SECONDS = 5.0


class DynamicAuth(Protocol):
    """Credentials fetched at send time (Kognitiv's OAuth token)."""

    async def headers(self) -> Mapping[str, str]: ...

    async def invalidate(self, headers_used: Mapping[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str  # the dlq.reason
    error: str
    http_status: int | None


@dataclass(slots=True)
class Result:
    """Final outcome of one request: items not in ``failed`` were delivered."""

    attempts: int
    status: int | None
    failed: dict[int, Failure] = field(default_factory=dict)


class Sender:
    def __init__(
        self,
        destination: Destination[Any],
        settings: Any,
        delivery: DeliverySettings,
        session: aiohttp.ClientSession,
        *,
        auth: DynamicAuth | None = None,
        token_rejected: type[Retryable] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self.delivery = delivery
        self._session = session
        self._static_headers = {
            "Content-Type": "application/json",
            **destination.auth_headers(settings),
        }
        self._auth = auth
        self._token_rejected = token_rejected
        self._clock = clock
        self.limiter = AdaptiveRateLimiter(delivery.rate_limit)
        self.breaker = CircuitBreaker(
            threshold=delivery.breaker_threshold,
            cooldown=delivery.breaker_cooldown_seconds,
            on_change=self._breaker_changed,
        )
        self._slots = asyncio.Semaphore(delivery.concurrency)
        self._auth_failing = False

    async def deliver(self, request: Request) -> Result:
        """Send ``request`` until it reaches a final outcome; never raises DeliveryError."""
        started = self._clock()
        paused = 0.0  # seconds spent waiting on refused credentials: not part of the budget
        attempts = 0
        cost = float(len(request.items)) if self.delivery.rate_unit == "items" else 1.0
        while True:
            await self.breaker.admit()
            await self.limiter.acquire(cost)
            attempts += 1
            try:
                async with self._slots:
                    accepted, status = await self._attempt(request)
            except AuthFailed as exc:
                attempts -= 1
                self.breaker.release_probe()
                self._report_auth(exc)
                await asyncio.sleep(_AUTH_RETRY_SECONDS)
                paused += _AUTH_RETRY_SECONDS
                continue
            except Rejected as exc:
                self.breaker.record_success()  # the destination answered: it is up
                return self._all_failed(request, attempts, exc.reason, exc)
            except Retryable as exc:
                if isinstance(exc, Throttled):
                    self.breaker.release_probe()
                    self.limiter.on_throttled(exc.retry_after)
                else:
                    self.breaker.record_failure()
                metrics.RETRIES.labels(self.name, _status_class(exc.status)).inc()
                delay = exc.retry_after
                if delay is None:
                    delay = backoff_delay(
                        attempts,
                        base=self.delivery.backoff_base_seconds,
                        cap=self.delivery.backoff_cap_seconds,
                    )
                spent = self._clock() - started - paused
                if (
                    attempts >= self.delivery.max_attempts
                    or spent + delay > self.delivery.max_retry_seconds
                ):
                    return self._all_failed(request, attempts, "retries_exhausted", exc)
                log.debug(
                    "retrying",
                    destination=self.name,
                    endpoint=request.endpoint,
                    attempt=attempts,
                    status=exc.status,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            self.breaker.record_success()
            self._recovered()
            return Result(
                attempts=attempts,
                status=status,
                failed={
                    index: Failure(
                        "partial_failure", f"{self.name} rejected the item: {text}", status
                    )
                    for index, text in accepted.rejected.items()
                },
            )

    async def _attempt(self, request: Request) -> tuple[Accepted, int]:
        headers = dict(self._static_headers)
        if self._auth is not None:
            headers.update(await self._auth.headers())
        try:
            response = await self._send(request, headers)
            return self.destination.check(response, request), response.status
        except Retryable as exc:
            if self._auth is None or self._token_rejected is None:
                raise
            if not isinstance(exc, self._token_rejected):
                raise
            # the token expired or was revoked mid-batch: refresh once and retry this call
            metrics.TOKEN_REFRESHES.labels(self.name, "rejected").inc()
            await self._auth.invalidate(headers)
            headers.update(await self._auth.headers())
            response = await self._send(request, headers)
            return self.destination.check(response, request), response.status

    async def _send(self, request: Request, headers: Mapping[str, str]) -> Response:
        started = time.perf_counter()
        status_label = "error"
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.delivery.request_timeout_seconds),
            ) as resp:
                body = await resp.read()
                status_label = f"{resp.status // 100}xx"
                response = Response(resp.status, dict(resp.headers), body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Retryable(
                f"{self.name} {request.endpoint}: {type(exc).__name__}: {_safe(exc)}"
            ) from exc
        finally:
            elapsed = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(self.name, request.endpoint, status_label).inc()
            metrics.HTTP_LATENCY.labels(self.name, request.endpoint).observe(elapsed)
        if 200 <= response.status < 300:
            self.limiter.on_success(response.headers)
        return response

    def _all_failed(
        self, request: Request, attempts: int, reason: str, exc: DeliveryError
    ) -> Result:
        failure = Failure(reason, str(exc), exc.status)
        return Result(
            attempts=attempts,
            status=exc.status,
            failed=dict.fromkeys(range(len(request.items)), failure),
        )

    def _report_auth(self, exc: AuthFailed) -> None:
        if not self._auth_failing:
            self._auth_failing = True
            metrics.DESTINATION_PAUSED.labels(self.name).set(1)
            log.error(
                "credentials_refused",
                destination=self.name,
                error=str(exc),
                action="deliveries paused; retrying every 5 s until the credentials work",
            )

    def _recovered(self) -> None:
        if self._auth_failing:
            self._auth_failing = False
            metrics.DESTINATION_PAUSED.labels(self.name).set(0)
            log.warning("credentials_accepted", destination=self.name, action="deliveries resumed")

    def _breaker_changed(self, state: object) -> None:
        name = getattr(state, "name", str(state)).lower()
        metrics.BREAKER_STATE.labels(self.name).set(getattr(state, "value", 0))
        log.warning("circuit_breaker", destination=self.name, state=name)


def _status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "network"


def _safe(exc: BaseException) -> str:
    # aiohttp messages can include the full URL, and SessionM's URL carries the API key
    text = str(exc)
    return text.split(" url=")[0][:200] if text else ""
