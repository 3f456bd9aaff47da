"""Limits per organization: concurrent live legs and an API request rate.

Each organization has the process's defaults (``Settings.org_*``) unless the store holds an
override (``callbridge org limits``). The request rate is a token bucket per organization, so
one tenant spending its budget leaves every other tenant's untouched. Buckets live in memory:
a restart refills them, which errs on the side of serving.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import Settings
from engine.errors import CallbridgeError
from engine.store.base import OrgLimitsRecord, Store

# A leg's end cannot be foreseen: a dial refused for legs is worth retrying this much later.
LEGS_RETRY_AFTER_S = 1.0


class TooManyRequests(CallbridgeError):
    """429: over a limit; ``retry_after_s`` becomes the ``Retry-After`` header."""

    status = 429
    code = "10011"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        # Whole seconds (RFC 9110), never 0: "retry at once" would only invite a busy loop.
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(frozen=True, slots=True)
class OrgLimits:
    """An organization's limits in force: its overrides over the defaults."""

    max_legs: int
    api_rate: float  # requests per second
    api_burst: int


def effective_limits(settings: Settings, overrides: OrgLimitsRecord) -> OrgLimits:
    o = overrides
    return OrgLimits(
        max_legs=settings.org_max_legs if o.max_legs is None else o.max_legs,
        api_rate=settings.org_api_rate if o.api_rate is None else o.api_rate,
        api_burst=settings.org_api_burst if o.api_burst is None else o.api_burst,
    )


async def limits_for(store: Store, settings: Settings, org_id: int) -> OrgLimits:
    return effective_limits(settings, await store.org_limits(org_id))


class TokenBucket:
    """``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def retune(self, rate: float, burst: int) -> None:
        """Follow a changed override without resetting what has been spent."""
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, float(burst))

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when granted, else the seconds until one will be there."""
        # max(): a clock that steps back must not mint tokens.
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(self._at, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class OrgRateLimiter:
    """One token bucket per organization, on an injectable clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[int, TokenBucket] = {}

    def check(self, org_id: int, limits: OrgLimits) -> None:
        """Spend one of the organization's requests; TooManyRequests when it has none left."""
        now = self._clock()
        bucket = self._buckets.get(org_id)
        if bucket is None:
            bucket = self._buckets[org_id] = TokenBucket(limits.api_rate, limits.api_burst, now)
        elif (bucket.rate, bucket.burst) != (limits.api_rate, limits.api_burst):
            bucket.retune(limits.api_rate, limits.api_burst)
        wait = bucket.take(now)
        if wait > 0:
            raise TooManyRequests(
                f"the organization is over its API rate ({limits.api_rate:g} requests/s, "
                f"burst {limits.api_burst}); retry after {wait:.2f} s",
                retry_after_s=wait,
            )
