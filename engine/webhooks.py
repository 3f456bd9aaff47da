"""Outgoing call-control webhooks: Telnyx-shaped, signed, persisted, retried, in order per leg.

``WebhookOutbox.publish`` writes the event to the store's outbox before anything is sent, so
a crash or restart loses no event; ``run`` delivers what is due, at most one in flight per leg
(the store hands out only each leg's oldest pending webhook), retrying failures with backoff
until ``max_attempts``. The envelope's ``meta.attempt`` changes per attempt, so the store keeps
the ``data`` part and each attempt is framed and signed anew.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from engine.logs import get_logger
from engine.signing import OrgSigningKeys, sign
from engine.store.base import OutboxRecord, Store
from engine.url_policy import ForbiddenAddress

log = get_logger("callbridge.webhooks")
DEFAULT_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def occurred_at(epoch: float) -> str:
    """ISO-8601 with microseconds and a Z, as Telnyx writes it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_data(event_type: str, payload: Mapping[str, Any], event_id: str, at: float) -> bytes:
    return orjson.dumps(
        {
            "record_type": "event",
            "event_type": event_type,
            "id": event_id,
            "occurred_at": occurred_at(at),
            "payload": payload,
        }
    )


def framed(data: bytes, attempt: int, url: str) -> bytes:
    """The envelope for one attempt, around ``data`` kept byte for byte."""
    meta = orjson.dumps({"attempt": attempt, "delivered_to": url})
    return b'{"data":' + data + b',"meta":' + meta + b"}"


class WebhookOutbox:
    def __init__(
        self,
        store: Store,
        keys: OrgSigningKeys,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        max_attempts: int = 8,
        timeout_s: float = 10.0,
        poll_interval_s: float = 1.0,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self._backoff = tuple(backoff)
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._poll = poll_interval_s
        self._batch = batch
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0
        self.refused = 0  # attempts refused by the URL policy (each gives its webhook up)

    async def publish(
        self,
        *,
        org_id: int,
        leg_id: str,
        url: str,
        event_type: str,
        payload: Mapping[str, Any],
    ) -> str:
        """Persist one event for delivery and wake the sender; returns the event id."""
        now = self._clock()
        event_id = str(uuid.uuid4())
        data = event_data(event_type, payload, event_id, now)
        await self._store.enqueue_webhook(
            org_id=org_id, leg_id=leg_id, url=url, body=data.decode(), headers={}, now=now
        )
        self._wake.set()
        return event_id

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; woken by ``publish``, and every poll interval for
        retries that come due."""
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.deliver_due(session)
            except Exception:
                log.exception("webhook delivery pass failed")
                sent = 0
            if sent:
                continue  # more may have become eligible: the next of each leg
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        """One pass: attempt every due webhook (one per leg), concurrently. Returns how many
        were attempted."""
        due = await self._store.due_webhooks(self._clock(), self._batch)
        await asyncio.gather(*(self._attempt(session, record) for record in due))
        return len(due)

    async def _attempt(self, session: aiohttp.ClientSession, record: OutboxRecord) -> None:
        attempt = record.attempt + 1
        body = framed(record.body.encode(), attempt, record.url)
        # Signed at each attempt with the organization's key current then: a retry after a
        # rotation carries the new key's signature.
        key = await self._keys.signing_key(record.org_id)
        headers = {"Content-Type": "application/json", **sign(key, body, int(self._clock()))}
        error, refused = await self._post(session, record.url, body, headers)
        if error is None:
            await self._store.mark_webhook_delivered(record.id, self._clock())
            self.delivered += 1
            return
        self.failed_attempts += 1
        self.refused += refused
        retry_at: float | None = None
        # An address the URL policy refuses stays refused: give up at once rather than retry.
        if attempt < self._max_attempts and not refused:
            delay = self._backoff[min(attempt - 1, len(self._backoff) - 1)]
            retry_at = self._clock() + delay
        log.warning(
            "webhook delivery failed",
            webhook_id=record.id,
            leg_id=record.leg_id,
            url=record.url,
            attempt=attempt,
            error=error,
            gave_up=retry_at is None,
            refused_by_url_policy=refused,
        )
        await self._store.reschedule_webhook(
            record.id, attempt=attempt, next_attempt_at=retry_at, error=error
        )

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str | None, bool]:
        """The error of one attempt (None when delivered), and whether the URL policy refused
        the address (the session's connector is ``engine.url_policy.GuardedConnector``)."""
        try:
            async with session.post(url, data=body, headers=headers, timeout=self._timeout) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return None, False
                return f"HTTP {resp.status}", False
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ForbiddenAddress)
            reason = str(exc.os_error) if refused else f"{type(exc).__name__}: {exc}"
            return reason[:500], refused
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500], False
