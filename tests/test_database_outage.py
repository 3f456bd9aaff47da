"""The database (PostgreSQL) cut away from a running engine (issue 16, point 5: "a Redis or
PostgreSQL outage degrades clearly: new calls refused, live calls keep their media, state
catches up").

The engine's store reaches PostgreSQL through a TCP relay (tests/redis_server.py ``TcpRelay``)
that closes every connection and refuses new ones while cut.
"""

from __future__ import annotations

from pathlib import Path

from adapters.simulators import ToneSource
from tests.postgres import fresh_database
from tests.redis_server import TcpRelay
from tests.telnyx_harness import caller, telnyx_stack

NUMBER = "+14155550100"


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
