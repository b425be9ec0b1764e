"""Send one request until it reaches a final outcome: the only place HTTP happens.

aiohttp and timeout errors become :class:`~worker.errors.Retryable` here and nowhere else. A
request is retried with full-jitter exponential backoff (or the server's ``Retry-After``)
until it is accepted, refused for good, or out of budget (``max_attempts`` failed attempts,
429s not counted, and ``max_retry_seconds``). A throttle waits as the server says (its
``Retry-After`` or ``X-RateLimit-Reset``, however distant) and that wait spends no budget: a
429 makes lag, never a dead letter. Other retryable failures spend the budget, and the last
wait is cut to what is left so the request is tried once more before it is given up. Each
attempt takes, in this order, a concurrency slot of the request's family, the circuit
breaker's admission and the family's rate-limiter tokens (``worker.deliver.flow``).
Waiting on an open breaker spends time but no attempts; waiting on refused OAuth credentials
spends neither, so an outage or a credential problem makes lag, not dead letters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from worker.deliver.backoff import backoff_delay
from worker.deliver.flow import AdaptiveRateLimiter, CircuitBreaker, FamilyFlow
from worker.destinations.base import (
    Accepted,
    DeliverySettings,
    Destination,
    DynamicAuth,
    Request,
    Response,
)
from worker.errors import AuthFailed, DeliveryError, Rejected, Retryable, Throttled
from worker.observability import metrics

log = structlog.get_logger("worker.deliver")

_AUTH_RETRY_SECONDS = 5.0


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
        self._settings = settings
        self.delivery = delivery
        self._session = session
        self._static_headers = {
            "Content-Type": "application/json",
            **destination.auth_headers(settings),
        }
        self._auth = auth
        self._token_rejected = token_rejected
        self._clock = clock
        families = destination.request_families(delivery)
        self.flows = {family.name: FamilyFlow(family) for family in families}
        self.breaker = CircuitBreaker(
            threshold=delivery.breaker_threshold,
            cooldown=delivery.breaker_cooldown_seconds,
            on_change=self._breaker_changed,
        )
        self._auth_failing = False

    @property
    def limiter(self) -> AdaptiveRateLimiter:
        """The first request family's first limiter (the rate the metrics show)."""
        return next(iter(self.flows.values())).limiter

    def flow(self, request: Request) -> FamilyFlow:
        return self.flows[self.destination.family_of(request)]

    @property
    def healthy(self) -> bool:
        """False while the breaker is not closed or the credentials are refused.

        The pipeline pauses its partitions meanwhile: events wait in Kafka, not in memory.
        """
        return self.breaker.closed and not self._auth_failing

    async def deliver(self, request: Request, *, split: bool = True) -> Result:
        """Send ``request`` until it reaches a final outcome; never raises DeliveryError.

        Budgets: ``max_attempts`` counts failed attempts other than 429s (a throttled request is
        the pool's fault, not the request's), ``max_retry_seconds`` counts wall time from the
        first attempt minus time spent waiting on refused credentials. Waiting on an open
        breaker spends no attempt, only time.
        """
        started = self._clock()
        # seconds spent waiting on refused credentials or on the server's rate-limit reset:
        # not part of the budget (a throttle is the pool's fault, not the request's)
        paused = 0.0
        limiter_waits: list[float] = []
        attempts = 0  # HTTP attempts made (dlq.attempts)
        failures = 0  # attempts that count against max_attempts
        while True:
            attempts += 1
            try:
                accepted, status = await self._admitted_attempt(request, limiter_waits)
            except AuthFailed as exc:
                attempts -= 1
                self._report_auth(exc)
                await asyncio.sleep(_AUTH_RETRY_SECONDS)
                paused += _AUTH_RETRY_SECONDS
                continue
            except Rejected as exc:
                if split and len(request.items) > 1:
                    budget = self.destination.split_budget(exc.status, self._settings)
                    if budget > 0:
                        return await self._split(request, attempts, exc, budget)
                return self._all_failed(request, attempts, exc.reason, exc)
            except Retryable as exc:
                if not isinstance(exc, Throttled):
                    failures += 1
                paused += sum(limiter_waits)
                limiter_waits.clear()
                left = self.delivery.max_retry_seconds - (self._clock() - started - paused)
                if failures >= self.delivery.max_attempts or left <= 0:
                    return self._all_failed(request, attempts, "retries_exhausted", exc)
                delay = self._retry_delay(exc, attempts)
                if isinstance(exc, Throttled):
                    paused += delay  # waiting as the server says spends no budget
                else:
                    delay = min(delay, left)  # spend the rest of the budget, then try once more
                metrics.RETRIES.labels(self.name, _status_class(exc.status)).inc()
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

    async def _admitted_attempt(
        self, request: Request, limiter_waits: list[float]
    ) -> tuple[Accepted, int]:
        """One attempt: a family slot, then the breaker's admission, rate tokens, the call.

        The slot is taken first so that a request parked on the breaker or the limiter cannot
        slip out later without both. The breaker learns the outcome here and only here.
        """
        flow = self.flow(request)
        async with flow.slots:
            probe = await self.breaker.admit()
            try:
                waiting_since = self._clock()
                await flow.acquire(request)
                limiter_waits.append(self._clock() - waiting_since)
                accepted, status = await self._attempt(request)
            except Throttled as exc:
                if probe:
                    self.breaker.release_probe()
                self._throttled(request, exc)
                raise
            except Retryable:
                self.breaker.record_failure()
                raise
            except Rejected:
                self.breaker.record_success()  # the destination answered: it is up
                raise
            except BaseException:  # AuthFailed, cancellation: the probe told us nothing
                if probe:
                    self.breaker.release_probe()
                raise
            self.breaker.record_success()
            return accepted, status

    def _retry_delay(self, exc: Retryable, attempts: int) -> float:
        if exc.retry_after is not None:
            return exc.retry_after
        return backoff_delay(
            attempts, base=self.delivery.backoff_base_seconds, cap=self.delivery.backoff_cap_seconds
        )

    def _throttled(self, request: Request, exc: Throttled) -> None:
        flow = self.flow(request)
        if flow.on_throttled(exc.retry_after):
            log.warning(
                "rate_limited",
                destination=self.name,
                endpoint=request.endpoint,
                family=flow.name,
                rate=round(flow.limiter.rate, 2),
                retry_after_s=None if exc.retry_after is None else round(exc.retry_after, 3),
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
            self.flow(request).on_success(response.headers)
        return response

    async def _split(self, request: Request, attempts: int, exc: Rejected, budget: int) -> Result:
        """Bisect a request refused as a whole until the items that cause it are isolated.

        Halves are sent in order (left first, so a member's items keep their order) through
        :meth:`deliver` without further splitting there; a half refused as a whole the same way
        is bisected again. At most ``budget`` extra requests: what is still unresolved then is
        dead-lettered with the refusal it got.
        """
        log.info(
            "bulk_split",
            destination=self.name,
            endpoint=request.endpoint,
            count=len(request.items),
            status=exc.status,
            max_requests=budget,
        )
        result = Result(attempts=attempts, status=exc.status)
        await self._bisect(request, 0, exc, [budget], result)
        if result.failed:
            result.status = exc.status
        return result

    async def _bisect(
        self, request: Request, offset: int, exc: Rejected, budget: list[int], result: Result
    ) -> None:
        """Send both halves of ``request`` (refused as a whole with ``exc``), recursing into a
        half refused the same way; ``offset`` maps its items back to the original request."""
        items = request.items
        if len(items) < 2 or budget[0] < 2:
            failure = Failure(exc.reason, str(exc), exc.status)
            result.failed.update(dict.fromkeys(range(offset, offset + len(items)), failure))
            return
        budget[0] -= 2
        half = len(items) // 2
        for start, part in ((offset, items[:half]), (offset + half, items[half:])):
            sub = self.destination.build(part[0].group, part, self._settings)
            outcome = await self.deliver(sub, split=False)
            result.attempts += outcome.attempts
            if outcome.status is not None and not outcome.failed:
                result.status = outcome.status
            refusal = _refused_as_whole(outcome, len(part))
            if (
                refusal is not None
                and len(part) > 1
                and self.destination.split_budget(refusal.status, self._settings) > 0
            ):
                await self._bisect(sub, start, refusal, budget, result)
                continue
            for index, failure in outcome.failed.items():
                result.failed[start + index] = failure

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


def _refused_as_whole(outcome: Result, count: int) -> Rejected | None:
    """The permanent refusal a whole request got (every item, one failure), else None."""
    failures = {id(failure): failure for failure in outcome.failed.values()}
    if len(outcome.failed) != count or len(failures) != 1:
        return None
    (failure,) = failures.values()
    if failure.reason != Rejected.reason:
        return None
    return Rejected(failure.error, status=failure.http_status)


def _status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "network"


def _safe(exc: BaseException) -> str:
    # aiohttp messages can include the full URL, and some destinations put a key in the path
    text = str(exc)
    return text.split(" url=")[0][:200] if text else ""
