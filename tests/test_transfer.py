"""``transfer`` (issue 14 point 8): the new party is dialled through the leg's bridge and bridged
with the leg on answer, with Call Control's events; an unsuccessful transfer leaves the leg up.
Driven through the app (and the official SDK), the provider replaced by the recording gateway."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import Settings
from engine.machine.model import HangupCause
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, b64, hear_each_other

TO = "+15550004444"


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def transferred(h: Harness, a: str, **body: Any) -> str:
    """Transfer ``a`` to ``TO``: the new leg's id (the gateway's last dial)."""
    await h.ok(a, "transfer", to=TO, **body)
    await h.runtime.settle()
    dial = h.gateway.dials[-1]
    assert dial.to == TO
    return dial.call_control_id


async def test_transfer_dials_through_the_legs_bridge_and_bridges_on_answer(h: Harness) -> None:
    a = await h.up()
    leg_a = h.runtime.machine.leg(a)
    b = await transferred(h, a, target_leg_client_state=b64("agent"), client_state=b64("ivr"))
    dial = h.gateway.dials[-1]
    assert (dial.from_, dial.connection_id) == (leg_a.to, leg_a.connection_id)
    initiated = await h.receiver.next("call.initiated", b)
    assert initiated.payload["client_state"] == b64("agent")
    assert initiated.payload["direction"] == "outgoing"
    assert h.state(a) == "answered", "the leg stays as it was while the new party rings"
    await h.answered(b)
    await h.media(b, PCMA_8K)
    await h.receiver.next("call.answered", b)
    await h.receiver.next("call.bridged", b)
    bridged = await h.receiver.next("call.bridged", a)
    assert bridged.payload["client_state"] == b64("ivr")  # the command's, the leg's from now on
    assert h.room_of(a) is not None and h.room_of(a) == h.room_of(b)
    await hear_each_other(h, a, b)


async def test_an_unsuccessful_transfer_leaves_the_leg_up(h: Harness) -> None:
    a = await h.up()
    b = await transferred(h, a, timeout_secs=5, **{"from": "+15550009999"})
    assert h.gateway.dials[-1].from_ == "+15550009999"
    await h.hung_up(b, HangupCause.USER_BUSY)
    hangup = await h.receiver.next("call.hangup", b)
    assert hangup.payload["hangup_cause"] == "user_busy"
    assert h.state(a) == "answered" and "call.hangup" not in await h.barrier(a)
    c = await transferred(h, a)  # another destination: the leg may be transferred again
    await h.answered(c)
    await h.receiver.next("call.bridged", a)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/to"),
        ({"to": "nobody"}, "/to"),
        ({"to": TO, "early_media": True}, "/early_media"),
        ({"to": TO, "audio_url": "https://example.com/a.wav"}, "/audio_url"),
        ({"to": TO, "answering_machine_detection": "detect"}, "/answering_machine_detection"),
        ({"to": TO, "timeout_secs": 2}, "/timeout_secs"),
        ({"to": TO, "record": "record-from-answer"}, "/record"),
    ],
)
async def test_what_transfer_cannot_do_is_refused_naming_the_field(
    h: Harness, body: dict[str, Any], pointer: str
) -> None:
    a = await h.up()
    reply = await h.act(a, "transfer", **body)
    assert reply.status == 422, reply
    assert reply.body["errors"][0]["source"] == {"pointer": pointer}
    await h.runtime.settle()
    assert h.gateway.dials == []


async def test_a_leg_not_yet_answered_or_of_another_organization_is_not_transferred(
    h: Harness,
) -> None:
    ringing = await h.incoming()
    reply = await h.act(ringing, "transfer", to=TO)
    assert reply.status == 422 and reply.body["errors"][0]["code"] == "90018"
    a = await h.up()
    reply = await h.act(a, "transfer", org=h.other_org, to=TO)
    assert reply.status == 404
    await h.runtime.settle()
    assert h.gateway.dials == []


async def test_the_sdk_transfers(h: Harness) -> None:
    a = await h.up()
    async with h.sdk() as sdk:
        reply = await sdk.calls.actions.transfer(a, to=TO, timeout_secs=20, early_media=False)
    assert reply.data is not None and reply.data.result == "ok"
    await h.runtime.settle()
    assert h.gateway.dials[-1].to == TO and h.gateway.dials[-1].timeout_secs == 20
