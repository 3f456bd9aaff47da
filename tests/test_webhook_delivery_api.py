"""``GET /v2/webhook_deliveries[/{id}]`` (issue 12, point 4): each organization's webhooks and
their delivery, in Telnyx's shape; filters, pages, another organization's id is 404; finished
rows are purged after the retention by the task the app starts.

Webhooks are delivered by the app's own outbox to receivers on 127.0.0.1; tests wait on the
store's record of them (a poll with a deadline), never on sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import telnyx
from aiohttp import web
from telnyx.types.webhook_delivery_list_params import Filter

from engine.api.keys import RUNTIME, STORE
from engine.app import create_app
from engine.config import Settings
from engine.errors import ValidationError
from engine.providers.provisioning import LocalOnlyProvisioner
from engine.store.base import AttemptRecord, DeliveryFilter
from engine.store.sql import SqlStore
from tests.platform_client import Org, make_org

DELIVERIES = "/v2/webhook_deliveries"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A failed attempt is the last one: dead letters appear without waiting for retries.
    return replace(settings, webhook_max_attempts=1)


async def until(condition: Callable[[], Any], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def receiver(aiohttp_server: Any, status: int, hold: asyncio.Event | None = None) -> str:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if hold is not None:
            await hold.wait()
        return web.Response(status=status, text="nope" if status >= 300 else "ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    return str((await aiohttp_server(app)).make_url("/hook"))


async def get(org: Org, path: str, **query: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {org.token}"}
    resp = await org.client.get(path, params=query, headers=headers)
    return resp.status, await resp.json()


async def test_list_filter_page_and_get_each_organizations_deliveries(
    aiohttp_server: Any, client: Any, org: Org, other_org: Org
) -> None:
    ok, failing = await receiver(aiohttp_server, 200), await receiver(aiohttp_server, 503)
    hold = asyncio.Event()
    hanging = await receiver(aiohttp_server, 200, hold)
    outbox, store = client.app[RUNTIME].outbox, client.app[STORE]
    ids = {}
    for leg, url, kind in (
        ("L1", ok, "call.initiated"),
        ("L1", ok, "call.answered"),
        ("L2", ok, "call.hangup"),
        ("L3", failing, "call.hangup"),
    ):
        payload = {"call_control_id": leg}
        ids[leg, kind] = await outbox.publish(
            org_id=org.org_id, leg_id=leg, url=url, event_type=kind, payload=payload
        )
    await outbox.publish(
        org_id=other_org.org_id, leg_id="G1", url=ok, event_type="call.hangup", payload={}
    )

    async def finished() -> bool:
        rows, _ = await store.list_webhook_deliveries(
            org.org_id, DeliveryFilter(), offset=0, limit=10
        )
        return len(rows) == 4 and all(r.status != "pending" for r in rows)

    await until(finished, "the four webhooks delivered or dead-lettered")
    await outbox.publish(
        org_id=org.org_id, leg_id="L4", url=hanging, event_type="call.bridged", payload={}
    )
    try:
        status, page = await get(org, DELIVERIES)
        assert status == 200
        assert page["meta"] == {"page_number": 1, "page_size": 20, "total_pages": 1,
                                "total_results": 5}  # fmt: skip
        newest = page["data"][0]
        # Still being delivered: listed, with neither final status nor finish time.
        assert newest["webhook"]["event_type"] == "call.bridged"
        assert (newest["status"], newest["finished_at"]) == (None, None)
        kinds = [
            (d["webhook"]["payload"].get("call_control_id"), d["status"]) for d in page["data"]
        ]
        assert kinds[1:] == [("L3", "failed"), ("L2", "delivered"), ("L1", "delivered"),
                             ("L1", "delivered")]  # fmt: skip

        status, dead = await get(org, DELIVERIES, **{"filter[status][eq]": "failed"})
        (failed,) = dead["data"]
        assert failed["record_type"] == "webhook_delivery"
        assert failed["webhook"]["id"] == ids["L3", "call.hangup"]
        (attempt,) = failed["attempts"]
        assert attempt["status"] == "failed" and attempt["error"] == "HTTP 503"
        assert attempt["http"]["request"]["url"] == failing
        assert attempt["http"]["response"]["status"] == 503
        assert attempt["http"]["response"]["body"] == "nope"
        assert failed["started_at"] == attempt["started_at"]
        assert failed["finished_at"] == attempt["finished_at"]

        for query, legs in (
            ({"filter[event_type]": "call.hangup,call.initiated"}, ["L3", "L2", "L1"]),
            ({"filter[webhook][contains]": '"call_control_id":"l1"'}, ["L1", "L1"]),
            ({"filter[attempts][contains]": "HTTP 503"}, ["L3"]),
            ({"filter[started_at][gte]": "2999-01-01T00:00:00Z"}, []),
            ({"filter[finished_at][lte]": "2000-01-01T00:00:00"}, []),
            ({"page[size]": "2", "page[number]": "3"}, ["L1"]),
        ):
            status, body = await get(org, DELIVERIES, **query)
            assert status == 200, body
            got = [d["webhook"]["payload"].get("call_control_id") for d in body["data"]]
            assert got == legs, query
        assert body["meta"] == {"page_number": 3, "page_size": 2, "total_pages": 3,
                                "total_results": 5}  # fmt: skip

        one = failed["id"]
        status, body = await get(org, f"{DELIVERIES}/{one}")
        assert (status, body["data"]) == (200, failed)
        # Another organization's delivery is exactly as missing as an unknown one.
        status, theirs = await get(other_org, f"{DELIVERIES}/{one}")
        status_unknown, unknown = await get(org, f"{DELIVERIES}/no-such-id")
        assert (status, status_unknown) == (404, 404)
        assert theirs["errors"][0]["code"] == unknown["errors"][0]["code"]
        status, body = await get(other_org, DELIVERIES)
        assert [d["webhook"]["event_type"] for d in body["data"]] == ["call.hangup"]
    finally:
        hold.set()


@pytest.mark.parametrize(
    "query",
    [
        {"filter[status][eq]": "pending"},
        {"filter[event_type]": "call.hangup,,"},
        {"filter[started_at][gte]": "yesterday"},
        {"filter[webhook][contains]": "x" * 256},
        {"filter[foo]": "bar"},
        {"filter[status]": "failed"},
        {"page[size]": "0"},
    ],
)
async def test_bad_filters_are_refused_naming_the_parameter(
    org: Org, query: dict[str, str]
) -> None:
    status, body = await get(org, DELIVERIES, **query)
    assert status == 422
    assert next(iter(query)) in str(body["errors"][0]), body


async def test_the_telnyx_sdk_reads_deliveries(
    aiohttp_server: Any, client: Any, org: Org, other_org: Org
) -> None:
    ok = await receiver(aiohttp_server, 200)
    outbox, store = client.app[RUNTIME].outbox, client.app[STORE]
    for leg in ("S1", "S2", "S3"):
        payload = {"call_control_id": leg}
        await outbox.publish(
            org_id=org.org_id, leg_id=leg, url=ok, event_type="call.hangup", payload=payload
        )

    async def delivered() -> bool:
        found = DeliveryFilter(status="delivered")
        return (await store.list_webhook_deliveries(org.org_id, found, offset=0, limit=5))[1] == 3

    await until(delivered, "three deliveries")
    base_url = str(client.make_url("/v2"))
    async with (
        telnyx.AsyncTelnyx(api_key=org.token, base_url=base_url, max_retries=0) as sdk,
        telnyx.AsyncTelnyx(api_key=other_org.token, base_url=base_url, max_retries=0) as other,
    ):
        # One per page: the SDK pages on through meta.page_number / total_pages.
        only_delivered: Filter = {"status": {"eq": "delivered"}}
        seen = [d async for d in sdk.webhook_deliveries.list(page_size=1, filter=only_delivered)]
        legs = [
            d.webhook.payload["call_control_id"] for d in seen if d.webhook and d.webhook.payload
        ]
        assert legs == ["S3", "S2", "S1"]
        assert all(d.status == "delivered" and d.attempts and d.finished_at for d in seen)
        got = await sdk.webhook_deliveries.retrieve(str(seen[0].id))
        assert got.data is not None and got.data.attempts is not None
        assert got.data.attempts[0].http is not None and got.data.attempts[0].http.response
        assert got.data.attempts[0].http.response.status == 200
        with pytest.raises(telnyx.NotFoundError):
            await other.webhook_deliveries.retrieve(str(seen[0].id))


async def test_the_app_purges_finished_webhooks_after_the_retention(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = replace(settings, webhook_retention_s=3600.0)
    now = time.time()
    store = SqlStore(settings.database_url)
    await store.start()
    kept: list[int] = []
    try:
        org = await store.create_organization("acme", "Acme", "0" * 64)
        for finished_ago in (7200.0, 60.0):
            ident = await store.enqueue_webhook(
                org_id=org.id, leg_id=f"p{finished_ago}", url="http://127.0.0.1:9/x",
                body='{"event_type": "call.hangup"}', headers={}, now=now - finished_ago,
            )  # fmt: skip
            at = now - finished_ago
            done = AttemptRecord("delivered", at, at, "http://127.0.0.1:9/x", ())
            await store.record_webhook_attempt(ident, done, next_attempt_at=None)
            kept.append(ident)
    finally:
        await store.close()
    app = create_app(settings, provisioner=LocalOnlyProvisioner())
    client = await aiohttp_client(app)
    token_org = await make_org(client, "globex")
    assert token_org.org_id != org.id

    async def purged() -> bool:
        rows, _ = await app[STORE].list_webhook_deliveries(
            org.id, DeliveryFilter(), offset=0, limit=5
        )
        return [r.id for r in rows] == [kept[1]]

    # The purge task started with the app runs at once, then every minute.
    await until(purged, "the webhook finished two hours ago to be purged")
    assert app[RUNTIME].outbox.purged == 1


def test_the_delivery_settings_are_read_from_the_environment() -> None:
    default = Settings.from_env({})
    assert (default.webhook_max_attempts, default.webhook_retention_s) == (12, 7 * 24 * 3600.0)
    env = {"CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS": "3", "CALLBRIDGE_WEBHOOK_RETENTION_S": "86400"}
    given = Settings.from_env(env)
    assert (given.webhook_max_attempts, given.webhook_retention_s) == (3, 86400.0)
    for name, raw in (
        ("CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS", "51"),
        ("CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS", "two"),
        ("CALLBRIDGE_WEBHOOK_RETENTION_S", "59"),
        ("CALLBRIDGE_WEBHOOK_RETENTION_S", "nan"),
        ("CALLBRIDGE_WEBHOOK_RETENTION_S", "a week"),
    ):
        with pytest.raises(ValidationError, match=name) as info:
            Settings.from_env({name: raw})
        assert info.value.field == name
