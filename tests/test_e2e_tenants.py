"""End to end: two organizations on one engine never share a room (issue 11, point 1).

Organization A's bridge has no webhook URL: its callers meet in its default conference.
Organization B's application answers its two callers and bridges them with the telnyx SDK. Both
bridges are the first of their organization, the case where the old room names collided
(``bridge-1`` for A's conference and for B's first bridge). In both orders, every caller hears
exactly its own room, judged per 20 ms frame by the load test's checker (a voice from the other
organization is a foreign tone), and hangups on one side never end a leg on the other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from telnyx import AsyncTelnyx

from adapters.simulators import CallState, TelnyxCall
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import hearing, tap, voices
from tests.platform_client import BRIDGES, Org, make_org
from tests.telnyx_harness import Stack, caller, pairing_application, telnyx_stack

# One number per caller: a number carries one live leg (channels_count 1).
A_NUMBERS, B_NUMBERS = ("+15550404001", "+15550404002"), ("+15550404003", "+15550404004")
A1, A2, B1, B2 = voices(4, room_size=2)


async def second_org(stack: Stack) -> tuple[Org, str]:
    """Organization B on the same engine and Telnyx account, its number on a bridge whose
    webhook URL is the test's application; returns B and its bridge's slug."""
    org = await make_org(stack.client, "globex", "Globex")
    connection = stack.sim.add_connection(webhook_url=None)
    config = await org.create_config(
        "telnyx", account_sid=connection, auth_token=stack.sim.api_key,
        public_key=stack.sim.public_key, api_base_url=stack.sim.base_url,
    )  # fmt: skip
    bridge = await org.create_bridge("Globex line", webhook_url=stack.app_server.url)
    for number in B_NUMBERS:
        stack.sim.add_number(number)
        reply = await org.call(
            "POST",
            f"{BRIDGES}{bridge['slug']}/connect-provider/",
            {"provider_config_id": config["id"], "phone_number": number},
        )
        assert reply.status == 200, reply.text
    return org, bridge["slug"]


async def conference_callers(stack: Stack) -> list[TelnyxCall]:
    calls = []
    for voice, number in zip((A1, A2), A_NUMBERS, strict=True):
        call = await stack.sim.place_inbound_call(caller(), number, source=VoiceSource(voice))
        tap(call)
        await call.wait_for(CallState.STREAMING)
        calls.append(call)
    return calls


async def bridged_callers(stack: Stack, org: Org) -> tuple[list[TelnyxCall], list[str]]:
    sdk = AsyncTelnyx(api_key=org.token, base_url=stack.base_url + "/v2", max_retries=0)
    answered: list[str] = []
    both = asyncio.Event()
    stack.app_server.on_event = pairing_application(sdk, answered, both)
    calls = []
    try:
        for voice, number in zip((B1, B2), B_NUMBERS, strict=True):
            call = await stack.sim.place_inbound_call(caller(), number, source=VoiceSource(voice))
            tap(call)
            calls.append(call)
        async with asyncio.timeout(8):
            await both.wait()
        for leg in answered:
            await stack.app_server.wait_for("call.bridged", leg)
    finally:
        await sdk.close()
    return calls, answered


async def hangup_handled(call: TelnyxCall) -> None:
    """callbridge has answered the call.hangup webhook of ``call``: its machine has the news."""
    await call.wait_until(lambda c: any(e.kind == "call.hangup" and e.status for e in c.events))


@pytest.mark.parametrize("conference_first", [True, False])
async def test_a_conference_and_another_organizations_bridge_never_meet(
    tmp_path: Path, conference_first: bool
) -> None:
    async with telnyx_stack(tmp_path) as stack:
        await stack.bridge(*A_NUMBERS)  # organization A, no webhook URL: a conference
        org_b, _ = await second_org(stack)
        if conference_first:
            a_calls = await conference_callers(stack)
            b_calls, b_legs = await bridged_callers(stack, org_b)
        else:
            b_calls, b_legs = await bridged_callers(stack, org_b)
            a_calls = await conference_callers(stack)
        machine = stack.runtime.machine
        a_legs = [(await stack.leg_of(call)).leg_id for call in a_calls]
        a_room, b_room = machine.leg(a_legs[0]).room_id, machine.leg(b_legs[0]).room_id
        assert a_room is not None and b_room is not None and a_room != b_room
        assert {leg.org_id for leg in machine.legs_in_room(a_room)} == {stack.org.org_id}
        assert {leg.org_id for leg in machine.legs_in_room(b_room)} == {org_b.org_id}
        for call, hears, own in (
            (a_calls[0], A2, A1), (a_calls[1], A1, A2), (b_calls[0], B2, B1), (b_calls[1], B1, B2),
        ):  # fmt: skip
            await hearing(call, [hears], own)

        # A hangup in A's conference ends that leg only.
        await a_calls[0].hang_up()
        await hangup_handled(a_calls[0])
        assert not machine.leg(a_legs[0]).is_alive
        assert all(machine.leg(leg).state.value == "bridged" for leg in (a_legs[1], *b_legs))
        assert all(call.state is not CallState.ENDED for call in b_calls)
        # B's bridge ends with its first leg (no park_after_unbridge); A's remaining caller stays.
        await b_calls[0].hang_up()
        await hangup_handled(b_calls[0])
        await b_calls[1].wait_for(CallState.ENDED)
        await stack.runtime.settle()
        assert a_calls[1].state is not CallState.ENDED
        assert machine.leg(a_legs[1]).room_id == a_room
        assert not any(
            leg.state.value == "bridged" and leg.room_id is None for leg in machine.snapshot().legs
        ), "no leg left bridged without a room"
