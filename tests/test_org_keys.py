"""Webhook signatures per organization: each has its own Ed25519 key, served by
``GET /v2/public_key`` to its token alone, rotatable with the replaced key published for a
grace period. Verification is the official ``telnyx`` SDK's, as a receiver would do it."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from engine.config import Settings
from engine.errors import NotFound, ValidationError
from engine.store.sql import SqlStore
from engine.webhooks.outbox import WebhookOutbox
from engine.webhooks.signing import OrgSigningKeys, org_signing_key, public_key_b64
from tests.call_fakes import Harness, Hook
from tests.platform_client import Org

SECRET = "org-keys-test-secret-" + "s" * 32
DAY = 24 * 3600.0


class FakeClock:
    """Starts at the real time: the SDK refuses a signature whose timestamp is 5 min off."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqlStore(f"sqlite:///{tmp_path / 'keys.db'}")
    await store.start()
    yield store
    await store.close()


async def make_org(store: SqlStore, handle: str) -> int:
    return (await store.create_organization(handle, handle.title(), handle * 8)).id


async def keys_of(h: Harness, org: Org | None = None) -> dict[str, Any]:
    reply = await h.request("GET", "/v2/public_key", org=org)
    assert reply.status == 200, reply
    return reply.body["data"]  # type: ignore[no-any-return]


def verifies(hook: Hook, key: str) -> bool:
    try:
        verify_webhook_signature(hook.raw.decode(), hook.headers, key)
    except WebhookVerificationError:
        return False
    return True


# ---- one key per organization -----------------------------------------------------------------
async def test_each_organization_verifies_only_its_own_webhooks(h: Harness) -> None:
    mine, theirs = (await keys_of(h))["public_key"], (await keys_of(h, h.other_org))["public_key"]
    assert mine != theirs and len(base64.b64decode(mine)) == len(base64.b64decode(theirs)) == 32
    a = await h.incoming()
    b = await h.incoming(org=h.other_org)
    a_hook = await h.receiver.next("call.initiated", a)
    b_hook = await h.receiver.next("call.initiated", b)
    assert verifies(a_hook, mine) and verifies(b_hook, theirs)
    # An event captured at one tenant's endpoint does not verify at the other's.
    assert not verifies(a_hook, theirs)
    assert not verifies(b_hook, mine)


async def test_the_keys_need_the_organizations_token(h: Harness) -> None:
    for method, path in [("GET", "/v2/public_key"), ("POST", "/v2/public_key/actions/rotate")]:
        for headers in [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Bearer"}]:
            resp = await h.client.request(method, path, headers=headers)
            body = await resp.json()
            assert resp.status == 401, (method, path, headers, body)
            assert body["errors"][0]["code"] == "10009"
    assert (await keys_of(h))["keys"][0]["version"] == 1, "nothing was rotated"


async def test_the_response_keeps_telnyx_shape_and_lists_the_current_key(h: Harness) -> None:
    data = await keys_of(h)
    assert data == {
        "public_key": data["public_key"],
        "keys": [
            {
                "version": 1,
                "public_key": data["public_key"],
                "status": "current",
                "retired_at": None,
                "valid_until": None,
            }
        ],
    }


# ---- rotation ---------------------------------------------------------------------------------
async def test_rotation_signs_new_webhooks_with_the_new_key_and_keeps_the_old_listed(
    h: Harness,
) -> None:
    before = await keys_of(h)
    theirs = await keys_of(h, h.other_org)
    reply = await h.request("POST", "/v2/public_key/actions/rotate")
    assert reply.status == 200, reply
    after = reply.body["data"]
    assert after == await keys_of(h), "rotate answers what GET answers from then on"
    new, old = after["keys"]
    assert after["public_key"] == new["public_key"] != before["public_key"]
    assert (new["version"], new["status"], new["retired_at"], new["valid_until"]) == (
        2,
        "current",
        None,
        None,
    )
    assert (old["version"], old["public_key"], old["status"]) == (
        1,
        before["public_key"],
        "retired",
    )
    retired = occurred(old["retired_at"])
    assert occurred(old["valid_until"]) - retired == pytest.approx(DAY, abs=1e-3)
    assert await keys_of(h, h.other_org) == theirs, "another organization's key is untouched"

    leg = await h.incoming()
    hook = await h.receiver.next("call.initiated", leg)
    assert verifies(hook, new["public_key"])
    assert not verifies(hook, before["public_key"])


async def test_a_zero_grace_period_unlists_the_replaced_key_at_once(
    aiohttp_server,  # type: ignore[no-untyped-def]
    aiohttp_client,
    settings: Settings,
) -> None:
    no_grace = replace(settings, signing_key_grace_s=0.0)
    h = await Harness.start(aiohttp_client, aiohttp_server, no_grace)
    before = await keys_of(h)
    reply = await h.request("POST", "/v2/public_key/actions/rotate")
    assert reply.status == 200, reply
    (only,) = reply.body["data"]["keys"]
    assert only["version"] == 2 and only["public_key"] != before["public_key"]


def occurred(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


# ---- the grace period, on an injected clock ------------------------------------------------------
async def test_a_replaced_key_is_listed_until_its_grace_period_ends_and_not_after(
    store: SqlStore,
) -> None:
    org = await make_org(store, "acme")
    clock = FakeClock()
    keys = OrgSigningKeys(SECRET, store, grace_s=DAY, clock=clock)
    first = public_key_b64(org_signing_key(SECRET, org, 1))
    second = public_key_b64(org_signing_key(SECRET, org, 2))
    rotated_at = clock.now
    assert [(k.version, k.public_key) for k in await keys.rotate(org)] == [(2, second), (1, first)]
    clock.now = rotated_at + DAY - 0.001
    listed = await keys.published(org)
    assert [(k.version, k.retired_at, k.valid_until) for k in listed] == [
        (2, None, None),
        (1, rotated_at, rotated_at + DAY),
    ]
    clock.now = rotated_at + DAY
    assert [k.public_key for k in await keys.published(org)] == [second]
    assert public_key_b64(await keys.signing_key(org)) == second


async def test_keys_replaced_within_one_grace_period_are_all_listed(store: SqlStore) -> None:
    org = await make_org(store, "acme")
    clock = FakeClock()
    keys = OrgSigningKeys(SECRET, store, grace_s=DAY, clock=clock)
    start = clock.now
    await keys.rotate(org)
    clock.now += 3600
    await keys.rotate(org)
    assert [(k.version, k.retired_at) for k in await keys.published(org)] == [
        (3, None),
        (2, start + 3600),
        (1, start),
    ]
    clock.now = start + DAY
    assert [k.version for k in await keys.published(org)] == [3, 2]
    assert public_key_b64(await keys.signing_key(org)) == public_key_b64(
        org_signing_key(SECRET, org, 3)
    )


async def test_a_restart_keeps_the_version(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'restart.db'}"
    first = SqlStore(database)
    await first.start()
    org = await make_org(first, "acme")
    clock = FakeClock()
    rotated = await OrgSigningKeys(SECRET, first, clock=clock).rotate(org)
    await first.close()
    second = SqlStore(database)
    await second.start()
    try:
        keys = OrgSigningKeys(SECRET, second, clock=clock)
        assert await keys.published(org) == rotated
        assert public_key_b64(await keys.signing_key(org)) == rotated[0].public_key
    finally:
        await second.close()


async def test_versions_and_secrets_give_distinct_keys(store: SqlStore) -> None:
    derived = {
        public_key_b64(org_signing_key(secret, org, version))
        for secret in (SECRET, SECRET + "2")
        for org in (1, 2, 12)
        for version in (1, 2, 21)
    }
    assert len(derived) == 2 * 3 * 3
    # An organization nobody has rotated (or none at all) is at version 1.
    assert (await store.signing_keys(999, retired_since=0.0)).version == 1


async def test_rotating_an_unknown_organization_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await OrgSigningKeys(SECRET, store).rotate(999)
    with pytest.raises(ValueError, match="negative"):
        OrgSigningKeys(SECRET, store, grace_s=-1)


# ---- delivery ---------------------------------------------------------------------------------
async def test_a_retry_after_a_rotation_is_signed_with_the_new_key(
    aiohttp_server,  # type: ignore[no-untyped-def]
    store: SqlStore,
) -> None:
    received: list[Hook] = []

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        received.append(Hook(orjson.loads(raw), dict(request.headers), raw))
        return web.Response(status=503 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    url = str((await aiohttp_server(app)).make_url("/hook"))
    org = await make_org(store, "acme")
    clock = FakeClock()
    keys = OrgSigningKeys(SECRET, store, clock=clock)
    outbox = WebhookOutbox(store, keys, clock=clock, backoff=(1,))
    await outbox.publish(org_id=org, leg_id="a", url=url, event_type="call.hangup", payload={})
    async with aiohttp.ClientSession() as session:
        assert await outbox.deliver_due(session) == 1
        old, new = (await keys.published(org))[0].public_key, (await keys.rotate(org))[0].public_key
        clock.now += 1
        assert await outbox.deliver_due(session) == 1
    assert outbox.delivered == 1
    first, retry = received
    assert verifies(first, old) and not verifies(first, new)
    assert verifies(retry, new) and not verifies(retry, old)


# ---- the setting ----------------------------------------------------------------------------
def test_the_grace_period_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).signing_key_grace_s == DAY
    env = {"CALLBRIDGE_SIGNING_KEY_GRACE_S": "3600"}
    assert Settings.from_env(env).signing_key_grace_s == 3600
    assert Settings.from_env({"CALLBRIDGE_SIGNING_KEY_GRACE_S": "0"}).signing_key_grace_s == 0
    for bad in ("-1", "soon", "nan", "inf", str(31 * DAY)):
        with pytest.raises(ValidationError, match="CALLBRIDGE_SIGNING_KEY_GRACE_S") as caught:
            Settings.from_env({"CALLBRIDGE_SIGNING_KEY_GRACE_S": bad})
        assert caught.value.field == "CALLBRIDGE_SIGNING_KEY_GRACE_S"
