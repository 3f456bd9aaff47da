"""Limits per organization (engine/admission/limits.py): live legs and the API request rate.

The rate tests drive each organization's token bucket with an injected clock, so nothing
sleeps; the leg tests reach the limit through the real paths: dial (429) and inbound calls
from the Twilio and Telnyx simulators (rejected busy).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.simulators import CallState, ToneSource, TwilioCall, TwilioSimulator
from adapters.twilio.twiml import Reject, parse_twiml
from engine.admission.limits import OrgLimits, OrgRateLimiter, TokenBucket, TooManyRequests
from engine.api.keys import LIVE_LEGS, STORE
from engine.api.rate_limit import RATE_LIMITER
from engine.app import create_app
from engine.cli import main
from engine.config import Settings
from engine.errors import NotFound, ValidationError
from engine.providers.provisioning import LocalOnlyProvisioner
from engine.store.base import OrgLimitsRecord
from engine.store.sql import SqlStore
from tests.call_fakes import Harness
from tests.platform_client import BRIDGES, Org
from tests.telnyx_harness import caller, telnyx_stack
from tests.twilio_env import TwilioEnv


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- the token bucket -------------------------------------------------------------------------


def test_a_bucket_grants_its_burst_then_one_request_per_refill() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token comes back every 1/rate s
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    # A long quiet spell refills up to the burst, never beyond it.
    assert [bucket.take(100.0) for _ in range(4)][-1] > 0


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) > 0
    assert bucket.take(10.5) == pytest.approx(0.5)


def test_the_limiter_keeps_one_bucket_per_organization_and_follows_changes() -> None:
    clock = FakeClock()
    limiter = OrgRateLimiter(clock)
    tight = OrgLimits(max_legs=1, api_rate=1.0, api_burst=1)
    limiter.check(1, tight)
    with pytest.raises(TooManyRequests) as refused:
        limiter.check(1, tight)
    assert (refused.value.status, refused.value.code) == (429, "10011")
    assert refused.value.retry_after_header == "1"
    limiter.check(2, tight)  # organization 2 has its own bucket
    # A raised override applies at once, without refilling what was spent.
    looser = replace(tight, api_rate=10.0, api_burst=5)
    with pytest.raises(TooManyRequests):
        limiter.check(1, looser)
    clock.now += 0.1
    limiter.check(1, looser)


# ---- settings -----------------------------------------------------------------------------------


def test_defaults_come_from_the_environment_and_bad_values_are_refused() -> None:
    settings = Settings.from_env(
        {
            "CALLBRIDGE_ORG_MAX_LEGS": "7",
            "CALLBRIDGE_ORG_API_RATE": "2.5",
            "CALLBRIDGE_ORG_API_BURST": "9",
        }
    )
    assert (settings.org_max_legs, settings.org_api_rate, settings.org_api_burst) == (7, 2.5, 9)
    for name, raw in [
        ("CALLBRIDGE_ORG_MAX_LEGS", "-1"),
        ("CALLBRIDGE_ORG_MAX_LEGS", "lots"),
        ("CALLBRIDGE_ORG_API_RATE", "0"),
        ("CALLBRIDGE_ORG_API_RATE", "nan"),
        ("CALLBRIDGE_ORG_API_BURST", "0"),
    ]:
        with pytest.raises(ValidationError) as refused:
            Settings.from_env({name: raw})
        assert refused.value.field == name


# ---- the store ----------------------------------------------------------------------------------


async def test_overrides_are_stored_per_organization_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    store = SqlStore(url)
    await store.start()
    acme = await store.create_organization("acme", "Acme", "a" * 64)
    globex = await store.create_organization("globex", "Globex", "b" * 64)
    assert await store.org_limits(acme.id) == OrgLimitsRecord()
    await store.set_org_limits(acme.id, OrgLimitsRecord(max_legs=3, api_rate=1.5))
    await store.set_org_limits(acme.id, OrgLimitsRecord(max_legs=4, api_burst=2))  # replaces
    with pytest.raises(NotFound):
        await store.set_org_limits(9999, OrgLimitsRecord(max_legs=1))
    await store.close()

    again = SqlStore(url)
    await again.start()
    try:
        assert await again.org_limits(acme.id) == OrgLimitsRecord(max_legs=4, api_burst=2)
        assert await again.org_limits(globex.id) == OrgLimitsRecord()
    finally:
        await again.close()


# ---- the API request rate -----------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> web.Application:
    # Two requests at once, then one a second, for every organization unless overridden.
    tight = replace(settings, org_api_rate=1.0, org_api_burst=2)
    app = create_app(tight, provisioner=LocalOnlyProvisioner())
    app[RATE_LIMITER] = OrgRateLimiter(clock)
    return app


async def platform_get(org: Org) -> Any:
    return await org.client.get(BRIDGES, headers=org.headers)


async def telnyx_get(org: Org) -> Any:
    return await org.client.get("/v2/public_key", headers={"Authorization": f"Bearer {org.token}"})


async def test_an_organization_over_its_rate_gets_429_while_another_is_served_at_once(
    client: Any, org: Org, other_org: Org, clock: FakeClock
) -> None:
    assert [(await platform_get(org)).status for _ in range(2)] == [200, 200]
    refused = await platform_get(org)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    body = await refused.json()
    assert set(body) == {"status_code", "message", "errors"} and body["status_code"] == 429

    # Same instant: the other organization's budget is untouched, on both API families.
    assert (await platform_get(other_org)).status == 200
    assert (await telnyx_get(other_org)).status == 200

    # The Call Control API shares the organization's bucket, in Telnyx's envelope.
    refused = await telnyx_get(org)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    (error,) = (await refused.json())["errors"]
    assert (error["code"], error["title"]) == ("10011", "Too many requests")

    clock.now += 1.0  # one request's worth comes back
    assert (await platform_get(org)).status == 200
    assert (await platform_get(org)).status == 429


async def test_ops_and_requests_without_a_known_token_are_not_limited(
    client: Any, org: Org
) -> None:
    for _ in range(2):
        assert (await platform_get(org)).status == 200
    assert (await platform_get(org)).status == 429
    for _ in range(5):
        assert (await client.get("/healthz")).status == 200
        assert (await client.get(BRIDGES, headers={"Authorization": "Token nope"})).status == 401


async def test_a_stored_override_sets_the_organizations_rate(
    client: Any, org: Org, other_org: Org
) -> None:
    await client.app[STORE].set_org_limits(other_org.org_id, OrgLimitsRecord(api_burst=5))
    assert [(await platform_get(other_org)).status for _ in range(6)] == [200] * 5 + [429]
    assert [(await platform_get(org)).status for _ in range(3)] == [200, 200, 429]


async def test_every_limited_operation_documents_its_429(client: Any) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            limited = path.startswith(("/api/v2/platform/", "/v2/"))
            assert ("429" in operation["responses"]) == limited, (method, path)


# ---- live legs: dial ----------------------------------------------------------------------------


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, replace(settings, org_max_legs=1))


async def test_a_dial_over_the_leg_limit_is_429_and_each_organization_has_its_own(
    h: Harness,
) -> None:
    first = await h.dial()
    refused = await h.request("POST", "/v2/calls", dial_body(h))
    assert refused.status == 429
    (error,) = refused.body["errors"]
    assert (error["code"], error["title"]) == ("10011", "Too many requests")
    assert len(h.gateway.dials) == 1, "the refused dial placed nothing"

    # The other organization is at none of its legs.
    other = await h.request("POST", "/v2/calls", dial_body(h), org=h.other_org)
    assert other.status == 200
    assert (await h.request("POST", "/v2/calls", dial_body(h), org=h.other_org)).status == 429

    await h.hung_up(first)
    assert await h.client.app[LIVE_LEGS].count_for_org(h.org.org_id) == 0
    await h.dial()


async def test_a_dial_refused_for_legs_carries_retry_after(h: Harness) -> None:
    await h.dial()
    resp = await h.client.post(
        "/v2/calls", json=dial_body(h), headers={"Authorization": f"Bearer {h.org.token}"}
    )
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"


def dial_body(h: Harness) -> dict[str, Any]:
    return {
        "connection_id": h.bridge["slug"],
        "from": "+15550001111",
        "to": "+15550003333",
        "webhook_url": h.receiver.url,
    }


# ---- live legs: inbound, both providers -------------------------------------------------------

TWILIO_NUMBERS = ("+15550001111", "+15550001112")


def twiml_of(call: TwilioCall) -> list[Any]:
    return [parse_twiml(r.response) for r in call.events if r.kind == "voice" and r.ok]


@pytest.fixture
async def sim() -> Any:
    async with TwilioSimulator() as simulator:
        yield simulator


async def test_twilio_calls_over_the_organizations_leg_limit_are_rejected_busy(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> None:
    env = await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)
    await env.app[STORE].set_org_limits(env.org.org_id, OrgLimitsRecord(max_legs=1))
    first_number, second_number = TWILIO_NUMBERS
    await env.bridge("Support", TWILIO_NUMBERS)  # each number has a channel free
    first = await sim.place_inbound_call("+15557654321", first_number, source=ToneSource(440))
    await first.wait_for(CallState.STREAMING)
    second = await sim.place_inbound_call("+15557654322", second_number)
    await second.wait_for(CallState.ENDED)
    assert (second.end_reason, twiml_of(second)) == ("busy", [(Reject("busy"),)])
    assert await env.app[LIVE_LEGS].count_for_org(env.org.org_id) == 1

    await first.hang_up()
    third = await sim.place_inbound_call("+15557654323", second_number)
    await third.wait_for(CallState.STREAMING)


async def test_telnyx_calls_over_the_organizations_leg_limit_are_rejected_busy(
    tmp_path: Path,
) -> None:
    async with telnyx_stack(tmp_path) as stack:
        org_id = stack.org.org_id
        await stack.app[STORE].set_org_limits(org_id, OrgLimitsRecord(max_legs=1))
        await stack.bridge("+15550002222", "+15550003333")  # default routing
        first = await stack.sim.place_inbound_call(caller(), "+15550002222", source=ToneSource(440))
        await first.wait_for(CallState.STREAMING)
        second = await stack.sim.place_inbound_call(caller(), "+15550003333")
        await second.wait_for(CallState.ENDED)
        path = f"/v2/calls/{second.call_control_id}/actions/reject"
        rejects = [r.json for r in stack.sim.requests if r.path == path]
        assert rejects == [{"cause": "USER_BUSY"}]
        assert await stack.app[LIVE_LEGS].count_for_org(org_id) == 1
        assert first.state is CallState.STREAMING


# ---- the CLI ------------------------------------------------------------------------------------


def test_the_cli_sets_an_override_that_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["org", "create", "--handle", "acme", "--name", "Acme", "--database", db]) == 0
    org_id = json.loads(capsys.readouterr().out)["org_id"]
    limits = ["org", "limits", "--handle", "acme", "--database", db]
    assert main([*limits, "--max-legs", "3", "--api-rate", "2.5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["max_legs"], shown["api_rate"]) == (3, 2.5)
    assert shown["api_burst"] == Settings().org_api_burst  # not overridden: the default

    # A later process (a restart) finds them; "default" drops one override only.
    assert main([*limits, "--api-rate", "default"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["overrides"] == {"max_legs": 3, "api_rate": None, "api_burst": None}
    assert asyncio.run(stored_limits(db, org_id)) == OrgLimitsRecord(max_legs=3)

    assert main([*limits, "--max-legs", "-2"]) == 2
    assert "--max-legs" in capsys.readouterr().err
    assert main(["org", "limits", "--handle", "nobody", "--database", db]) == 2


async def stored_limits(db: str, org_id: int) -> OrgLimitsRecord:
    store = SqlStore(db)
    await store.start()
    try:
        return await store.org_limits(org_id)
    finally:
        await store.close()
