"""Webhook delivery that no tenant can block (issue 12, point 4), over real sockets.

Receivers are aiohttp servers on 127.0.0.1. The sending loop is the outbox's own ``run``; tests
wait on what the receivers saw (a poll with a deadline), never on sleeps. Retry times are
crossed by moving a fake clock where a test drives passes itself (``deliver_due``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from engine.store.base import DeliveryFilter
from engine.store.sql import SqlStore
from engine.webhooks.outbox import WebhookOutbox
from engine.webhooks.signing import OrgSigningKeys
from tests.postgres import both_databases, database_url, fresh_database

SECRET = "webhook-delivery-secret-" + "x" * 32
EVENTS = ("call.initiated", "call.answered", "call.hangup")


class Receiver:
    """An application endpoint. Black-holed, it accepts each request and never answers it
    until ``recover``; the requests it held are then answered 503 (their senders see a failed
    attempt) and every later one is acknowledged."""

    def __init__(self, *, black_hole: bool = False) -> None:
        self.black_hole = black_hole
        self._released = asyncio.Event()
        self.held: list[str] = []  # event ids of the requests being held right now
        self.most_held = 0
        self.acked: list[tuple[str, str, str]] = []  # (leg, event type, event id), in order

    async def handle(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())["data"]
        if self.black_hole:
            self.held.append(data["id"])
            self.most_held = max(self.most_held, len(self.held))
            await self._released.wait()
            self.held.remove(data["id"])
            return web.Response(status=503)
        self.acked.append((data["payload"]["call_control_id"], data["event_type"], data["id"]))
        return web.Response(text="ok")

    def recover(self) -> None:
        self.black_hole = False
        self._released.set()

    def of_leg(self, leg: str) -> list[tuple[str, str]]:
        return [(kind, ident) for at, kind, ident in self.acked if at == leg]


async def listen(aiohttp_server: Any, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    return str((await aiohttp_server(app)).make_url("/hook"))


async def until(condition: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_databases(metafunc)


@pytest.fixture
async def store(database_kind: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with database_url(database_kind, str(tmp_path / "hooks.db")) as url:
        store = SqlStore(url)
        await store.start()
        yield store
        await store.close()


async def publish(outbox: WebhookOutbox, org: int, url: str, legs: list[str]) -> dict[str, list]:
    """Each leg's events, interleaved across legs as calls produce them; the ids per leg."""
    sent: dict[str, list[tuple[str, str]]] = {leg: [] for leg in legs}
    for kind in EVENTS:
        for leg in legs:
            payload = {"call_control_id": leg}
            ident = await outbox.publish(
                org_id=org, leg_id=leg, url=url, event_type=kind, payload=payload
            )
            sent[leg].append((kind, ident))
    return sent


class FailsFirst:
    """An application endpoint that answers its first request 503 and acknowledges the rest."""

    def __init__(self) -> None:
        self.attempts: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.attempts.append(time.monotonic())
        return web.Response(status=503 if len(self.attempts) == 1 else 200)


async def test_a_retry_is_sent_when_it_comes_due_not_at_the_next_poll(
    aiohttp_server: Any, store: SqlStore
) -> None:
    """The sender sleeps until the earliest pending webhook is due (an idle engine does not
    query the store every second); the poll is only a backstop, here longer than the test."""
    receiver = FailsFirst()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    url = str((await aiohttp_server(app)).make_url("/hook"))
    outbox = WebhookOutbox(
        store,
        OrgSigningKeys(SECRET, store),
        backoff=(0.3,),
        rand=lambda: 1.0 - 1e-9,  # the full 0.3 s: the retry is due after the first attempt
        poll_interval_s=3600.0,
    )
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        sender = asyncio.create_task(outbox.run(session, stop))
        try:
            await outbox.publish(
                org_id=1,
                leg_id="l1",
                url=url,
                event_type="call.answered",
                payload={"call_control_id": "l1"},
            )
            await until(lambda: outbox.delivered == 1, "the retry, due 0.3 s after the 503")
        finally:
            stop.set()
            await sender
    first, second = receiver.attempts
    assert second - first >= 0.25, "not before its backoff"


async def test_a_black_holed_receiver_delays_only_its_own_organization(
    aiohttp_server: Any, store: SqlStore
) -> None:
    a, b = Receiver(black_hole=True), Receiver()
    url_a, url_b = await listen(aiohttp_server, a), await listen(aiohttp_server, b)
    outbox = WebhookOutbox(
        store,
        OrgSigningKeys(SECRET, store),
        per_destination=4,
        timeout_s=120.0,  # A's POSTs hang for the whole test unless its receiver recovers
        poll_interval_s=0.05,
        rand=lambda: 0.0,  # a failed attempt is due again at once
    )
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        sender = asyncio.create_task(outbox.run(session, stop))
        try:
            sent_a = await publish(outbox, 1, url_a, [f"a{n}" for n in range(6)])
            # One POST per leg at most, and no more than four to the destination at once.
            await until(lambda: len(a.held) == 4, "A's receiver to hold four POSTs")

            sent_b = await publish(outbox, 2, url_b, ["b0", "b1"])
            await until(lambda: len(b.acked) == 6, "B's webhooks while A's POSTs hang")
            for leg, events in sent_b.items():
                assert b.of_leg(leg) == events, "in order per leg, each once"
            # A's POSTs were still hanging the whole time; none was handed out twice.
            assert len(a.held) == 4 and a.most_held == 4
            assert len(set(a.held)) == 4 and a.acked == []
            await until(lambda: outbox.in_flight == 4, "B's attempts recorded; A's still in flight")
            assert len(a.held) == 4

            a.recover()
            await until(lambda: len(a.acked) == 18, "A's webhooks after its receiver recovered")
        finally:
            stop.set()
            await sender
    for leg, events in sent_a.items():
        assert a.of_leg(leg) == events, "in order per leg, each event id once"
    records, total = await store.list_webhook_deliveries(1, DeliveryFilter(), offset=0, limit=50)
    assert total == 18 and {r.status for r in records} == {"delivered"}
    # The four held POSTs failed once (503 on recovery) before their delivery.
    assert sorted(r.attempt for r in records).count(2) == 4
    assert a.most_held == 4


async def test_an_acknowledged_webhook_is_never_sent_again_across_restarts(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    receiver = Receiver()
    url = await listen(aiohttp_server, receiver)
    database = f"sqlite:///{tmp_path / 'restart.db'}"
    clock = FakeClock()
    first = SqlStore(database)
    await first.start()
    outbox = WebhookOutbox(first, OrgSigningKeys(SECRET, first), clock=clock, timeout_s=5.0)
    sent = await publish(outbox, 1, url, ["leg"])
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1  # call.initiated, acknowledged
    # The next one is claimed and the process dies with its POST in flight (never sent).
    (claimed,) = await first.claim_due_webhooks(
        clock.now, 10, lease_until=clock.now + 15.0, per_destination=4, busy={}
    )
    await first.close()

    second = SqlStore(database)
    await second.start()
    try:
        again = WebhookOutbox(second, OrgSigningKeys(SECRET, second), clock=clock, timeout_s=5.0)
        async with aiohttp.ClientSession() as session:
            assert await again.deliver_due(session) == 0, "the claim still holds"
            clock.now += 15.0
            assert await again.deliver_due(session) == 1, "the lapsed claim is sent again"
            assert await again.deliver_due(session) == 1
            clock.now += 10_000
            assert await again.deliver_due(session) == 0
    finally:
        await second.close()
    assert receiver.of_leg("leg") == sent["leg"], "each acknowledged event once, in order"
    assert receiver.acked[1][2] == orjson.loads(claimed.body)["id"], "the same event id"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_backoff_is_exponential_with_full_jitter_then_dead_letters(
    aiohttp_server: Any, store: SqlStore
) -> None:
    app = web.Application()
    answers: list[float] = []

    async def failing(request: web.Request) -> web.Response:
        answers.append(clock.now)
        return web.Response(status=500, text="boom", headers={"X-Why": "test"})

    app.router.add_post("/hook", failing)
    url = str((await aiohttp_server(app)).make_url("/hook"))
    clock = FakeClock()
    draws = iter([0.5, 0.75, 0.0])  # the jitter drawn after each failed attempt
    outbox = WebhookOutbox(
        store,
        OrgSigningKeys(SECRET, store),
        clock=clock,
        backoff=(1.0, 2.0, 4.0),
        rand=lambda: next(draws),
        max_attempts=4,
    )
    await outbox.publish(org_id=1, leg_id="x", url=url, event_type="call.hangup", payload={})
    start = clock.now
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1  # waits 0.5 * 1 s
        clock.now += 0.25
        assert await outbox.deliver_due(session) == 0, "not due before 0.5 s"
        clock.now += 0.25
        assert await outbox.deliver_due(session) == 1  # waits 0.75 * 2 s
        clock.now += 1.0
        assert await outbox.deliver_due(session) == 0, "not due before 1.5 s more"
        clock.now += 0.5
        assert await outbox.deliver_due(session) == 1  # waits 0 * 4 s
        assert await outbox.deliver_due(session) == 1
        clock.now += 1e6
        assert await outbox.deliver_due(session) == 0, "dead-lettered after the fourth attempt"
    assert [t - start for t in answers] == [0.0, 0.5, 2.0, 2.0]
    (row,) = (await store.list_webhook_deliveries(1, DeliveryFilter(), offset=0, limit=5))[0]
    assert (row.status, row.attempt, row.last_error) == ("failed", 4, "HTTP 500")
    assert row.finished_at == start + 2.0 and row.started_at == start
    newest = row.attempts[0]
    assert (newest.response_status, newest.response_body) == (500, "boom")
    assert ("X-Why", "test") in newest.response_headers
    assert dict(newest.request_headers)["Content-Type"] == "application/json"
    assert outbox.dead_lettered == 1


async def test_a_lapsed_claim_is_not_handed_out_again_while_its_post_runs(
    aiohttp_server: Any, store: SqlStore
) -> None:
    held, other = Receiver(black_hole=True), Receiver()
    url_held, url_other = await listen(aiohttp_server, held), await listen(aiohttp_server, other)
    clock = FakeClock()
    outbox = WebhookOutbox(
        store,
        OrgSigningKeys(SECRET, store),
        clock=clock,
        timeout_s=120.0,
        poll_interval_s=0.02,
        rand=lambda: 0.0,  # the fake clock stands still: a retry must be due at once
    )
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        sender = asyncio.create_task(outbox.run(session, stop))
        try:
            await publish(outbox, 1, url_held, ["slow"])
            await until(lambda: len(held.held) == 1, "the first POST to be held")
            clock.now += 1_000.0  # far past the claim: the store hands the row out again
            await publish(outbox, 2, url_other, ["fast"])
            # The pass that claimed the other leg's webhook claimed the lapsed row too.
            await until(lambda: len(other.acked) == 3, "the other leg's webhooks")
            assert held.most_held == 1, "no second POST while the first runs"
            held.recover()
            await until(lambda: len(held.acked) == 3, "the held leg's webhooks")
        finally:
            stop.set()
            await sender
    assert held.most_held == 1


class SlowReceiver(Receiver):
    """Acknowledges each webhook after a short wait, so that two senders overlap in time."""

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.005)  # the receiver's own latency, not a wait in the test
        return await super().handle(request)


async def test_two_nodes_on_one_postgresql_database_deliver_each_webhook_once_in_order(
    aiohttp_server: Any,
) -> None:
    """Two engine processes share a PostgreSQL outbox (issue 16, point 1): either may deliver
    any webhook, none is delivered twice, and each leg's arrive in order."""
    receiver = SlowReceiver()
    url = await listen(aiohttp_server, receiver)
    async with fresh_database() as database:
        stores = [SqlStore(database), SqlStore(database)]
        for store in stores:
            await store.start()
        outboxes = [
            WebhookOutbox(store, OrgSigningKeys(SECRET, store), poll_interval_s=0.01)
            for store in stores
        ]
        stop = asyncio.Event()
        try:
            async with aiohttp.ClientSession() as session:
                senders = [asyncio.create_task(o.run(session, stop)) for o in outboxes]
                # Each node queues half the legs' webhooks; both wake and claim at once.
                halves = await asyncio.gather(
                    publish(outboxes[0], 1, url, [f"l{n}" for n in range(4)]),
                    publish(outboxes[1], 1, url, [f"l{n}" for n in range(4, 8)]),
                )
                sent = {**halves[0], **halves[1]}
                await until(lambda: len(receiver.acked) >= 24, "every webhook delivered")
                stop.set()
                await asyncio.gather(*senders)
        finally:
            for store in stores:
                await store.close()
    for leg, events in sent.items():
        assert receiver.of_leg(leg) == events, "in order per leg, each event id once"
    assert len(receiver.acked) == 24
    assert all(o.delivered > 0 for o in outboxes), "both nodes delivered some"
