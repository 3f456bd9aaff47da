"""DTMF gathers (issue 14, point 8): ``gather``, ``gather_using_audio`` and ``gather_stop``,
driven by the official SDK through the app; digits are the leg's DTMF events, timers fired by
hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telnyx
from telnyx.types import CallGatherEnded
from telnyx.types.calls import (
    action_gather_params,
    action_gather_using_audio_params,
    action_stop_gather_params,
)

from engine.config import Settings
from engine.machine import events as ev
from engine.machine.model import DtmfSource, TimerKind
from tests.call_fakes import Harness, Hook, write_wav


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


@pytest.fixture
async def sdk(h: Harness) -> AsyncIterator[telnyx.AsyncTelnyx]:
    async with h.sdk() as client:
        yield client


async def press(h: Harness, leg: str, digits: str) -> None:
    for digit in digits:
        await h.runtime.event(ev.DtmfReceived(leg, digit, DtmfSource.OUT_OF_BAND))


async def ended(h: Harness, leg: str) -> tuple[str | None, str | None]:
    """The next call.gather.ended of ``leg``, read with the SDK's own event model."""
    hook = await h.receiver.next("call.gather.ended", leg)
    event = CallGatherEnded.model_validate(hook.body["data"])
    assert event.payload is not None and event.payload.call_control_id == leg
    return event.payload.status, event.payload.digits


async def test_three_digits_end_a_gather_of_at_most_three_as_valid(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    reply = await sdk.calls.actions.gather(a, maximum_digits=3, gather_id="menu-1")
    assert reply.data is not None and reply.data.result == "ok"
    await press(h, a, "123")
    hook = await h.receiver.next("call.gather.ended", a)
    assert (hook.payload["status"], hook.payload["digits"]) == ("valid", "123")
    assert hook.payload["gather_id"] == "menu-1"
    # Each press was reported on its own as well, before the gather ended.
    types = h.receiver.types(a)
    assert types[types.index("call.gather.ended") - 3 :].count("call.dtmf.received") == 3
    assert not [k for k in h.timers.pending if k.kind.value.startswith("gather")]


async def test_the_terminating_digit_ends_it_and_is_not_collected(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    await sdk.calls.actions.gather(a)
    await press(h, a, "45#")
    assert await ended(h, a) == ("valid", "45")
    await sdk.calls.actions.gather(a, minimum_digits=3, terminating_digit="*")
    await press(h, a, "4#*")  # '#' is an ordinary digit once '*' terminates
    assert await ended(h, a) == ("invalid", "4#")
    await sdk.calls.actions.gather(a, terminating_digit="", maximum_digits=2)
    await press(h, a, "#1")
    assert await ended(h, a) == ("valid", "#1")


async def test_the_digit_waits_and_the_overall_timeout_end_it(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    # Nothing pressed: the first-digit wait (Telnyx's default 5000 ms) ends it as timeout.
    await sdk.calls.actions.gather(a)
    assert h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT) == 5.0
    assert h.timers.delay(a, TimerKind.GATHER_TIMEOUT) == 60.0
    h.timers.fire(a, TimerKind.GATHER_DIGIT_WAIT)
    assert await ended(h, a) == ("timeout", "")
    # A digit, then silence: the inter-digit wait ends it with what was collected.
    await sdk.calls.actions.gather(a, initial_timeout_millis=9000, inter_digit_timeout_millis=1500)
    assert h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT) == 9.0
    await press(h, a, "7")
    assert h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT) == 1.5
    h.timers.fire(a, TimerKind.GATHER_DIGIT_WAIT)
    assert await ended(h, a) == ("valid", "7")
    # The overall timeout runs from the start whatever is pressed; too few digits are invalid.
    await sdk.calls.actions.gather(a, timeout_millis=8000, minimum_digits=2)
    await press(h, a, "1")
    assert h.timers.delay(a, TimerKind.GATHER_TIMEOUT) == 8.0
    h.timers.fire(a, TimerKind.GATHER_TIMEOUT)
    assert await ended(h, a) == ("invalid", "1")


async def test_a_digit_outside_valid_digits_ends_it_as_invalid(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    await sdk.calls.actions.gather(a, valid_digits="123", maximum_digits=4)
    await press(h, a, "19")
    assert await ended(h, a) == ("invalid", "19")


async def test_gather_stop_cancels_and_a_hangup_ends_it(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    await sdk.calls.actions.gather(a)
    await press(h, a, "12")
    await sdk.calls.actions.stop_gather(a)
    assert await ended(h, a) == ("cancelled", "12")
    await sdk.calls.actions.gather(a)
    await press(h, a, "3")
    await h.hung_up(a)
    assert await ended(h, a) == ("call_hangup", "3")
    await h.receiver.next("call.hangup", a)
    types = h.receiver.types(a)
    assert types.index("call.gather.ended", types.index("call.dtmf.received")) < types.index(
        "call.hangup"
    )


async def test_one_gather_at_a_time_and_nothing_to_stop_is_refused(
    h: Harness, sdk: telnyx.AsyncTelnyx
) -> None:
    a = await h.up()
    with pytest.raises(telnyx.UnprocessableEntityError):
        await sdk.calls.actions.stop_gather(a)
    await sdk.calls.actions.gather(a)
    with pytest.raises(telnyx.UnprocessableEntityError) as twice:
        await sdk.calls.actions.gather(a)
    assert "already in progress" in twice.value.body["errors"][0]["detail"]  # type: ignore[index]
    await press(h, a, "5#")
    assert await ended(h, a) == ("valid", "5")


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("gather", {"speech_model": "x"}, "speech_model"),
        ("gather", {"maximum_digits": 129}, "maximum_digits"),
        ("gather", {"minimum_digits": 5, "maximum_digits": 4}, "minimum_digits"),
        ("gather", {"terminating_digit": "##"}, "terminating_digit"),
        ("gather", {"valid_digits": "12x"}, "valid_digits"),
        ("gather", {"timeout_millis": 0}, "timeout_millis"),
        ("gather", {"gather_id": "g" * 101}, "gather_id"),
        ("gather_using_audio", {"media_name": "tone-440", "gather_id": "g"}, "gather_id"),
        (
            "gather_using_audio",
            {"media_name": "tone-440", "initial_timeout_millis": 9},
            "initial_timeout_millis",
        ),
        ("gather_using_audio", {}, "audio_url"),
        ("gather_using_audio", {"media_name": "tone-440", "maximum_tries": 0}, "maximum_tries"),
        ("gather_using_audio", {"audio_url": "file:///elsewhere/a.wav"}, "audio_url"),
        (
            "gather_using_audio",
            {"media_name": "tone-440", "invalid_audio_url": "file:///srv/x.wav"},
            "invalid_audio_url",
        ),
        (
            "gather_using_audio",
            {
                "media_name": "t",
                "invalid_media_name": "t",
                "invalid_audio_url": "https://example.com/a.wav",
            },
            "invalid_audio_url",
        ),
        ("gather_stop", {"digits": "1"}, "digits"),
    ],
)
async def test_an_unknown_or_bad_parameter_is_422_naming_it(
    h: Harness, action: str, body: dict[str, Any], field: str
) -> None:
    a = await h.up()
    reply = await h.act(a, action, **body)
    assert reply.status == 422, reply
    assert reply.body["errors"][0]["source"] == {"pointer": f"/{field}"}
    assert h.runtime.machine.leg(a).gather is None


async def test_gather_using_speak_and_ai_are_not_implemented(h: Harness) -> None:
    a = await h.up()
    for action in ("gather_using_speak", "gather_using_ai"):
        assert (await h.act(a, action, payload="hello")).status == 404


# ---- gather_using_audio ------------------------------------------------------------------------
async def next_playback(h: Harness, leg: str, kind: str) -> dict[str, Any]:
    hook: Hook = await h.receiver.next(f"call.playback.{kind}", leg)
    return hook.payload


async def test_the_prompt_plays_and_a_digit_stops_it_and_counts(
    h: Harness, sdk: telnyx.AsyncTelnyx, tmp_path: Path
) -> None:
    a = await h.up()
    prompt = write_wav(tmp_path / "media" / "menu.wav", 440, 30.0).as_uri()
    await sdk.calls.actions.gather_using_audio(a, audio_url=prompt, maximum_digits=2)
    assert (await next_playback(h, a, "started"))["media_url"] == prompt
    assert not [k for k in h.timers.pending if k.kind is TimerKind.GATHER_TIMEOUT]
    await press(h, a, "4")
    stopped = await next_playback(h, a, "ended")
    assert (stopped["status"], stopped["media_url"]) == ("cancelled", prompt)
    assert h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT) == 5.0
    await press(h, a, "2")
    assert await ended(h, a) == ("valid", "42")


async def test_no_input_replays_the_prompt_up_to_maximum_tries(
    h: Harness, sdk: telnyx.AsyncTelnyx, tmp_path: Path
) -> None:
    a = await h.up()
    prompt = write_wav(tmp_path / "media" / "short.wav", 440, 0.1).as_uri()
    await sdk.calls.actions.gather_using_audio(
        a, audio_url=prompt, maximum_tries=2, timeout_millis=7000
    )
    for _ in range(2):
        await next_playback(h, a, "started")
        assert (await next_playback(h, a, "ended"))["status"] == "completed"
        await h.runtime.settle()
        # The wait for a digit starts once the prompt has played.
        assert h.timers.delay(a, TimerKind.GATHER_TIMEOUT) == 7.0
        h.timers.fire(a, TimerKind.GATHER_TIMEOUT)
    assert await ended(h, a) == ("timeout", "")
    assert h.receiver.types(a).count("call.playback.started") == 2


async def test_invalid_input_plays_the_invalid_prompt_then_the_prompt_again(
    h: Harness, sdk: telnyx.AsyncTelnyx, tmp_path: Path
) -> None:
    a = await h.up()
    prompt = write_wav(tmp_path / "media" / "menu.wav", 440, 30.0).as_uri()
    invalid = write_wav(tmp_path / "media" / "sorry.wav", 600, 0.1).as_uri()
    await sdk.calls.actions.gather_using_audio(
        a, audio_url=prompt, invalid_audio_url=invalid, valid_digits="12#"
    )
    await next_playback(h, a, "started")
    await press(h, a, "9")
    assert (await next_playback(h, a, "ended"))["status"] == "cancelled"
    assert (await next_playback(h, a, "started"))["media_url"] == invalid
    assert (await next_playback(h, a, "ended"))["status"] == "completed"
    assert (await next_playback(h, a, "started"))["media_url"] == prompt
    await press(h, a, "1#")
    assert await ended(h, a) == ("valid", "1")
    assert h.receiver.types(a).count("call.gather.ended") == 1


# ---- restarts ----------------------------------------------------------------------------------
async def test_a_gather_survives_a_restart(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.up()
    await h.ok(a, "gather", maximum_digits=3, inter_digit_timeout_millis=4000)
    await press(h, a, "1")
    wait = h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT)

    h = await h.restarted(aiohttp_client, settings)

    # Its timers run on from where they were, and digits go on being collected.
    assert h.timers.delay(a, TimerKind.GATHER_DIGIT_WAIT) <= wait
    assert h.timers.delay(a, TimerKind.GATHER_TIMEOUT) <= 60.0
    await h.media(a)
    await press(h, a, "2")
    h.timers.fire(a, TimerKind.GATHER_DIGIT_WAIT)
    assert await ended(h, a) == ("valid", "12")


async def test_a_prompt_playing_at_a_restart_plays_again(
    h: Harness, aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    a = await h.up()
    prompt = write_wav(tmp_path / "media" / "menu.wav", 440, 30.0).as_uri()
    await h.ok(a, "gather_using_audio", audio_url=prompt, maximum_digits=1)
    await next_playback(h, a, "started")

    h = await h.restarted(aiohttp_client, settings)

    # The old process's audio went with it: the prompt starts again, and a key stops it.
    assert (await next_playback(h, a, "ended"))["status"] == "cancelled"
    assert (await next_playback(h, a, "started"))["media_url"] == prompt
    await h.media(a)
    await press(h, a, "3")
    assert (await next_playback(h, a, "ended"))["status"] == "cancelled"
    assert await ended(h, a) == ("valid", "3")


# ---- /openapi.json -----------------------------------------------------------------------------
async def test_openapi_documents_exactly_the_sdks_gather_fields(h: Harness) -> None:
    doc = (await h.request("GET", "/openapi.json")).body
    schemas = doc["components"]["schemas"]
    action = doc["paths"]["/v2/calls/{call_control_id}/actions/{action}"]["post"]
    assert {"gather", "gather_using_audio", "gather_stop"} <= set(
        action["parameters"][1]["schema"]["enum"]
    )
    for name, params in (
        ("GatherAction", action_gather_params.ActionGatherParams),
        ("GatherUsingAudioAction", action_gather_using_audio_params.ActionGatherUsingAudioParams),
        ("GatherStopAction", action_stop_gather_params.ActionStopGatherParams),
    ):
        assert set(schemas[name]["properties"]) == set(params.__annotations__), name
        assert schemas[name]["additionalProperties"] is False
