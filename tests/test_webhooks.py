"""Outgoing webhooks: Telnyx envelope, Ed25519 signature, retries with backoff, order per leg,
nothing lost across a restart."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from engine.store.base import DeliveryFilter
from engine.store.sql import SqlStore
from engine.webhooks.outbox import WebhookOutbox
from engine.webhooks.signing import OrgSigningKeys, org_signing_key, public_key_b64, verify

SECRET = "webhook-test-secret-" + "x" * 32


def keys(store: SqlStore) -> OrgSigningKeys:
    return OrgSigningKeys(SECRET, store)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Receiver:
    """An application endpoint that fails the first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, Any], dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append((orjson.loads(raw), dict(request.headers), raw))
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=503)
        return web.Response(text="ok")


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqlStore(f"sqlite:///{tmp_path / 'hooks.db'}")
    await store.start()
    yield store
    await store.close()


async def serve(aiohttp_server, receiver: Receiver) -> str:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def test_envelope_and_signature(aiohttp_server, store) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    clock = FakeClock()
    outbox = WebhookOutbox(store, keys(store), clock=clock)
    payload = {"call_control_id": "v3:abc", "client_state": "aGk=", "state": "parked"}
    event_id = await outbox.publish(
        org_id=1, leg_id="v3:abc", url=url, event_type="call.initiated", payload=payload
    )
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1
        assert await outbox.deliver_due(session) == 0
    body, headers, raw = receiver.received[0]
    assert body["data"] == {
        "record_type": "event",
        "event_type": "call.initiated",
        "id": event_id,
        "occurred_at": "2023-11-14T22:13:20.000000Z",
        "payload": payload,
    }
    assert body["meta"] == {"attempt": 1, "delivered_to": url}
    public = base64.b64decode(public_key_b64(org_signing_key(SECRET, 1, 1)))
    signature = base64.b64decode(headers["telnyx-signature-ed25519"])
    assert headers["telnyx-timestamp"] == str(int(clock.now))
    assert verify(public, raw, signature, headers["telnyx-timestamp"])
    assert not verify(public, raw + b" ", signature, headers["telnyx-timestamp"])


async def test_retries_with_jittered_backoff_then_dead_letters(aiohttp_server, store) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(failures=100)
    url = await serve(aiohttp_server, receiver)
    clock = FakeClock()
    draws = iter([0.5, 0.25])  # the jitter: half of the first ceiling, a quarter of the second
    outbox = WebhookOutbox(
        store, keys(store), clock=clock, backoff=(2, 16), rand=lambda: next(draws), max_attempts=3
    )
    await outbox.publish(org_id=1, leg_id="a", url=url, event_type="call.hangup", payload={})
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1
        clock.now += 0.9
        assert await outbox.deliver_due(session) == 0, "not due before 0.5 * 2 s"
        clock.now += 0.1
        assert await outbox.deliver_due(session) == 1
        clock.now += 3.9
        assert await outbox.deliver_due(session) == 0, "not due before 0.25 * 16 s"
        clock.now += 0.1
        assert await outbox.deliver_due(session) == 1
        clock.now += 10_000
        assert await outbox.deliver_due(session) == 0, "dead-lettered after max_attempts"
    assert [b["meta"]["attempt"] for b, _, _ in receiver.received] == [1, 2, 3]
    assert (outbox.failed_attempts, outbox.dead_lettered) == (3, 1)
    (row,) = (await store.list_webhook_deliveries(1, DeliveryFilter(), offset=0, limit=10))[0]
    assert (row.status, row.attempt, row.last_error) == ("failed", 3, "HTTP 503")
    assert row.finished_at == clock.now - 10_000
    assert [a.response_status for a in row.attempts] == [503, 503, 503]


async def test_order_per_leg_is_kept_through_failures(aiohttp_server, store) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(failures=1)
    url = await serve(aiohttp_server, receiver)
    clock = FakeClock()
    outbox = WebhookOutbox(store, keys(store), clock=clock, backoff=(1,))
    for event in ("call.initiated", "call.answered", "call.bridged"):
        await outbox.publish(org_id=1, leg_id="leg-a", url=url, event_type=event, payload={})
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            await outbox.deliver_due(session)
            clock.now += 1
    delivered = [b["data"]["event_type"] for b, _, _ in receiver.received]
    assert delivered == ["call.initiated", "call.initiated", "call.answered", "call.bridged"]


async def test_unreachable_endpoint_is_retried(store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    outbox = WebhookOutbox(store, keys(store), clock=clock, backoff=(1,), max_attempts=2)
    await outbox.publish(
        org_id=1, leg_id="a", url="http://127.0.0.1:9/none", event_type="call.hangup", payload={}
    )
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1
        clock.now += 1
        assert await outbox.deliver_due(session) == 1
    assert outbox.failed_attempts == 2


async def test_a_restart_loses_no_event(aiohttp_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    database = f"sqlite:///{tmp_path / 'restart.db'}"
    first = SqlStore(database)
    await first.start()
    await WebhookOutbox(first, keys(first)).publish(
        org_id=1, leg_id="a", url=url, event_type="call.answered", payload={"x": 1}
    )
    await first.close()  # the process "dies" before anything was sent
    second = SqlStore(database)
    await second.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert await WebhookOutbox(second, keys(second)).deliver_due(session) == 1
    finally:
        await second.close()
    assert receiver.received[0][0]["data"]["payload"] == {"x": 1}
