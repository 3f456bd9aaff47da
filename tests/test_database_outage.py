"""The database (PostgreSQL) cut away from a running engine (issue 16, point 5: "a Redis or
PostgreSQL outage degrades clearly: new calls refused, live calls keep their media, state
catches up").

The engine's store reaches PostgreSQL through a TCP relay (tests/redis_server.py ``TcpRelay``)
that closes every connection and refuses new ones while cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, ToneSource, TwilioSimulator
from adapters.twilio.twiml import Reject, parse_twiml
from engine.api.keys import METRICS
from tests.postgres import fresh_database
from tests.redis_server import TcpRelay
from tests.telnyx_harness import caller, telnyx_stack
from tests.twilio_env import TwilioEnv

NUMBER, OTHER = "+14155550100", "+14155550101"
CALLER = "+15557770001"


async def test_a_database_outage_keeps_live_media_answers_503_and_catches_up(
    tmp_path: Path,
) -> None:
    async with fresh_database() as url:
        relay = await TcpRelay(url).start()
        try:
            async with telnyx_stack(tmp_path, database_url=relay.url) as stack:
                await stack.bridge(NUMBER)  # default routing: a caller is answered, streams
                live = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
                await stack.taken(live, "streaming.started")
                leg = (await stack.leg_of(live)).leg_id
                # The leg's media start is stored: the call is established before the cut.
                await live.wait_until(lambda _c: stack.runtime.machine.leg(leg).media_started)
                room = stack.runtime.machine.leg(leg).room_id
                bearer = {"Authorization": f"Bearer {stack.org.token}"}
                path = f"/v2/calls/{leg}/actions/playback_start"

                relay.cut()
                heard = live.media_frames_received
                await live.wait_until(lambda c: c.media_frames_received >= heard + 50)
                refused = await stack.org.call(
                    "POST", path, {"media_name": "tone-440"}, headers=bearer
                )
                assert (refused.status, refused.body["errors"][0]["title"]) == (
                    503,
                    "Database unavailable",
                ), refused.text
                assert "the database cannot be reached" in refused.body["errors"][0]["detail"]
                stored = await stack.client.get(f"/v2/calls/{leg}", headers=bearer)
                assert (stored.status, stored.headers["Retry-After"]) == (503, "1")
                # A new call to the number is refused busy, through the number's last
                # configuration (engine/admission/routes.py), not left ringing.
                refused_call = await stack.sim.place_inbound_call(caller(), NUMBER)
                await refused_call.wait_for(CallState.ENDED)
                assert refused_call.hangup == ("user_busy", "callee", "486")
                refusals = stack.app[METRICS].registry.get_sample_value(
                    "callbridge_admission_refusals_total", {"reason": "database_unavailable"}
                )
                assert refusals == 1
                # Meanwhile the live call's media went on (a second of frames from callbridge),
                # in its room: nothing about the call changed.
                await live.wait_until(lambda c: c.media_frames_received >= heard + 100)
                assert stack.runtime.machine.leg(leg).room_id == room
                assert stack.runtime.plane.is_attached(leg)

                relay.mend()  # the next request connects again: nothing stale is reused
                again = await stack.org.call(
                    "POST", path, {"media_name": "tone-440"}, headers=bearer
                )
                assert again.status == 200, again.text
                status = await stack.client.get(f"/v2/calls/{leg}", headers=bearer)
                assert status.status == 200
                await live.hang_up()
                await stack.taken(live, "call.hangup")  # stored and carried out
                assert stack.leg_state(leg) == "hangup"
        finally:
            await relay.close()


@pytest.mark.expect_protocol_errors("11200")  # Twilio's "HTTP retrieval failure" for the 503
async def test_a_twilio_call_during_a_database_outage_is_rejected_busy(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, twilio_sim: TwilioSimulator
) -> None:
    async with fresh_database() as url:
        relay = await TcpRelay(url).start()
        try:
            env = await TwilioEnv.start(
                aiohttp_server, aiohttp_client, tmp_path, twilio_sim, database_url=relay.url
            )
            await env.bridge("Draft", (NUMBER, OTHER), status="DRAFT")
            first = await twilio_sim.place_inbound_call(CALLER, NUMBER)  # routed, refused: DRAFT
            await first.wait_for(CallState.ENDED)
            relay.cut()
            call = await twilio_sim.place_inbound_call(CALLER, NUMBER)
            await call.wait_for(CallState.ENDED)
            # Verified with the number's last configuration and rejected busy: the caller hears
            # busy rather than Twilio's "application error".
            assert call.end_reason == "busy"
            voice = [parse_twiml(r.response) for r in call.events if r.kind == "voice" and r.ok]
            assert voice == [(Reject("busy"),)]
            # A number no call was routed to since the start has no configuration to verify
            # with: 503, as any request that needs the database.
            unknown = await twilio_sim.place_inbound_call(CALLER, OTHER)
            await unknown.wait_for(CallState.ENDED)
            assert [r.status for r in unknown.events if r.kind == "voice"][:1] == [503]
            refusals = env.app[METRICS].registry.get_sample_value(
                "callbridge_admission_refusals_total", {"reason": "database_unavailable"}
            )
            assert refusals == 1
        finally:
            await relay.close()
