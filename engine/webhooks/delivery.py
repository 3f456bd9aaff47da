"""The parts of webhook delivery that ``engine.webhooks.outbox.WebhookOutbox`` puts together: one
POST made into an attempt record, the retry schedule (exponential, full jitter) and the in-flight
work of each destination."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from engine.store.base import AttemptRecord
from engine.url_policy import ForbiddenAddress

# How much of a receiver's answer an attempt keeps (Telnyx keeps up to 10 kB of each: the
# telnyx SDK's types/http.py; less here, since every attempt is kept in the row).
MAX_KEPT_BODY = 1024
MAX_KEPT_HEADERS = 1024
MAX_ERROR = 500

Destination = tuple[int, str]  # (organization id, URL): what one receiver's slowness delays


def exponential_ceilings(
    base_s: float = 1.0, cap_s: float = 300.0, count: int = 10
) -> tuple[float, ...]:
    """1, 2, 4, ... seconds up to ``cap_s``: the most each retry waits."""
    return tuple(min(cap_s, base_s * 2**n) for n in range(count))


DEFAULT_BACKOFF = exponential_ceilings()


class Backoff:
    """When to try again: "full jitter" (a uniform wait between 0 and the attempt's ceiling,
    as in the AWS Architecture Blog's "Exponential Backoff And Jitter"), so that webhooks that
    failed together, e.g. when one receiver went down, are not all retried together."""

    def __init__(
        self, ceilings: Sequence[float] = DEFAULT_BACKOFF, rand: Callable[[], float] = random.random
    ) -> None:
        if not ceilings or min(ceilings) < 0:
            raise ValueError("backoff ceilings must be a non-empty list of seconds >= 0")
        self._ceilings = tuple(ceilings)
        self._rand = rand

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1 for the first); the last ceiling
        repeats."""
        ceiling = self._ceilings[min(attempt, len(self._ceilings)) - 1]
        return ceiling * self._rand()


@dataclass(frozen=True, slots=True)
class Outcome:
    tried: AttemptRecord
    refused: bool  # the URL policy refused the address: retrying cannot help


async def post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    client_timeout: aiohttp.ClientTimeout,
    clock: Callable[[], float],
) -> Outcome:
    """One POST, kept as an attempt: delivered on any 2xx, failed otherwise (with the answer's
    status, headers and first bytes, or the error when there was no answer). The session's
    connector is ``engine.url_policy.GuardedConnector``, whose refusal is told apart."""
    started = clock()
    sent = tuple(headers.items())

    def failed(error: str, refused: bool = False) -> Outcome:
        tried = AttemptRecord("failed", started, clock(), url, sent, error=error[:MAX_ERROR])
        return Outcome(tried, refused)

    try:
        async with session.post(
            url, data=body, headers=dict(headers), timeout=client_timeout
        ) as resp:
            # Only the first bytes are read: a receiver cannot make callbridge hold a big answer.
            answer = (await resp.content.read(MAX_KEPT_BODY)).decode("utf-8", "replace")
            ok = 200 <= resp.status < 300
            tried = AttemptRecord(
                "delivered" if ok else "failed",
                started,
                clock(),
                url,
                sent,
                response_status=resp.status,
                response_headers=_kept_headers(resp.headers.items()),
                response_body=answer,
                error=None if ok else f"HTTP {resp.status}",
            )
            return Outcome(tried, False)
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ForbiddenAddress):
            return failed(str(exc.os_error), refused=True)
        return failed(f"{type(exc).__name__}: {exc}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _kept_headers(items: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    kept: list[tuple[str, str]] = []
    size = 0
    for name, value in items:
        size += len(name) + len(value)
        if size > MAX_KEPT_HEADERS:
            break
        kept.append((name, value))
    return tuple(kept)


class InFlight:
    """The POSTs in flight, per destination: what the claim counts against each destination's
    bound, and which claims to give back on stop."""

    def __init__(self) -> None:
        self._per_destination: dict[Destination, int] = {}
        self.ids: set[int] = set()

    def busy(self) -> dict[Destination, int]:
        return dict(self._per_destination)

    def add(self, dest: Destination, webhook_id: int) -> None:
        self._per_destination[dest] = self._per_destination.get(dest, 0) + 1
        self.ids.add(webhook_id)

    def done(self, dest: Destination, webhook_id: int) -> None:
        left = self._per_destination.get(dest, 0) - 1
        if left > 0:
            self._per_destination[dest] = left
        else:
            self._per_destination.pop(dest, None)
        self.ids.discard(webhook_id)

    def __len__(self) -> int:
        return len(self.ids)
