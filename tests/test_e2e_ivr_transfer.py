"""gather_using_audio and transfer on a caller of the Twilio simulator, driven with the official
telnyx SDK (issue 14's required tests): the caller's key presses, sent as Media Streams ``dtmf``
messages, are collected by the gather while its prompt plays; ``transfer`` dials the new party
through the simulator and, on its answer, the caller and the new party hear each other (their
tones judged by level, 20 dB above their own and the noise floor)."""

from __future__ import annotations

import telnyx

from adapters.simulators import Callee, CallState
from adapters.simulators.audio import ToneSource
from tests import test_e2e_app_streams as app_streams
from tests.test_e2e_app_streams import CALLER_HZ, Answered
from tests.twilio_env import TwilioEnv, assert_hears, record_after

# The answered Twilio caller speaking CALLER_HZ, and the SDK client, of the streaming tests.
caller, sdk = app_streams.caller, app_streams.sdk

AGENT, AGENT_HZ = "+15557000999", 700.0


async def test_gather_using_audio_collects_the_callers_key_presses(
    caller: Answered, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    await sdk.calls.actions.gather_using_audio(
        leg, media_name="tone-440", maximum_digits=3, terminating_digit="#"
    )
    started = await hooks.next("call.playback.started", leg)
    assert started.payload["media_name"] == "tone-440"
    for digit in "42#":
        await call.send_dtmf(digit)
    ended = await hooks.next("call.gather.ended", leg)
    assert (ended.payload["status"], ended.payload["digits"]) == ("valid", "42")
    stopped = await hooks.next("call.playback.ended", leg)
    assert stopped.payload["status"] == "cancelled", "the first key press stopped the prompt"


async def test_transfer_connects_the_caller_to_the_new_party(
    twilio_env: TwilioEnv, caller: Answered, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    twilio_env.sim.set_callee(AGENT, Callee(source=lambda: ToneSource(AGENT_HZ)))
    await sdk.calls.actions.transfer(leg, to=AGENT)
    initiated = await hooks.next("call.initiated")
    agent = initiated.leg
    assert agent != leg and initiated.payload["to"] == AGENT
    await hooks.next("call.answered", agent)
    await hooks.next("call.bridged", leg)
    await hooks.next("call.bridged", agent)
    agent_call = next(c for c in twilio_env.sim.calls.values() if c.to == AGENT)
    await agent_call.wait_for(CallState.STREAMING)
    assert_hears(await record_after(call, 1.0), (AGENT_HZ,), CALLER_HZ)
    assert_hears(await record_after(agent_call, 1.0), (CALLER_HZ,), AGENT_HZ)
