"""Provider calls that ride out transient faults: which failures deserve another try, how long
to wait before it, and the loop that carries one call out under that policy.

Transient (retried): the provider could not be reached, did not answer in time (the REST
clients cut a request at ``CALLBRIDGE_PROVIDER_TIMEOUT_S``), or answered 5xx or 429. Final (not
retried): any other 4xx, and a failure the gateway raises without an HTTP status (a leg the
gateway does not know, a Twilio call no longer waiting for its answer). The providers' own
SDKs draw the same line: telnyx's ``_base_client.BaseClient._should_retry`` retries 429 and
every status >= 500, plus connection errors and timeouts (it also retries 408 and 409, which we
count with the other 4xx as final); twilio's ``AsyncTwilioHttpClient`` retries every 5xx
(aiohttp_retry ``ExponentialRetry``, ``retry_all_server_errors=True``) and its sync
``TwilioHttpClient`` retries connection errors on idempotent methods only (urllib3
``Retry.DEFAULT_ALLOWED_METHODS``, no POST).

A request that may have reached the provider is retried only when repeating it is harmless:
answer, hangup, reject, streaming stop/start and status are (Telnyx ignores a repeated
``command_id`` on the same call, and ending an ended call is "already ended", which the gateways
count as done); a dial is when the gateway says so (Telnyx: ``command_id`` suppresses a second
Dial). Any other request is retried only when the provider surely did not act on it: 429, or a
connection that was never made.

Waits use exponential backoff with full jitter (a random share of ``base * 2**attempt``, capped
at ``max_delay_s``; telnyx's SDK starts at 0.5 s and caps at 8 s, ``_constants.py``). A
``Retry-After`` (or Telnyx's ``retry-after-ms``) from 0 to 60 s replaces the backoff, as in
telnyx's ``_calculate_retry_timeout``. A call stops retrying once the next wait would end past
``budget_s`` from its first attempt, so it takes at most that plus one request's time. A
*persistent* call (a hangup: the leg stays billed until it is ended) goes on past the budget,
waiting up to ``persistent_cap_s`` between attempts, until the provider confirms or refuses.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from engine.errors import ProviderError
from engine.logs import get_logger

log = get_logger("callbridge.provider_calls")
T = TypeVar("T")
RETRY_AFTER_MAX_S = 60.0  # a longer Retry-After is not followed (telnyx's SDK rule)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    # The whole of a bounded call's retries. Below Telnyx's 60 s command_id window, so a dial
    # retried within it can never ring twice.
    budget_s: float = 30.0
    persistent_cap_s: float = 60.0  # a hangup past the budget is tried again at least this often


class ProviderCallError(ProviderError):
    """A provider request that failed, with what the retry policy needs to judge it.

    ``status``: the HTTP status, None when no answer came. ``sent``: False only when the
    connection could not even be made (the provider cannot have acted). ``retry_after_s``: the
    provider's ``Retry-After``, in seconds, when it gave one."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        sent: bool = True,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.http_status = status
        self.sent = sent
        self.retry_after_s = retry_after_s


def is_transient(error: BaseException, *, idempotent: bool) -> bool:
    """Whether ``error`` is worth another try of the same request."""
    if isinstance(error, ProviderCallError):
        if error.http_status == 429:
            return True  # refused before it was acted on
        if error.http_status is None:
            return idempotent or not error.sent
        return error.http_status >= 500 and idempotent
    if isinstance(error, TimeoutError):
        return idempotent  # it may have been acted on before the answer was lost
    return False


def retry_after(error: BaseException) -> float | None:
    return error.retry_after_s if isinstance(error, ProviderCallError) else None


def backoff(policy: RetryPolicy, attempt: int, ceiling: float, rand: float) -> float:
    """Full jitter: a random share (``rand`` in [0, 1)) of the exponential step."""
    step = policy.base_delay_s * 2.0 ** min(attempt, 32)
    return rand * min(ceiling, step)


def next_delay(
    policy: RetryPolicy,
    *,
    attempt: int,
    elapsed_s: float,
    rand: float,
    retry_after_s: float | None = None,
    persistent: bool = False,
) -> float | None:
    """How long to wait before retry number ``attempt`` (0 for the first retry) of a call that
    started ``elapsed_s`` ago; None to give up."""
    honoured = retry_after_s is not None and 0 < retry_after_s <= RETRY_AFTER_MAX_S
    delay = retry_after_s if honoured else backoff(policy, attempt, policy.max_delay_s, rand)
    assert delay is not None
    if elapsed_s + delay <= policy.budget_s:
        return delay
    if not persistent:
        return None
    if honoured:
        return min(delay, policy.persistent_cap_s)
    # Past the budget the steps keep growing up to the cap, never below the base: no busy loop.
    ceiling = policy.persistent_cap_s
    return max(policy.base_delay_s, backoff(policy, attempt, ceiling, rand))


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (Telnyx's, tried first as in its SDK's
    ``_parse_retry_after_header``) or ``Retry-After`` (seconds or an HTTP date; RFC 9110
    10.2.3); None when absent or unreadable. ``headers`` lookups must be case-insensitive."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


#: Told of every attempt: provider, operation, seconds it took, and its outcome: "ok",
#: "transient" (a fault worth retrying) or "final" (a refusal, or a fault not safe to repeat).
AttemptObserver = Callable[[str, str, float, str], None]


class ProviderCalls:
    """Carries provider calls out under a ``RetryPolicy``; ``close`` ends every wait (at
    shutdown a call still retrying gives up with its last error)."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        observe: AttemptObserver | None = None,
    ) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self._rand = rand
        self._clock = clock
        self._observe = observe
        self._closed = asyncio.Event()

    def close(self) -> None:
        self._closed.set()

    async def run(
        self,
        operation: str,
        leg_id: str,
        call: Callable[[], Awaitable[T]],
        *,
        provider: str = "unknown",
        idempotent: bool = True,
        persistent: bool = False,
    ) -> T:
        """``call()`` until it succeeds; its last error once the policy gives up. Each attempt
        is reported to the observer with ``provider`` and ``operation``."""
        started = self._clock()
        attempt = 0
        while True:
            tried_at = self._clock()
            try:
                result = await call()
            except Exception as exc:
                transient = is_transient(exc, idempotent=idempotent)
                self._attempted(
                    provider, operation, tried_at, "transient" if transient else "final"
                )
                delay = None
                if transient:
                    delay = next_delay(
                        self.policy,
                        attempt=attempt,
                        elapsed_s=self._clock() - started,
                        rand=self._rand(),
                        retry_after_s=retry_after(exc),
                        persistent=persistent,
                    )
                if delay is None:
                    raise
                log.warning(
                    "provider call failed, retrying", operation=operation, leg_id=leg_id,
                    attempt=attempt + 1, retry_in_s=round(delay, 3), error=_describe(exc),
                )  # fmt: skip
                if not await self._pause(delay):
                    log.warning("provider call abandoned at shutdown", operation=operation,
                                leg_id=leg_id)  # fmt: skip
                    raise
                attempt += 1
            else:
                self._attempted(provider, operation, tried_at, "ok")
                return result

    def _attempted(self, provider: str, operation: str, tried_at: float, outcome: str) -> None:
        if self._observe is not None:
            self._observe(provider, operation, self._clock() - tried_at, outcome)

    async def _pause(self, delay_s: float) -> bool:
        """Wait ``delay_s``; False if closed meanwhile."""
        if self._closed.is_set():
            return False
        try:
            async with asyncio.timeout(delay_s):
                await self._closed.wait()
        except TimeoutError:
            return True
        return False


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer within the attempt timeout"
    return str(error) or type(error).__name__
