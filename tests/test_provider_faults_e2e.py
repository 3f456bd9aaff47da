"""End to end: provider REST answering 503s, 429s and timeouts for a while (the simulators'
``faults``), and a provider that ends a call without telling callbridge.

- Telnyx: the answer fails three ways before it succeeds, and the call streams; a hangup that
  fails for longer than the retry budget is retried until the simulator records it, the leg
  (gateway and channel) kept until then.
- Twilio: a hangup through REST rides out 503s and a hung request the same way; a dial refused
  with 429 is placed once its Retry-After has passed, and a dial answered 503 is never repeated
  (Twilio may have placed it).
- Reconciliation: a Telnyx call (is_alive false) and a Twilio call (status completed) that
  end without a word to callbridge are found and ended with ``call.hangup``.
- Setup timeout: an incoming leg nobody answers is ended, at Telnyx too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import telnyx
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.simulators import Callee, CallState, TelnyxSimulator, ToneSource, TwilioSimulator
from engine.admission.live import LiveLegs
from engine.api.keys import LIVE_LEGS
from engine.app import create_app
from engine.config import Settings
from tests.e2e_checks import watch
from tests.platform_client import make_org
from tests.telnyx_harness import SECRET_KEY, AppServer, Stack, caller
from tests.twilio_env import AppHooks, TwilioEnv

NUMBER = "+15550002222"
CALLEE = "+15559990000"
# Retries quick enough for a test: a 3 s budget, attempts cut at 1 s (a hung request costs that),
# a hangup past the budget tried at least every 0.1 s; no reconciliation unless asked for.
FAST = {
    "provider_retry_budget_s": 3.0,
    "provider_attempt_timeout_s": 1.0,
    "hangup_retry_cap_s": 0.1,
    "reconcile_interval_s": 3600.0,
}
WAIT_S = 10.0


def settings_for(tmp_path: Path, port: int, secret: str, **changes: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}",
        secret_key=secret,
        public_url=f"http://127.0.0.1:{port}",
        recordings_dir=str(tmp_path / "recordings"),
        allow_private_urls=True,  # simulators and receivers listen on 127.0.0.1
        **(FAST | changes),
    )


@contextlib.asynccontextmanager
async def telnyx_stack(tmp_path: Path, **changes: Any) -> AsyncIterator[Stack]:
    """tests.telnyx_harness.telnyx_stack with these settings."""
    port = unused_port()
    app = create_app(settings_for(tmp_path, port, SECRET_KEY, **changes))
    sim = TelnyxSimulator()
    await sim.start()
    watch(sim)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    app_server = AppServer()
    try:
        await client.start_server()
        await app_server.start()
        org = await make_org(client, "acme", "Acme Inc")
        connection_id = sim.add_connection(webhook_url=None)
        config = await org.create_config(
            "telnyx", account_sid=connection_id, auth_token=sim.api_key,
            public_key=sim.public_key, api_base_url=sim.base_url,
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        yield Stack(sim, app, client, org, config["id"], connection_id, base_url, app_server)
    finally:
        await sim.close()
        await app_server.close()
        await client.close()


def answering_application(stack: Stack) -> telnyx.AsyncTelnyx:
    """The application answers every call through the official SDK."""
    sdk = telnyx.AsyncTelnyx(api_key=stack.org.token, base_url=stack.base_url + "/v2",
                             max_retries=0)  # fmt: skip

    async def application(data: dict[str, Any]) -> None:
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(data["payload"]["call_control_id"])

    stack.app_server.on_event = application
    return sdk


async def until(sim: TelnyxSimulator | TwilioSimulator, condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` about the simulator's requests, judged as each one completes."""
    await sim.wait_for_request(lambda _request: condition(), WAIT_S)


def live(app: Any) -> LiveLegs:
    index: LiveLegs = app[LIVE_LEGS]
    return index


async def test_telnyx_answer_and_hangup_ride_out_503s_429s_and_timeouts(tmp_path: Path) -> None:
    async with telnyx_stack(tmp_path) as stack:
        await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
        sdk = answering_application(stack)
        faults = stack.sim.faults
        faults.fail("answer", times=1)
        faults.hang("answer", times=1)
        faults.fail("answer", status=429, times=1, retry_after_s=0.1)
        try:
            call = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
            await call.wait_for(CallState.STREAMING, WAIT_S)
            leg = (await stack.leg_of(call)).leg_id
            await stack.app_server.wait_for("call.answered", leg)
            answers = [r for r in stack.sim.requests if r.path.endswith("/actions/answer")]
            # 503, no answer (cut by callbridge at 1 s; the simulator still holds it), 429,
            # then done (a slow success cut short is repeated and deduped: 200 again). One
            # command, so one command_id, which Telnyx dedupes.
            statuses = [r.status for r in answers]
            assert statuses[:4] == [503, None, 429, 200] and set(statuses[4:]) <= {200}
            assert len({r.json["command_id"] for r in answers}) == 1
            assert stack.leg_state(leg) == "answered"

            # The hangup fails for longer than the retry budget: it is retried past it.
            faults.fail("hangup", for_s=4.0)
            await sdk.calls.actions.hangup(leg)
            await stack.app_server.wait_for("call.hangup", leg)
            await until(stack.sim, lambda: faults.count("hangup") >= 3)
            # Not confirmed yet: the leg is remembered and its channel still counted.
            assert call.state is not CallState.ENDED
            assert stack.kit.legs.of_leg(leg) is not None
            assert await live(stack.app).count_for_number(NUMBER) == 1
            await call.wait_for(CallState.ENDED, WAIT_S)
            statuses = [r.status for r in stack.sim.requests if r.path.endswith("/actions/hangup")]
            done = statuses.index(200)
            assert done >= 3 and set(statuses[:done]) == {503}
            await stack.runtime.settle()
            assert stack.kit.legs.of_leg(leg) is None
            assert await live(stack.app).count_for_number(NUMBER) == 0
        finally:
            await sdk.close()


async def test_an_answer_refused_for_longer_than_the_budget_ends_the_leg(tmp_path: Path) -> None:
    async with telnyx_stack(tmp_path) as stack:
        await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
        sdk = answering_application(stack)
        stack.sim.faults.fail("answer", for_s=6.0)
        try:
            call = await stack.sim.place_inbound_call(caller(), NUMBER)
            leg = (await stack.leg_of(call)).leg_id
            hangup = await stack.app_server.wait_for("call.hangup", leg, WAIT_S)
            assert hangup["payload"]["callbridge_reason"] == "provider_failed:answer"
            assert stack.sim.faults.count("answer") >= 2  # retried, then given up
            await call.wait_for(CallState.ENDED, WAIT_S)  # and hung up at Telnyx
        finally:
            await sdk.close()


async def test_reconciliation_ends_a_leg_the_provider_ended_without_a_webhook(
    tmp_path: Path,
) -> None:
    quick = {"reconcile_interval_s": 0.2, "reconcile_silence_s": 0.5}
    async with telnyx_stack(tmp_path, **quick) as stack:
        await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
        sdk = answering_application(stack)
        try:
            call = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
            await call.wait_for(CallState.STREAMING, WAIT_S)
            leg = (await stack.leg_of(call)).leg_id
            # Telnyx ends the call and its call.hangup never comes; the status query that
            # finds out is itself answered 503 once.
            stack.sim.faults.fail("status", times=1)
            assert call.mark_ended("normal_clearing", "caller", "200")
            hangup = await stack.app_server.wait_for("call.hangup", leg, WAIT_S)
            assert hangup["payload"]["callbridge_reason"] == "provider_call_gone"
            assert hangup["payload"]["hangup_cause"] == "unspecified"
            assert stack.sim.faults.count("status") == 1
            statuses = [r for r in stack.sim.requests if r.method == "GET" and "/calls/" in r.path]
            assert statuses[-1].status == 200
            await stack.runtime.settle()
            assert stack.kit.legs.of_leg(leg) is None
            assert await live(stack.app).count_for_number(NUMBER) == 0
        finally:
            await sdk.close()


async def test_an_incoming_leg_nobody_answers_is_ended_after_the_setup_timeout(
    tmp_path: Path,
) -> None:
    async with telnyx_stack(tmp_path, setup_timeout_s=0.5) as stack:
        await stack.bridge(NUMBER, webhook_url=stack.app_server.url)  # the app never answers
        call = await stack.sim.place_inbound_call(caller(), NUMBER)
        leg = (await stack.leg_of(call)).leg_id
        hangup = await stack.app_server.wait_for("call.hangup", leg, WAIT_S)
        assert hangup["payload"]["hangup_cause"] == "timeout"
        assert hangup["payload"]["callbridge_reason"] == "setup_timeout"
        await call.wait_for(CallState.ENDED, WAIT_S)  # hung up at Telnyx too
        await stack.runtime.settle()
        assert await live(stack.app).count_for_number(NUMBER) == 0


# --- Twilio ----------------------------------------------------------------------------------


async def twilio_env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator, **changes: Any
) -> TwilioEnv:
    """tests.twilio_env.TwilioEnv.start with these settings."""
    port = unused_port()
    watch(sim)
    settings = settings_for(tmp_path, port, "twilio-faults-secret-" + "s" * 32, **changes)
    server = await aiohttp_server(create_app(settings), port=port)
    client = await aiohttp_client(server)
    org = await make_org(client, "acme", "Acme")
    config = await org.create_config(
        "twilio", name="Twilio (simulated)", account_sid=sim.account_sid,
        auth_token=sim.auth_token, api_base_url=sim.base_url,
    )  # fmt: skip
    return TwilioEnv(client, org, config, sim)


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def twilio(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await twilio_env(aiohttp_server, aiohttp_client, tmp_path, sim)


@pytest.fixture
async def hooks(aiohttp_server: Any) -> AppHooks:
    return await AppHooks.start(aiohttp_server)


async def test_twilio_hangup_is_retried_through_503s_and_a_timeout(
    twilio: TwilioEnv, hooks: AppHooks
) -> None:
    await twilio.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    call = await twilio.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    leg = (await hooks.next("call.initiated")).leg
    await twilio.act(leg, "answer")
    await call.wait_for(CallState.STREAMING, WAIT_S)
    twilio.sim.faults.hang("hangup", times=1)
    twilio.sim.faults.fail("hangup", for_s=4.0)
    await twilio.act(leg, "hangup")
    await hooks.next("call.hangup", leg)
    await until(twilio.sim, lambda: twilio.sim.faults.count("hangup") >= 3)
    assert twilio.kit.legs.by_id(leg) is not None  # remembered until Twilio confirms
    assert await twilio.live_count(NUMBER) == 1
    await call.wait_for(CallState.ENDED, WAIT_S)
    assert call.end_reason == "completed"
    ends = [r for r in twilio.sim.requests if r.path.endswith(f"/Calls/{call.sid}.json")]
    completed = [r for r in ends if r.status == 200]
    assert completed[0].form == {"Status": ["completed"]}
    assert {r.status for r in ends[: ends.index(completed[0])]} == {None, 503}
    await twilio.runtime.settle()
    assert twilio.kit.legs.by_id(leg) is None
    assert await twilio.live_count(NUMBER) == 0


async def test_twilio_dial_waits_out_a_429_but_never_repeats_a_503(
    twilio: TwilioEnv, hooks: AppHooks
) -> None:
    bridge = await twilio.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    twilio.sim.set_callee(CALLEE, Callee("answer", ring_ms=100, source=lambda: ToneSource(700)))
    body = {"connection_id": bridge["slug"], "from": NUMBER, "to": CALLEE, "timeout_secs": 20}

    def creates() -> list[Any]:
        return [r for r in twilio.sim.requests if r.path.endswith("/Calls.json")]

    twilio.sim.faults.fail("dial", status=429, times=1, retry_after_s=0.2)
    status, reply = await twilio.api("POST", "/v2/calls", body)
    assert status == 200, reply
    placed = reply["data"]["call_control_id"]
    await hooks.next("call.answered", placed)
    assert [r.status for r in creates()] == [429, 201]
    assert len(twilio.sim.calls) == 1

    twilio.sim.faults.fail("dial", status=503, times=1)
    status, reply = await twilio.api("POST", "/v2/calls", body)
    assert status == 200, reply
    refused = reply["data"]["call_control_id"]
    hangup = await hooks.next("call.hangup", refused)
    assert hangup.payload["callbridge_reason"] == "provider_failed:dial"
    await twilio.runtime.settle()
    assert [r.status for r in creates()] == [429, 201, 503]  # not sent again
    assert len(twilio.sim.calls) == 1


async def test_reconciliation_ends_a_twilio_leg_whose_call_completed_silently(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator, hooks: AppHooks
) -> None:
    quick = {"reconcile_interval_s": 0.2, "reconcile_silence_s": 0.5}
    env = await twilio_env(aiohttp_server, aiohttp_client, tmp_path, sim, **quick)
    await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    call = await sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    leg = (await hooks.next("call.initiated")).leg
    await env.act(leg, "answer")
    await call.wait_for(CallState.STREAMING, WAIT_S)
    # Twilio completes the call and its status callback never comes.
    assert call.mark_ended("completed")
    hangup = await hooks.next("call.hangup", leg)
    assert hangup.payload["callbridge_reason"] == "provider_call_gone"
    reads = [r for r in sim.requests if r.method == "GET" and f"/Calls/{call.sid}" in r.path]
    assert reads and reads[-1].status == 200
    await env.runtime.settle()
    assert env.kit.legs.by_id(leg) is None
    assert await env.live_count(NUMBER) == 0
