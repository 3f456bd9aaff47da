"""kill -9 and restart during a live call, with real processes (issue 12, point 2).

``callbridge serve`` runs as its own process on a SQLite file; the Twilio and Telnyx simulators
and the application (official telnyx SDK behind a webhook receiver) run here. A Twilio caller
and a Telnyx caller are bridged and hear each other; the application's receiver goes down
(503) and the Twilio caller presses keys, so webhooks wait in the outbox; the process is killed
with SIGKILL and a new one started on the same database. The receiver comes back and must get
every webhook produced before the kill, each id once, in order; both callers must hear each
other again (judged per 20 ms frame from the moment their new streams are up) and the
application must get no ``call.hangup``. When the engine stays down longer than the providers
hold the calls, the legs end, and the restarted engine tells the application with
``call.hangup`` for each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import telnyx

from adapters.simulators import CallState
from tests.e2e_checks import hearing, hearing_since
from tests.engine_process import (
    TELNYX_NUMBER,
    TELNYX_VOICE,
    TWILIO_NUMBER,
    TWILIO_VOICE,
    bridged_pair,
    connect,
    new_stream_start,
    pending_deliveries,
    until,
    world,
)

pytestmark = pytest.mark.slow_family  # processes killed and restarted: once per CI run

SECOND_TWILIO_NUMBER = "+15550101011"


async def test_kill_9_and_a_restart_resume_a_bridged_call_and_deliver_every_webhook(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        await asyncio.gather(
            hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE),
            hearing(telnyx_call, [TWILIO_VOICE], TELNYX_VOICE),
        )
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        w.receiver.down = True
        for digit in "123":
            await twilio_call.send_dtmf(digit)

        async def three_waiting() -> bool:
            return await pending_deliveries(w.engine, w.org.token, "call.dtmf.received") >= 3

        await until(three_waiting, "three key presses stored for delivery")
        await w.engine.kill()
        await w.engine.start()
        w.receiver.down = False

        # Every webhook from before the kill arrives, each id once, in order.
        await w.receiver.wait_until(
            lambda: len(w.receiver.of("call.dtmf.received", twilio_leg)) >= 3, "key presses"
        )
        digits = [e["payload"]["digit"] for e in w.receiver.of("call.dtmf.received", twilio_leg)]
        assert digits == ["1", "2", "3"]
        ids = [e["id"] for e in w.receiver.events]
        assert len(ids) == len(set(ids)), "a webhook arrived twice"
        # Both callers hear each other again on new streams, judged frame by frame from then.
        starts = await asyncio.gather(
            new_stream_start(twilio_call, 2), new_stream_start(telnyx_call, 2)
        )
        await asyncio.gather(
            hearing_since(twilio_call, starts[0], [TELNYX_VOICE], TWILIO_VOICE),
            hearing_since(telnyx_call, starts[1], [TWILIO_VOICE], TELNYX_VOICE),
        )
        assert twilio_call.state is not CallState.ENDED and telnyx_call.state is not CallState.ENDED
        for leg in (twilio_leg, telnyx_leg):
            assert not w.receiver.of("call.hangup", leg), w.engine.logs()


async def test_engine_down_longer_than_the_providers_hold_the_calls_ends_them_with_call_hangup(
    tmp_path: Path,
) -> None:
    # Twilio holds the caller 2 s after the stream closes (the <Pause> after </Connect>); the
    # Telnyx caller gives up and hangs up while nobody answers.
    async with world(tmp_path, CALLBRIDGE_STREAM_HOLD_S="2") as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        await w.engine.kill()
        await telnyx_call.hang_up()
        await twilio_call.wait_for(CallState.ENDED, timeout_s=15)
        await w.engine.start()
        await w.receiver.wait_until(
            lambda: (
                bool(w.receiver.of("call.hangup", twilio_leg))
                and bool(w.receiver.of("call.hangup", telnyx_leg))
            ),
            "call.hangup for both legs",
            # A webhook the killed process was sending (call.bridged, say) holds its leg's
            # later ones until its claim lapses: 20 s after it was claimed (the POST's 10 s
            # timeout and 10 s more, engine/webhooks/outbox.py), on a machine that may be busy.
            within=35.0,
        )
        # Each leg ends once, whichever news comes first: asking its provider (Twilio's call
        # ended in the pause; Telnyx's caller hung up), Telnyx's own call.hangup webhook retried
        # until the engine is back, or the peer's hangup ending the bridge.
        for leg in (twilio_leg, telnyx_leg):
            assert len(w.receiver.of("call.hangup", leg)) == 1, w.receiver.of("call.hangup", leg)


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status


async def test_sigterm_stops_admitting_at_once_and_hands_the_call_to_the_next_process(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, CALLBRIDGE_SHUTDOWN_GRACE_S="3") as w:
        w.twilio.add_number(SECOND_TWILIO_NUMBER)
        await connect(w, "twilio", SECOND_TWILIO_NUMBER)
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        base = w.engine.base_url
        assert await get_status(f"{base}/readyz") == 200
        await w.engine.terminate()

        async def not_ready() -> bool:
            return await get_status(f"{base}/readyz") == 503

        await until(not_ready, "/readyz 503 once SIGTERM arrived", within=2.0)
        assert await get_status(f"{base}/healthz") == 200
        # A new call on a number with a free channel is turned away busy while it stops.
        late = await w.twilio.place_inbound_call("+15557770009", SECOND_TWILIO_NUMBER)
        await late.wait_for(CallState.ENDED)
        assert late.end_reason == "busy"
        assert await w.engine.exited() == 0
        assert "shutting down" in w.engine.logs()

        await w.engine.start()
        starts = await asyncio.gather(
            new_stream_start(twilio_call, 2), new_stream_start(telnyx_call, 2)
        )
        await asyncio.gather(
            hearing_since(twilio_call, starts[0], [TELNYX_VOICE], TWILIO_VOICE),
            hearing_since(telnyx_call, starts[1], [TWILIO_VOICE], TELNYX_VOICE),
        )
        for leg in (twilio_leg, telnyx_leg):
            assert not w.receiver.of("call.hangup", leg)


async def test_sigterm_with_drain_ends_the_calls_with_their_webhooks_and_recordings(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, "--drain", "--drain-timeout", "1") as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        sdk = telnyx.AsyncTelnyx(api_key=w.org.token, base_url=w.engine.base_url + "/v2")
        try:
            await sdk.calls.actions.start_recording(twilio_leg, format="mp3", channels="single")
        finally:
            await sdk.close()
        await w.engine.terminate()
        assert await w.engine.exited() == 0
        for leg in (twilio_leg, telnyx_leg):
            assert len(w.receiver.of("call.hangup", leg)) == 1, w.engine.logs()
        (saved,) = w.receiver.of("call.recording.saved", twilio_leg)
        assert saved["payload"]["recording_urls"]["mp3"]
        await twilio_call.wait_for(CallState.ENDED)
        await telnyx_call.wait_for(CallState.ENDED)
