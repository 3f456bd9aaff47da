"""The operator console's server side (issue 15, point 2): sign-in, the session cookie, CSRF
and origin checks, the per-organization feed, controls through the Call Control path, and the
audit log. Real app, Twilio simulator; the browser itself is tests/test_console_browser.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.simulators import CallState, SilenceSource, ToneSource, TwilioCall
from engine.api.keys import RUNTIME, STORE
from tests.console_client import ConsoleClient
from tests.platform_client import make_org
from tests.twilio_env import AppHooks, TwilioEnv

NUMBER = "+15550015001"
CALLER = "+15557015001"


@pytest.fixture
def env(twilio_env: TwilioEnv) -> TwilioEnv:
    """The app behind the Twilio simulator (the shared ``twilio_env`` of conftest.py)."""
    return twilio_env


@pytest.fixture
async def console(env: TwilioEnv) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient(env.public_url)
    yield client
    await client.close()


async def answered_call(
    env: TwilioEnv, aiohttp_server: Any, *, tone: bool
) -> tuple[TwilioCall, str]:
    """A caller on a bridge whose application answers it: the call and its leg."""
    hooks = await AppHooks.start(aiohttp_server)
    await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    source = ToneSource(1000) if tone else SilenceSource()
    call = await env.sim.place_inbound_call(CALLER, NUMBER, source=source)
    leg = (await hooks.next("call.initiated")).leg
    await env.act(leg, "answer")
    await call.wait_for(CallState.STREAMING)
    return call, leg


async def test_sign_in_keeps_only_a_session_id_in_an_http_only_strict_cookie(
    env: TwilioEnv, console: ConsoleClient
) -> None:
    response = await console.sign_in(env.org.token)
    assert response.status == 303 and response.headers["Location"] == "/console"
    cookie = response.cookies["callbridge_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert env.org.token not in cookie.value
    page = await console.session.get(env.public_url + "/console")
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    info = await (await console.session.get(env.public_url + "/console/api/session")).json()
    assert info["data"]["organization"]["domain_handle"] == "acme"
    assert env.org.token not in str(info)


async def test_a_wrong_token_goes_back_to_the_sign_in_page(
    env: TwilioEnv, console: ConsoleClient
) -> None:
    response = await console.sign_in("not-a-token")
    assert response.status == 303 and response.headers["Location"].endswith("error=invalid")
    assert "callbridge_console" not in response.cookies
    page = await console.session.get(env.public_url + response.headers["Location"])
    assert "not valid" in await page.text()


async def test_without_a_session_nothing_is_shown_or_done(
    env: TwilioEnv, console: ConsoleClient
) -> None:
    page = await console.session.get(env.public_url + "/console", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/console/signin"
    feed = await console.session.get(env.public_url + "/console/api/feed")
    assert feed.status == 401
    status, _ = await console.act("v3:anything", "hangup", csrf="x")
    assert status == 401


async def test_sign_in_from_another_origin_is_refused(
    env: TwilioEnv, console: ConsoleClient
) -> None:
    response = await console.session.post(
        env.public_url + "/console/signin",
        data={"token": env.org.token},
        headers={"Origin": "https://elsewhere.example"},
        allow_redirects=False,
    )
    assert response.status == 403 and "callbridge_console" not in response.cookies


async def test_a_control_needs_the_csrf_token_and_every_attempt_is_audited(
    env: TwilioEnv, console: ConsoleClient, aiohttp_server: Any
) -> None:
    call, leg = await answered_call(env, aiohttp_server, tone=False)
    await console.sign_in(env.org.token)
    status, _ = await console.act(leg, "hangup", csrf="forged")
    assert status == 403 and call.state is not CallState.ENDED
    status, _ = await console.act(leg, "speak")
    assert status == 404  # the console offers only what the API can do

    status, reply = await console.act(leg, "hangup")
    assert status == 200, reply
    await call.wait_for(CallState.ENDED)
    status, reply = await console.act(leg, "hangup")  # the leg has ended: the API's 422
    assert status == 422, reply

    token_id = await env.app[STORE].api_token_id(_digest(env.org.token))
    entries = await env.app[STORE].audit_entries(env.org.org_id, 10)
    assert [(e.action, e.call_control_id, e.token_id) for e in entries] == [
        ("hangup", leg, token_id),
        ("hangup", leg, token_id),
    ]
    assert entries[1].outcome == "ok" and entries[0].outcome != "ok"
    listed = await (await console.session.get(env.public_url + "/console/api/audit")).json()
    assert [e["outcome"] for e in listed["data"]] == [e.outcome for e in entries]


async def test_the_feed_shows_an_organization_its_own_calls_and_nobody_else_does(
    env: TwilioEnv, console: ConsoleClient, aiohttp_server: Any
) -> None:
    _, leg = await answered_call(env, aiohttp_server, tone=True)
    other_org = await make_org(env.client, "globex", "Globex")
    other = ConsoleClient(env.public_url)
    try:
        await console.sign_in(env.org.token)
        await other.sign_in(other_org.token)
        await console.open_feed()
        await other.open_feed()
        live = await console.message_where("live", lambda d: d["legs"])
        assert [v["call_control_id"] for v in live["legs"]] == [leg]
        assert live["legs"][0]["provider"] == "twilio" and live["legs"][0]["media"] is not None
        # The tone (-12 dBFS peak) is measured as such once the meter watches the leg.
        levels = await console.message_where("levels", lambda d: (d.get(leg) or -100) > -20)
        assert levels[leg] == pytest.approx(-12.0, abs=1.0)
        bridges = await console.message_where("bridges")
        assert [n["number"] for n in bridges[0]["numbers"]] == [NUMBER]
        webhooks = await console.message_where("webhooks", lambda d: len(d) >= 2)
        assert {w["event_type"] for w in webhooks} >= {"call.initiated", "call.answered"}

        for event in ("live", "levels", "bridges", "webhooks"):
            assert leg not in str(await other.message_where(event))
        status, _ = await other.act(leg, "hangup")
        assert status == 404  # another organization's leg is unknown to this session
    finally:
        await other.close()


def _digest(token: str) -> str:
    from engine.crypto import token_digest

    return token_digest(token)


async def test_signing_out_ends_the_session(env: TwilioEnv, console: ConsoleClient) -> None:
    await console.sign_in(env.org.token)
    signout = env.public_url + "/console/signout"
    refused = await console.session.post(signout, headers={"X-CSRF-Token": "forged"})
    assert refused.status == 403
    done = await console.session.post(signout, headers={"X-CSRF-Token": console.csrf})
    assert done.status == 200
    feed = await console.session.get(env.public_url + "/console/api/feed")
    assert feed.status == 401


async def test_mute_and_hold_are_the_conference_actions_on_the_leg(
    env: TwilioEnv, console: ConsoleClient, aiohttp_server: Any
) -> None:
    _, leg = await answered_call(env, aiohttp_server, tone=True)
    await console.sign_in(env.org.token)
    status, reply = await console.act(leg, "mute")
    assert status == 422 and "conference" in str(reply)  # in no conference: nothing to mute
    status, reply = await env.api(
        "POST", "/v2/conferences", {"call_control_id": leg, "name": "standup"}
    )
    assert status == 200, reply
    runtime = env.app[RUNTIME]
    for action, muted in (("mute", True), ("unmute", False)):
        status, reply = await console.act(leg, action)
        assert status == 200, reply
        assert runtime.machine.leg(leg).muted is muted
    for action, on_hold in (("hold", True), ("unhold", False)):
        status, reply = await console.act(leg, action)
        assert status == 200, reply
        assert runtime.machine.leg(leg).on_hold is on_hold
    entries = await env.app[STORE].audit_entries(env.org.org_id, 10)
    assert [(e.action, e.outcome == "ok") for e in entries] == [
        ("unhold", True),
        ("hold", True),
        ("unmute", True),
        ("mute", True),
        ("mute", False),
    ]
