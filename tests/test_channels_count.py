"""A number's ``channels_count``: its real capacity in live legs, set through connect-provider.

The platform API validates it (400 naming the field), a new number gets 100, connecting the
number again to its bridge sets it (or keeps it when not given), it shows in the number views
and in /openapi.json, migration 8 makes 100 the column's default without touching the numbers
already connected, and a default-routed conference number with ``channels_count`` 2 takes two
callers in one room and turns the third away busy until one hangs up (Twilio and Telnyx
simulators, through the real app).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, ToneSource, TwilioCall, TwilioSimulator
from adapters.twilio.twiml import Reject, parse_twiml
from engine.admission.gate import Admission
from engine.admission.inbound import Refusal, admit
from engine.admission.live import LiveLegIndex
from engine.api.bridges import MAX_CHANNELS
from engine.api.keys import LIVE_LEGS
from engine.config import Settings
from engine.machine.model import RejectCause
from engine.store.base import OrgLimitsRecord
from engine.store.connect import open_engine
from engine.store.migrate import migrate
from engine.store.migrations import MIGRATIONS
from engine.store.sql import SqlStore
from tests.platform_client import BRIDGES, Org, Reply
from tests.telnyx_harness import Stack, caller, telnyx_stack
from tests.twilio_env import TwilioEnv, assert_hears, record_after

NUMBER = "+14155550100"
OTHER = "+14155550101"


async def connect(org: Org, slug: str, config_id: int, number: str | None, **extra: Any) -> Reply:
    body: dict[str, Any] = {"provider_config_id": config_id, **extra}
    if number is not None:
        body["phone_number"] = number
    return await org.call("POST", f"{BRIDGES}{slug}/connect-provider/", body)


async def capacity(org: Org, slug: str, number: str) -> int:
    """The number's channels_count as the bridge view shows it."""
    numbers = (await org.call("GET", f"{BRIDGES}{slug}/")).body["data"]["numbers"]
    (shown,) = [n["channels_count"] for n in numbers if n["number"] == number]
    assert isinstance(shown, int)
    return shown


# --- the platform API --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -1, True, False, "2", "", 2.5, 2.0, [2], {"n": 2}, MAX_CHANNELS + 1, 2**63 - 1],
    ids=repr,
)
async def test_a_channels_count_that_is_not_a_positive_integer_is_400(org: Org, value: Any) -> None:
    config = await org.create_config("twilio")
    bridge = await org.create_bridge("Conference")
    reply = await connect(org, bridge["slug"], config["id"], NUMBER, channels_count=value)
    assert reply.status == 400, reply.text
    assert reply.body["status_code"] == 400
    assert reply.body["message"] == "Failed to connect provider."
    assert reply.body["errors"] == f"channels_count must be an integer from 1 to {MAX_CHANNELS}"
    got = (await org.call("GET", f"{BRIDGES}{bridge['slug']}/")).body["data"]
    assert (got["numbers"], got["provider_credential"]) == ([], None), "nothing was written"


async def test_a_channels_count_without_a_number_is_400_and_connects_nothing(org: Org) -> None:
    config = await org.create_config("twilio")
    bridge = await org.create_bridge("Conference")
    reply = await connect(org, bridge["slug"], config["id"], None, channels_count=5)
    assert reply.status == 400, reply.text
    assert reply.body["message"] == "Failed to connect provider."
    assert "channels_count" in reply.body["errors"] and "phone_number" in reply.body["errors"]
    got = (await org.call("GET", f"{BRIDGES}{bridge['slug']}/")).body["data"]
    assert got["provider_credential"] is None


async def test_a_new_number_takes_100_and_a_reconnect_sets_or_keeps_it(org: Org) -> None:
    config = await org.create_config("twilio")
    bridge = await org.create_bridge("Conference")
    slug = bridge["slug"]

    first = await connect(org, slug, config["id"], NUMBER)  # seed 001's body, as it is
    assert first.status == 200, first.text
    assert first.body["data"]["channels_count"] == 100
    assert await capacity(org, slug, NUMBER) == 100

    given = await connect(org, slug, config["id"], OTHER, channels_count=7)
    assert (given.status, given.body["data"]["channels_count"]) == (200, 7)
    assert await capacity(org, slug, OTHER) == 7

    for sent, stored in ((2, 2), (None, 2), ("absent", 2), (MAX_CHANNELS, MAX_CHANNELS)):
        extra = {} if sent == "absent" else {"channels_count": sent}
        again = await connect(org, slug, config["id"], NUMBER, **extra)
        assert again.status == 200, again.text
        assert again.body["data"]["channels_count"] == stored, sent
        assert await capacity(org, slug, NUMBER) == stored, sent
    assert await capacity(org, slug, OTHER) == 7, "only the named number changes"

    listed = await org.call("GET", f"{BRIDGES}{slug}/")
    assert len(listed.body["data"]["numbers"]) == 2, "reconnecting adds no assignment"


async def test_a_capacity_change_updates_the_bridge_and_an_unchanged_one_does_not(
    org: Org,
) -> None:
    config = await org.create_config("twilio")
    bridge = await org.create_bridge("Conference")
    slug = bridge["slug"]
    await connect(org, slug, config["id"], NUMBER)
    before = (await org.call("GET", f"{BRIDGES}{slug}/")).body["data"]["modified"]
    await connect(org, slug, config["id"], NUMBER, channels_count=100)
    assert (await org.call("GET", f"{BRIDGES}{slug}/")).body["data"]["modified"] == before
    await connect(org, slug, config["id"], NUMBER, channels_count=3)
    assert (await org.call("GET", f"{BRIDGES}{slug}/")).body["data"]["modified"] > before


async def test_openapi_describes_channels_count(client: Any) -> None:
    doc = await (await client.get("/openapi.json")).json()
    op = doc["paths"]["/api/v2/platform/telephony/bridges/{slug}/connect-provider/"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    (integer, null) = body["properties"]["channels_count"]["anyOf"]
    assert (integer["type"], integer["minimum"], integer["maximum"]) == ("integer", 1, MAX_CHANNELS)
    assert null == {"type": "null"}
    assert "channels_count" not in body.get("required", [])
    schemas = doc["components"]["schemas"]
    assert schemas["Number"]["properties"]["channels_count"] == {"type": "integer", "minimum": 1}
    assert "channels_count" in schemas["Number"]["required"]
    assert schemas["Connection"]["properties"]["channels_count"]["type"] == "integer"


# --- migration 8 -------------------------------------------------------------------------------


def number_assignments_ddl(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'number_assignments'"
        ).fetchone()
    return str(sql)


def seed_a_version_7_number(path: Path) -> None:
    """An organization, configuration and bridge with one number, as version 7 stored them."""
    stamp = "2026-01-01 00:00:00.000000"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(
            "INSERT INTO organizations (id, domain_handle, name, created, modified)"
            " VALUES (1, 'acme', 'Acme', ?, ?)",
            (stamp, stamp),
        )
        conn.execute(
            "INSERT INTO provider_configs (id, org_id, provider, name, account_sid,"
            " auth_token_ciphertext, created_at, modified)"
            " VALUES (1, 1, 'twilio', 'Twilio', 'AC1', 'cipher', ?, ?)",
            (stamp, stamp),
        )
        conn.execute(
            "INSERT INTO bridges (id, org_id, slug, name, status, provider_config_id, created,"
            " modified) VALUES (1, 1, 'support', 'Support', 'ACTIVE', 1, ?, ?)",
            (stamp, stamp),
        )
        conn.execute(
            "INSERT INTO phone_numbers (id, number, org_id, provider_config_id, created)"
            " VALUES (1, ?, 1, 1, ?)",
            (NUMBER, stamp),
        )
        conn.execute(
            "INSERT INTO number_assignments (phone_number_id, bridge_id, created) VALUES (1, 1, ?)",
            (stamp,),
        )


async def test_migration_8_makes_100_the_default_and_keeps_connected_numbers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v7.db"
    engine = open_engine(str(path))
    try:
        assert await migrate(engine, MIGRATIONS[:7]) == 7
    finally:
        await engine.dispose()
    seed_a_version_7_number(path)
    before = number_assignments_ddl(path)
    assert "channels_count INTEGER DEFAULT '1' NOT NULL" in before

    store = SqlStore(str(path))
    await store.start()
    try:
        bridge = await store.get_bridge(1, "support")
        assert bridge is not None
        (kept,) = bridge.numbers
        assert (kept.number, kept.channels_count) == (NUMBER, 1), "connected numbers keep theirs"
        assert kept.created.year == 2026
        added = await store.connect_number(1, "support", provider_config_id=1, number=OTHER)
        assert [n.channels_count for n in added.numbers] == [1, 100]
        raised = await store.connect_number(
            1, "support", provider_config_id=1, number=NUMBER, channels_count=5
        )
        assert [n.channels_count for n in raised.numbers] == [5, 100]
        assert [n.id for n in raised.numbers] == [kept.id, added.numbers[1].id]
    finally:
        await store.close()

    # The table is the same but for the default: constraints, names and index survive.
    after = number_assignments_ddl(path)
    assert after == before.replace("DEFAULT '1' NOT NULL", "DEFAULT '100' NOT NULL")
    with sqlite3.connect(path) as conn:
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'number_assignments' AND sql IS NOT NULL"
        ).fetchall()
        assert indexes == [("ix_number_assignments_bridge_id",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # A row written without the column, as by hand, gets the new default too.
        conn.execute(
            "INSERT INTO phone_numbers (id, number, org_id, provider_config_id, created)"
            " VALUES (9, '+14155550109', 1, 1, '2026-01-01 00:00:00.000000')"
        )
        conn.execute(
            "INSERT INTO number_assignments (phone_number_id, bridge_id, created)"
            " VALUES (9, 1, '2026-01-01 00:00:00.000000')"
        )
        assert conn.execute(
            "SELECT channels_count FROM number_assignments WHERE phone_number_id = 9"
        ).fetchall() == [(100,)]
        versions = conn.execute("SELECT version, description FROM schema_version").fetchall()
    assert (8, "a new number's channels_count defaults to 100") in versions  # later ones follow


# --- admission ---------------------------------------------------------------------------------


async def test_admission_counts_against_the_number_and_then_the_organization(
    settings: Settings,
) -> None:
    store = SqlStore(settings.database_url)
    await store.start()
    try:
        org = await store.create_organization("acme", "Acme", "0" * 64)
        config = await store.create_provider_config(
            org.id,
            provider="twilio",
            name="Twilio",
            account_sid="AC1",
            auth_token_ciphertext="cipher",
            public_key=None,
            api_base_url=None,
        )
        await store.create_bridge(
            org.id,
            slug="room",
            name="Room",
            description="",
            status="ACTIVE",
            region="US",
            webhook_url=None,
        )
        await store.connect_number(
            org.id, "room", provider_config_id=config.id, number=NUMBER, channels_count=2
        )
        await store.connect_number(org.id, "room", provider_config_id=config.id, number=OTHER)
        await store.set_org_limits(org.id, OrgLimitsRecord(max_legs=4))
        live, admission = LiveLegIndex(), Admission()

        async def call(number: str, leg: str) -> Refusal | None:
            verdict = await admit(store, live, number, settings, admission, leg)
            return verdict if isinstance(verdict, Refusal) else None  # counted when admitted

        assert await call(NUMBER, "a") is None and await call(NUMBER, "b") is None
        full = await call(NUMBER, "c")
        assert full == Refusal(RejectCause.USER_BUSY, f"{NUMBER} already carries 2 live leg(s)")
        # The other number has 100 channels; the organization's 4 legs stop it first.
        assert await call(OTHER, "d") is None and await call(OTHER, "e") is None
        over = await call(OTHER, "f")
        assert over is not None and over.cause is RejectCause.USER_BUSY
        assert "its limit" in over.reason
        live.release("a")
        assert await call(NUMBER, "g") is None
    finally:
        await store.close()


# --- end to end: a conference number through the simulators ---------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)


def twiml_of(call: TwilioCall) -> list[Any]:
    return [parse_twiml(r.response) for r in call.events if r.kind == "voice" and r.ok]


async def hung_up(env: TwilioEnv, call: TwilioCall) -> None:
    """The caller hangs up and callbridge has applied its ``completed`` callback."""
    await call.hang_up()
    await call.wait_until(lambda c: any(r.kind == "completed" and r.status for r in c.events))
    await env.runtime.settle()


async def test_twilio_a_conference_number_with_two_channels_takes_two_callers(
    env: TwilioEnv,
) -> None:
    bridge = await env.bridge("Conference", ())  # no webhook_url: callers join its conference
    env.sim.add_number(NUMBER)
    reply = await connect(env.org, bridge["slug"], env.config["id"], NUMBER, channels_count=2)
    assert (reply.status, reply.body["data"]["channels_count"]) == (200, 2), reply.text

    a = await env.sim.place_inbound_call("+15557654321", NUMBER, source=ToneSource(440))
    b = await env.sim.place_inbound_call("+15557654322", NUMBER, source=ToneSource(700))
    await asyncio.gather(a.wait_for(CallState.STREAMING), b.wait_for(CallState.STREAMING))
    rooms = {env.runtime.machine.leg(env.leg_of(call)).room_id for call in (a, b)}
    (room,) = rooms
    assert room is not None and room.startswith("conf:")
    await asyncio.gather(record_after(a, 0.2), record_after(b, 0.2))
    heard_a, heard_b = await asyncio.gather(record_after(a, 0.6), record_after(b, 0.6))
    assert_hears(heard_a, (700.0,), 440.0)
    assert_hears(heard_b, (440.0,), 700.0)

    third = await env.sim.place_inbound_call("+15557654323", NUMBER)
    await third.wait_for(CallState.ENDED)
    # The simulator reports a <Reject reason="busy"/> as Twilio does: the call ends "busy".
    assert (third.end_reason, twiml_of(third)) == ("busy", [(Reject("busy"),)])
    assert await env.live_count(NUMBER) == 2
    assert a.state is CallState.STREAMING and b.state is CallState.STREAMING

    await hung_up(env, a)
    assert await env.live_count(NUMBER) == 1
    again = await env.sim.place_inbound_call("+15557654324", NUMBER, source=ToneSource(1000))
    await again.wait_for(CallState.STREAMING)
    assert await env.live_count(NUMBER) == 2
    assert env.runtime.machine.leg(env.leg_of(again)).room_id == room


async def test_telnyx_a_number_with_two_channels_rejects_the_third_caller_busy(
    tmp_path: Path,
) -> None:
    async with telnyx_stack(tmp_path) as stack:
        slug = await stack.bridge()  # default routing: callers join the bridge's conference
        stack.sim.add_number(NUMBER)
        reply = await connect(stack.org, slug, stack.config_id, NUMBER, channels_count=2)
        assert reply.status == 200, reply.text
        calls = [
            await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(freq))
            for freq in (440, 700)
        ]
        await asyncio.gather(*(call.wait_for(CallState.STREAMING) for call in calls))
        third = await stack.sim.place_inbound_call(caller(), NUMBER)
        await third.wait_for(CallState.ENDED)
        assert rejects(stack, third.call_control_id) == [{"cause": "USER_BUSY"}]
        assert third.hangup == ("user_busy", "callee", "486")
        assert await stack.app[LIVE_LEGS].count_for_number(NUMBER) == 2

        await calls[0].hang_up()
        await stack.taken(calls[0], "call.hangup")
        await stack.runtime.settle()
        again = await stack.sim.place_inbound_call(caller(), NUMBER)
        await again.wait_for(CallState.STREAMING)
        assert rejects(stack, again.call_control_id) == []
        assert await stack.app[LIVE_LEGS].count_for_number(NUMBER) == 2


def rejects(stack: Stack, call_control_id: str) -> list[Any]:
    path = f"/v2/calls/{call_control_id}/actions/reject"
    return [r.json for r in stack.sim.requests if r.path == path]
