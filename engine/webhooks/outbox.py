"""Outgoing call-control webhooks: Telnyx-shaped, signed, persisted, retried, in order per leg.

``WebhookOutbox.publish`` writes the event to the store's outbox before anything is sent, so
a crash or restart loses no event. ``run`` hands due webhooks to POSTs that run on their own:
the loop never waits for a receiver, so a slow or black-holed one delays only its own events.
The store claims at most one webhook per leg (each leg's oldest pending one: order per leg) and
at most ``per_destination`` in flight per destination (organization, URL); a claim holds the
row until the POST's timeout has surely passed, so no row is handed out twice and one in
flight at a crash is sent again (same ``data.id``) after a restart. Failures are retried with
exponential backoff and full jitter until ``max_attempts``, then dead-lettered (status
``failed``); a 2xx is recorded as delivered and never sent again. Finished rows are purged
after ``retention_s``.

The envelope's ``meta.attempt`` changes per attempt, so the store keeps the ``data`` part and
each attempt is framed and signed anew.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from engine.logs import get_logger
from engine.store.base import OutboxRecord, QueuedWebhook, Store
from engine.webhooks.delivery import DEFAULT_BACKOFF, Backoff, Destination, InFlight, post_once
from engine.webhooks.signing import OrgSigningKeys, sign

log = get_logger("callbridge.webhooks")
# With the default ceilings (1, 2, 4, ... 256, then 300 s) the twelfth attempt comes at most
# 1111 s (about 18 minutes; half that on average) after the first: a receiver restarted or
# redeployed in that time loses nothing.
DEFAULT_MAX_ATTEMPTS = 12
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
PURGE_BATCH = 1000


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
        rand: Callable[[], float] = random.random,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_s: float = 10.0,
        poll_interval_s: float = 10.0,
        batch: int = 100,
        per_destination: int = 4,
        retention_s: float = DEFAULT_RETENTION_S,
        purge_interval_s: float = 60.0,
        stop_grace_s: float = 2.0,
    ) -> None:
        """``backoff``: the most each retry waits (the last repeats); ``rand`` draws the jitter
        in [0, 1). ``per_destination``: POSTs in flight at once to one destination."""
        if max_attempts < 1 or per_destination < 1:
            raise ValueError("max_attempts and per_destination must be at least 1")
        self._store = store
        self._keys = keys
        self._clock = clock
        self._backoff = Backoff(backoff, rand)
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # A claim outlives the POST's timeout with room for signing and recording the attempt;
        # after a crash, a webhook whose POST was in flight is sent again once it lapses.
        self._lease_s = timeout_s + 10.0
        self._poll = poll_interval_s
        self._batch = batch
        self._per_destination = per_destination
        self._retention_s = retention_s
        self._purge_interval_s = purge_interval_s
        self._stop_grace_s = stop_grace_s
        self._wake = asyncio.Event()
        self._in_flight = InFlight()
        self.delivered = 0
        self.failed_attempts = 0
        self.refused = 0  # attempts refused by the URL policy (each dead-letters its webhook)
        self.dead_lettered = 0
        self.purged = 0

    def prepare(
        self,
        *,
        org_id: int,
        leg_id: str,
        url: str,
        event_type: str,
        payload: Mapping[str, Any],
    ) -> QueuedWebhook:
        """One event with its id and time, for the store to commit with the input that produced
        it (``Store.commit_input``); the committer then calls ``wake``."""
        data = event_data(event_type, payload, str(uuid.uuid4()), self._clock())
        return QueuedWebhook(org_id=org_id, leg_id=leg_id, url=url, body=data.decode())

    def wake(self) -> None:
        """Webhooks were committed: look for due ones now rather than at the next poll."""
        self._wake.set()

    async def publish(
        self,
        *,
        org_id: int,
        leg_id: str,
        url: str,
        event_type: str,
        payload: Mapping[str, Any],
    ) -> str:
        """Persist one event for delivery on its own and wake the sender; returns the event id."""
        queued = self.prepare(
            org_id=org_id, leg_id=leg_id, url=url, event_type=event_type, payload=payload
        )
        await self._store.enqueue_webhook(
            org_id=org_id, leg_id=leg_id, url=url, body=queued.body, headers={}, now=self._clock()
        )
        self.wake()
        return str(orjson.loads(queued.body)["id"])

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; woken by ``publish``, by each finished POST (a
        leg's next webhook may be due) and when the earliest pending webhook comes due (a
        retry, or a lapsed claim), looking again at least every ``poll_interval_s`` for what
        this process cannot know of (another process's webhooks). An idle engine does not poll
        the store every second: a poll is a write transaction, CPU every live call shares.
        On stop, POSTs still in flight get ``stop_grace_s``; the rest are cancelled and their
        claims given back, to be sent by the next process."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                self._wake.clear()
                if await self._start_due(session, tasks):
                    continue  # more may be due: other destinations, or room left
                await _first_of(self._wake, stop, within_s=await self._until_due())
        finally:
            await self._stop_in_flight(tasks)

    async def _until_due(self) -> float:
        """Seconds until the earliest pending webhook comes due, at most ``poll_interval_s``.
        One already due was not handed out: it waits behind a busy destination or an earlier
        webhook of its leg in flight, and a finished POST wakes the loop, so the poll stands."""
        try:
            due = await self._store.next_webhook_due()
        except Exception:
            log.exception("webhook due time unreadable")
            return self._poll
        if due is None:
            return self._poll
        wait = due - self._clock()
        return self._poll if wait <= 0 else min(wait, self._poll)

    async def _start_due(
        self, session: aiohttp.ClientSession, tasks: set[asyncio.Task[None]]
    ) -> int:
        now = self._clock()
        try:
            claimed = await self._store.claim_due_webhooks(
                now,
                self._batch,
                lease_until=now + self._lease_s,
                per_destination=self._per_destination,
                busy=self._in_flight.busy(),
            )
        except Exception:
            log.exception("webhook claim failed")
            return 0
        for record in claimed:
            if record.id in self._in_flight.ids:
                # Its claim lapsed while its POST or the record of it still runs here: that
                # attempt records the outcome; a second POST would hand the row out twice.
                continue
            dest = (record.org_id, record.url)
            self._in_flight.add(dest, record.id)
            task = asyncio.create_task(self._attempt(session, record))
            tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, tasks, dest, record.id))
        return len(claimed)

    def _finished(
        self,
        tasks: set[asyncio.Task[None]],
        dest: Destination,
        ident: int,
        task: asyncio.Task[None],
    ) -> None:
        tasks.discard(task)
        self._in_flight.done(dest, ident)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The claim stays until it lapses; the webhook is then sent again.
            log.error("webhook attempt failed unexpectedly", webhook_id=ident, error=repr(exc))

    async def _stop_in_flight(self, tasks: set[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(set(tasks), timeout=self._stop_grace_s)
        unfinished = list(self._in_flight.ids)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unfinished:
            log.info("webhook POSTs cut short by stop", count=len(unfinished))
            try:
                await self._store.release_webhooks(unfinished, self._clock())
            except Exception:
                log.exception("webhook claims could not be given back; they lapse instead")

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        """Claim what is due now and wait for those attempts: a pass for tests and tools (``run``
        never waits for a POST). Returns how many were attempted."""
        now = self._clock()
        due = await self._store.claim_due_webhooks(
            now,
            self._batch,
            lease_until=now + self._lease_s,
            per_destination=self._per_destination,
            busy=self._in_flight.busy(),
        )
        await asyncio.gather(*(self._attempt(session, record) for record in due))
        return len(due)

    async def _attempt(self, session: aiohttp.ClientSession, record: OutboxRecord) -> None:
        attempt = record.attempt + 1
        body = framed(record.body.encode(), attempt, record.url)
        # Signed at each attempt with the organization's key current then: a retry after a
        # rotation carries the new key's signature.
        key = await self._keys.signing_key(record.org_id)
        headers = {"Content-Type": "application/json", **sign(key, body, int(self._clock()))}
        outcome = await post_once(
            session, record.url, body, headers, client_timeout=self._timeout, clock=self._clock
        )
        retry_at: float | None = None
        if outcome.tried.status == "delivered":
            self.delivered += 1
        else:
            self.failed_attempts += 1
            self.refused += outcome.refused
            # An address the URL policy refuses stays refused: dead-letter at once.
            if attempt < self._max_attempts and not outcome.refused:
                retry_at = self._clock() + self._backoff.delay(attempt)
            else:
                self.dead_lettered += 1
            log.warning(
                "webhook delivery failed",
                webhook_id=record.id,
                org_id=record.org_id,
                leg_id=record.leg_id,
                url=record.url,
                attempt=attempt,
                error=outcome.tried.error,
                dead_lettered=retry_at is None,
                refused_by_url_policy=outcome.refused,
            )
        await self._store.record_webhook_attempt(record.id, outcome.tried, next_attempt_at=retry_at)

    async def purge_loop(self, stop: asyncio.Event) -> None:
        """Every ``purge_interval_s`` until ``stop``: purge what finished before the retention."""
        while not stop.is_set():
            try:
                await self.purge_once()
            except Exception:
                log.exception("webhook purge failed")
            await _first_of(stop, within_s=self._purge_interval_s)

    async def purge_once(self) -> int:
        """Delete delivered and dead-lettered webhooks older than the retention, in batches
        (each its own short transaction). Returns how many went."""
        before = self._clock() - self._retention_s
        total = 0
        while (gone := await self._store.purge_webhooks(before, PURGE_BATCH)) > 0:
            total += gone
            if gone < PURGE_BATCH:
                break
        if total:
            self.purged += total
            log.info("webhooks purged", count=total, finished_before=occurred_at(before))
        return total


async def _first_of(*events: asyncio.Event, within_s: float) -> None:
    """Wait until one of ``events`` is set, or ``within_s`` seconds."""
    waiters: Collection[asyncio.Future[Any]] = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
