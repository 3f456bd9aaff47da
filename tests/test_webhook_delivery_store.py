"""The outbox's store side (issue 12, point 4): claims bounded per destination and never handed
out twice, attempts and dead letters, the retention purge, and migration 5 on a database that
already holds webhooks."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from engine.store.base import AttemptRecord, DeliveryFilter
from engine.store.connect import open_engine
from engine.store.migrate import migrate
from engine.store.migrations import MIGRATIONS
from engine.store.sql import SqlStore
from tests.postgres import both_databases, database_url

A, B = "https://a.example/hook", "https://b.example/hook"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_databases(metafunc)


@pytest.fixture
async def store(database_kind: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with database_url(database_kind, str(tmp_path / "outbox.db")) as url:
        store = SqlStore(url)
        await store.start()
        yield store
        await store.close()


async def enqueue(store: SqlStore, leg: str, url: str = A, org: int = 1, at: float = 1.0) -> int:
    body = orjson.dumps({"event_type": "call.answered", "id": f"e-{leg}"}).decode()
    return await store.enqueue_webhook(
        org_id=org, leg_id=leg, url=url, body=body, headers={}, now=at
    )


def tried(status: str, at: float, error: str | None = None) -> AttemptRecord:
    answer = 200 if status == "delivered" else 503
    sent = (("Content-Type", "application/json"),)
    return AttemptRecord(status, at, at + 0.5, A, sent, response_status=answer, error=error)


async def claim(store: SqlStore, now: float, busy: dict[tuple[int, str], int] | None = None):  # type: ignore[no-untyped-def]
    records = await store.claim_due_webhooks(
        now, 100, lease_until=now + 40.0, per_destination=2, busy=busy or {}
    )
    return [r.leg_id for r in records]


async def test_claims_are_bounded_per_destination_and_never_handed_out_twice(
    store: SqlStore,
) -> None:
    for leg in ("a1", "a2", "a3"):
        await enqueue(store, leg, A)
    await enqueue(store, "a1", A)  # a1's second webhook waits for its first
    await enqueue(store, "b1", B, org=2)
    # Two per destination: A's third leg waits although it is due.
    assert await claim(store, 10.0) == ["a1", "a2", "b1"]
    # A destination's room counts its work in flight (the caller's); a full one is skipped.
    assert await claim(store, 10.0, busy={(1, A): 2}) == []
    # Claimed rows are not due again: only the one left is handed out.
    assert await claim(store, 10.0) == ["a3"]
    assert await claim(store, 49.9) == []
    # Claims that lapsed (their process died mid-POST) are due again, still one per leg and
    # within each destination's room.
    assert await claim(store, 50.0, busy={(1, A): 1}) == ["a1", "b1"]


async def test_attempts_dead_letter_and_release(store: SqlStore) -> None:
    first = await enqueue(store, "a1")
    later = await enqueue(store, "a1")
    (record,) = await store.claim_due_webhooks(
        5.0, 10, lease_until=45.0, per_destination=4, busy={}
    )
    await store.record_webhook_attempt(first, tried("failed", 5.0, "HTTP 503"), next_attempt_at=9.0)
    assert await store.due_webhooks(8.9, 10) == []
    await store.record_webhook_attempt(
        first, tried("failed", 9.0, "HTTP 502"), next_attempt_at=None
    )
    dead = await store.get_webhook_delivery(1, record.public_id)
    assert dead is not None
    assert (dead.status, dead.attempt, dead.last_error) == ("failed", 2, "HTTP 502")
    assert (dead.started_at, dead.finished_at, dead.next_attempt_at) == (5.0, 9.5, None)
    assert [a.error for a in dead.attempts] == ["HTTP 502", "HTTP 503"], "newest first"
    # A dead letter holds the leg's next webhook back no longer.
    assert [r.id for r in await store.due_webhooks(9.5, 10)] == [later]
    # Claims given back on stop are due at once.
    await store.claim_due_webhooks(10.0, 10, lease_until=50.0, per_destination=4, busy={})
    await store.release_webhooks([later], 11.0)
    assert [r.id for r in await store.due_webhooks(11.0, 10)] == [later]
    await store.record_webhook_attempt(later, tried("delivered", 11.0), next_attempt_at=None)
    await store.record_webhook_attempt(later, tried("failed", 12.0, "late"), next_attempt_at=20.0)
    (done,) = (
        await store.list_webhook_deliveries(
            1, DeliveryFilter(status="delivered"), offset=0, limit=5
        )
    )[0]
    assert (done.status, done.delivered_at, done.next_attempt_at) == ("delivered", 11.5, None)
    assert await store.due_webhooks(1e9, 10) == [], "a delivered webhook stays delivered"


async def test_purge_removes_only_finished_rows_older_than_the_cutoff(store: SqlStore) -> None:
    old_done, old_dead, recent, pending = [await enqueue(store, f"l{n}") for n in range(4)]
    await store.record_webhook_attempt(old_done, tried("delivered", 100.0), next_attempt_at=None)
    await store.record_webhook_attempt(old_dead, tried("failed", 100.0, "x"), next_attempt_at=None)
    await store.record_webhook_attempt(recent, tried("delivered", 300.0), next_attempt_at=None)
    await store.record_webhook_attempt(pending, tried("failed", 100.0, "x"), next_attempt_at=1e9)
    assert await store.purge_webhooks(200.0, 1) == 1, "batches are bounded"
    assert await store.purge_webhooks(200.0, 10) == 1
    assert await store.purge_webhooks(200.0, 10) == 0
    left, total = await store.list_webhook_deliveries(1, DeliveryFilter(), offset=0, limit=10)
    assert total == 2 and {r.id for r in left} == {recent, pending}


async def test_migration_5_keeps_the_webhooks_already_queued(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    engine = open_engine(str(path))
    try:
        assert await migrate(engine, MIGRATIONS[:4]) == 4
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO webhook_outbox (org_id, leg_id, url, body, headers, attempt,"
            " next_attempt_at, created, delivered_at, last_error) VALUES (1, ?, ?, ?, '{}', ?,"
            " ?, ?, ?, ?)",
            [
                ("l1", A, '{"event_type": "call.initiated"}', 0, 10.0, 1.0, 12.0, None),
                ("l2", A, '{"event_type": "call.hangup"}', 8, None, 2.0, None, "HTTP 500"),
                ("l3", A, '{"event_type": "call.answered"}', 1, 30.0, 3.0, None, "timeout"),
                ("l4", A, "not json", 0, 40.0, 4.0, None, None),
            ],
        )
    store = SqlStore(str(path))
    await store.start()
    try:
        records, total = await store.list_webhook_deliveries(
            1, DeliveryFilter(), offset=0, limit=10
        )
        by_leg = {r.leg_id: r for r in records}
        assert total == 4
        assert [(by_leg[leg].status, by_leg[leg].finished_at) for leg in ("l1", "l2", "l3")] == [
            ("delivered", 12.0),
            ("failed", 2.0),
            ("pending", None),
        ]
        assert [by_leg[leg].event_type for leg in ("l1", "l2", "l3", "l4")] == [
            "call.initiated",
            "call.hangup",
            "call.answered",
            "",
        ]
        assert len({r.public_id for r in records}) == 4
        assert all(len(r.public_id) == 36 and r.attempts == () for r in records)
        assert [r.leg_id for r in await store.due_webhooks(100.0, 10)] == ["l3", "l4"]
        new = await enqueue(store, "l5")
        assert new > max(r.id for r in records)
    finally:
        await store.close()


async def test_next_due_is_the_earliest_pending_webhook_or_a_claims_lease_end(
    store: SqlStore,
) -> None:
    assert await store.next_webhook_due() is None  # nothing pending: nothing to look for
    await enqueue(store, "a1", at=5.0)
    await enqueue(store, "a2", at=3.0)
    assert await store.next_webhook_due() == 3.0
    await claim(store, 10.0)  # both claimed until 50.0 (the lease)
    assert await store.next_webhook_due() == 50.0
    for webhook_id in (1, 2):
        delivered = tried("delivered", 11.0)
        await store.record_webhook_attempt(webhook_id, delivered, next_attempt_at=None)
    assert await store.next_webhook_due() is None  # delivered rows are never due again


async def test_a_webhook_behind_a_claimed_one_of_its_leg_is_due_when_the_claim_lapses(
    store: SqlStore,
) -> None:
    await enqueue(store, "a1", at=1.0)
    await claim(store, 10.0)  # a1's first, claimed until 50.0 (by a process that then died)
    await enqueue(store, "a1", at=12.0)  # a1's next: due at 12.0 but held behind the first
    assert await store.next_webhook_due() == 50.0
