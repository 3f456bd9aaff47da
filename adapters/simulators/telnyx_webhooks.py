"""Webhook delivery for the Telnyx simulator: ``WebhookOutbox`` takes one leg's events as they
happen and delivers them to the webhook URL of the leg (else of its connection), signed as
Telnyx signs them; ``TelnyxCall`` decides what happens and what each event says.

Webhooks are Ed25519-signed over ``"{timestamp}|{body}"`` and delivered in the order they happen,
one at a time per leg; a delivery the URL does not take with a 2xx goes again to the connection's
``webhook_event_failover_url`` when it has one. ``WebhookFaults`` can change that: an event type
can be delivered twice (the second as ``meta.attempt`` 2, as a retry is), held back so later
events overtake it, or signed with a stale timestamp. ``post`` also serves a replay: a delivered
body sent again, signed in the past or with a signature that does not verify.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson

from adapters.simulators.common import WebhookRecord
from adapters.simulators.wire import (
    TELNYX_SIGNATURE_HEADER,
    TELNYX_TIMESTAMP_HEADER,
    telnyx_event,
    telnyx_sign,
)

if TYPE_CHECKING:
    from adapters.simulators.telnyx_calls import TelnyxCall

__all__ = ["NO_FAULTS", "WebhookFaults", "WebhookOutbox"]


@dataclass(frozen=True, slots=True)
class WebhookFaults:
    """Delivery faults for one leg's webhooks, by event type (``call.answered``, ...)."""

    duplicate: frozenset[str] = frozenset()
    delay_ms: Mapping[str, int] = field(default_factory=dict)
    stale: frozenset[str] = frozenset()
    stale_age_s: int = 600


NO_FAULTS: Final = WebhookFaults()


class WebhookOutbox:
    """One leg's webhooks, queued by ``put`` and delivered by ``run`` (a task of the call's);
    every request sent is recorded in the call's ``events``."""

    def __init__(self, call: TelnyxCall) -> None:
        self.call = call
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], str, datetime]] = asyncio.Queue()

    def put(self, event_type: str, payload: dict[str, Any]) -> None:
        """Queue ``event_type`` with ``payload``; its id and time are fixed now, as it happens."""
        self._queue.put_nowait((event_type, payload, str(uuid.uuid4()), datetime.now(UTC)))

    async def run(self) -> None:
        call = self.call
        while True:
            event = await self._queue.get()
            delay = call.faults.delay_ms.get(event[0])
            if delay:
                call.spawn(self._deliver_later(delay / 1000, *event))
            else:
                await self._deliver(*event)

    def url(self) -> str | None:
        """The leg's own webhook URL, else its connection's; None if it has neither."""
        call = self.call
        connection = call.account.connections.get(call.connection_id)
        return call.webhook_url or (connection.webhook_event_url if connection else None)

    async def _deliver_later(self, delay_s: float, *event: Any) -> None:
        await asyncio.sleep(delay_s)
        await self._deliver(*event)

    async def _deliver(
        self, event_type: str, payload: dict[str, Any], event_id: str, occurred: datetime
    ) -> None:
        url = self.url()
        if url is None:
            return
        faults = self.call.faults
        age = faults.stale_age_s if event_type in faults.stale else 0
        for attempt in (1, 2) if event_type in faults.duplicate else (1,):
            body = orjson.dumps(telnyx_event(event_type, payload, event_id, occurred, attempt, url))
            record = await self.post(event_type, url, body, int(time.time()) - age)
            failover = self.failover_url()
            if not record.ok and failover is not None:
                # "If that URL does not resolve, or your application returns a non 200 OK
                # response, the webhook will be delivered to the failover URL, if one has been
                # specified" (developers.telnyx.com, receiving webhooks): the same event.
                body = orjson.dumps(
                    telnyx_event(event_type, payload, event_id, occurred, attempt, failover)
                )
                await self.post(event_type, failover, body, int(time.time()) - age)

    def failover_url(self) -> str | None:
        """The connection's failover URL, for a leg whose webhooks go to the connection's URL
        (a leg given its own webhook URL has no failover here)."""
        call = self.call
        connection = call.account.connections.get(call.connection_id)
        if call.webhook_url or connection is None:
            return None
        return connection.webhook_event_failover_url

    async def post(
        self, kind: str, url: str, body: bytes, timestamp: int, *, corrupt: bool = False
    ) -> WebhookRecord:
        """Send ``body`` to ``url`` signed at ``timestamp`` (with ``corrupt``, a signature that
        does not verify) and record the request with its response."""
        call = self.call
        signature = telnyx_sign(call.account.private_key, body, timestamp)
        if corrupt:
            # Same length and alphabet, different bytes: only the verification can tell.
            signature = ("A" if signature[0] != "A" else "B") + signature[1:]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "telnyx-webhooks",
            TELNYX_SIGNATURE_HEADER: signature,
            TELNYX_TIMESTAMP_HEADER: str(timestamp),
        }
        record = WebhookRecord(kind, url, "POST", headers, body, time.monotonic())
        timeout = aiohttp.ClientTimeout(total=call.account.webhook_timeout_s)
        try:
            async with call.account.session.post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                record.status = response.status
                record.response = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        call.events.append(record)
        call.notify()
        return record
