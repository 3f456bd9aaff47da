"""A provider webhook the engine fails on is answered 5xx, leaves nothing behind, and comes back
through the failover URL that connect set to callbridge (issue 11, point 2), with the simulators
as Twilio and Telnyx.

Twilio: "If Twilio is unable to retrieve or execute TwiML from your web server, a request is
immediately made to the number's Fallback URL", with ``ErrorCode`` and ``ErrorUrl``
(twilio.com/docs/usage/security/availability-reliability). Telnyx: a webhook the primary URL
does not take with a 2xx "will be delivered to the failover URL, if one has been specified"
(developers.telnyx.com, receiving webhooks).

The fault is planted once, in a handler of the machine, after the handler has done its work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from adapters.simulators import CallState, ToneSource, TwilioSimulator
from adapters.twilio.gateway import VOICE_PATH
from engine.machine import legs as machine_legs
from engine.machine.machine import CallMachine
from tests.telnyx_harness import Stack, caller, telnyx_stack
from tests.twilio_env import TwilioEnv

NUMBER = "+15550001111"
CALLER = "+15557654321"


class PlantedFault(Exception):
    pass


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[str]:
    """Make ``owner.name`` raise once, after doing its work; returns the log of its calls."""
    real: Callable[..., Any] = getattr(owner, name)
    calls: list[str] = []

    def planted(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls.append(name)
        if len(calls) == 1:
            raise PlantedFault(f"planted fault in {name}")
        return result

    monkeypatch.setattr(owner, name, planted)
    return calls


# ---- Twilio -----------------------------------------------------------------------------------
@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)


def voice_requests(env: TwilioEnv, call: Any) -> list[tuple[str, int | None, dict[str, str]]]:
    return [
        (r.kind, r.status, {k: v[0] for k, v in parse_qs(r.body.decode()).items()})
        for r in call.events
        if r.kind in ("voice", "voice_fallback")
    ]


@pytest.mark.expect_protocol_errors("11200")  # Twilio logs the 500 it got, as it should
@pytest.mark.parametrize("handler", ["_initiated", "after_answer"])
async def test_a_twilio_voice_webhook_the_engine_fails_on_is_500_and_the_fallback_takes_the_call(
    env: TwilioEnv, monkeypatch: pytest.MonkeyPatch, handler: str
) -> None:
    """The fault in the new leg's first event (LegInitiated) or in its answer (LegAnswered)."""
    await env.bridge("Support", (NUMBER,))  # default routing: answered into its conference
    owner: Any = CallMachine if handler == "_initiated" else machine_legs
    calls = fail_once(monkeypatch, owner, handler)
    call = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    await call.wait_for(CallState.STREAMING)
    (first, first_status, _), (again, again_status, form) = voice_requests(env, call)
    assert (first, first_status) == ("voice", 500)
    assert (again, again_status) == ("voice_fallback", 200)
    assert form["ErrorCode"] == "11200" and form["ErrorUrl"] == env.public_url + VOICE_PATH
    assert len(calls) == 2, "the fallback went through the same handler, fault gone"
    # One leg, one channel: the failed attempt left nothing behind.
    assert env.leg_count() == 1 and await env.live_count(NUMBER) == 1
    assert env.state(env.leg_of(call)) == "bridged"


# ---- Telnyx -----------------------------------------------------------------------------------
@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


async def test_a_telnyx_webhook_the_engine_fails_on_is_500_and_its_failover_is_handled(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.bridge(NUMBER)  # default routing: answered into its conference
    calls = fail_once(monkeypatch, CallMachine, "_initiated")
    call = await stack.sim.place_inbound_call(caller(), NUMBER)
    await call.wait_for(CallState.ANSWERED)
    initiated = [(e.url, e.status) for e in call.events if e.kind == "call.initiated"]
    webhook = stack.base_url + "/webhooks/telnyx"
    assert initiated == [(webhook, 500), (webhook, 200)]
    first, failover = (e.body for e in call.events if e.kind == "call.initiated")
    assert b'"attempt":1' in first and b'"attempt":1' in failover, "one delivery, not a retry"
    assert len(calls) == 2
    leg = await stack.leg_of(call)
    assert len(stack.kit.legs) == 1 and stack.leg_state(leg.leg_id) in ("answering", "answered")


async def test_a_telnyx_hangup_the_engine_fails_on_is_handled_when_it_comes_back(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.bridge(NUMBER)
    call = await stack.sim.place_inbound_call(caller(), NUMBER)
    await call.wait_for(CallState.STREAMING)
    leg = await stack.leg_of(call)
    calls = fail_once(monkeypatch, machine_legs, "end_leg")
    await call.hang_up()
    await call.wait_until(lambda c: sum(e.kind == "call.hangup" for e in c.events) == 2)
    hangups = [e.status for e in call.events if e.kind == "call.hangup"]
    assert hangups == [500, 200]
    assert len(calls) == 2
    assert stack.leg_state(leg.leg_id) == "hangup"
    assert stack.kit.legs.of_leg(leg.leg_id) is None
