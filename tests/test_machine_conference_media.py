"""Conference hold, play, stop and send_dtmf on the machine (engine/machine/conference_media.py):
hold as derived mixer effects (muted and deaf) with the built-in tone unless audio is named,
taken off by unhold and by leaving; one playback at a time with its webhooks by target; a
playback's end reported by the media plane; digits queued on each participant named."""

from __future__ import annotations

import pytest

from engine.errors import InvalidState, ValidationError
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.conference_commands import (
    ConferenceDtmf,
    HoldParticipants,
    LeaveParticipant,
    PlayConference,
    StopConference,
    parse_action,
)
from engine.machine.conference_media import HOLD_TONE
from engine.machine.model import OverlaySource
from tests.test_machine_conferences import conference
from tests.test_machine_harness import ORG, Harness, of_type

HOLD = fx.CONFERENCE_HOLD_TAG


def hooks(out: list[fx.Effect]) -> list[tuple[str, str]]:
    return [(e.event_type, e.call_control_id) for e in of_type(out, fx.EmitWebhook)]


def test_hold_plays_the_tone_on_hold_mutes_and_deafens_until_unhold() -> None:
    h = Harness()
    conf = conference(h, "a", "b", "c")
    out = h.m.handle_command(conf, ORG, HoldParticipants(call_control_ids=("b",), held=True), h.now)
    assert of_type(out, fx.SetOverlay) == [fx.SetOverlay("b", HOLD, HOLD_TONE, None)]
    assert of_type(out, fx.SetAudience) == [fx.SetAudience("b", frozenset(), True)]
    assert h.m.leg("b").on_hold
    # A new stream gets it again.
    again = h.event(ev.MediaStopped("b")) + h.event(ev.MediaStarted("b", "PCMU/8000"))
    assert of_type(again, fx.SetAudience) == [
        fx.SetAudience("b", None),
        fx.SetAudience("b", frozenset(), True),
    ]
    out = h.m.handle_command(
        conf, ORG, HoldParticipants(call_control_ids=("b",), held=False), h.now
    )
    assert of_type(out, fx.ClearOverlay) == [fx.ClearOverlay("b", HOLD)]
    assert of_type(out, fx.SetAudience) == [fx.SetAudience("b", None, False)]
    assert not h.m.leg("b").on_hold


def test_hold_with_audio_and_leaving_takes_the_leg_off_hold() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    held = HoldParticipants(call_control_ids=(), held=True, media_name="tone-440")
    out = h.m.handle_command(conf, ORG, held, h.now)
    source = OverlaySource("media", "tone-440")
    assert of_type(out, fx.SetOverlay) == [
        fx.SetOverlay("a", HOLD, source, None),
        fx.SetOverlay("b", HOLD, source, None),
    ]
    out = h.m.handle_command(conf, ORG, LeaveParticipant(call_control_id="b"), h.now)
    assert fx.ClearOverlay("b", HOLD) in out
    assert not h.m.leg("b").on_hold and h.m.leg("a").on_hold


def test_play_replaces_the_current_one_and_ends_with_the_plane_or_a_leaving_listener() -> None:
    h = Harness()
    conf = conference(h, "a", "b", "c")
    play = PlayConference(call_control_ids=(), audio_url=None, media_name="tone-440", loop=1)
    out = h.m.handle_command(conf, ORG, play, h.now)
    first = f"{conf}/playback/1"
    assert [e.call_control_id for e in of_type(out, fx.SetOverlay)] == ["a", "b", "c"]
    assert hooks(out) == [("conference.playback.started", "a")]
    targeted = PlayConference(call_control_ids=("b", "c"), audio_url=None, media_name="x")
    out = h.m.handle_command(conf, ORG, targeted, h.now)
    assert [e.call_control_id for e in of_type(out, fx.ClearOverlay)] == ["a", "b", "c"]
    assert hooks(out) == [
        ("conference.playback.ended", "a"),
        ("conference.participant.playback.started", "b"),
        ("conference.participant.playback.started", "c"),
    ]
    assert of_type(out, fx.EmitWebhook)[0].payload["media_name"] == "tone-440"
    second = f"{conf}/playback/2"
    out = h.m.handle_command(conf, ORG, LeaveParticipant(call_control_id="c"), h.now)
    assert fx.ClearOverlay("c", second) in out
    assert hooks(out)[0] == ("conference.participant.playback.ended", "c")
    out = h.event(ev.PlaybackEnded(conf, second))
    assert hooks(out) == [("conference.participant.playback.ended", "b")]
    assert h.event(ev.PlaybackEnded(conf, first)) == []  # long over
    assert h.event(ev.PlaybackEnded(conf, second)) == []  # reported by another listener too


def test_stop_for_some_listeners_then_everyone() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    play = PlayConference(call_control_ids=(), audio_url=None, media_name="x", loop=None)
    h.m.handle_command(conf, ORG, play, h.now)
    out = h.m.handle_command(conf, ORG, StopConference(call_control_ids=("a",)), h.now)
    assert of_type(out, fx.ClearOverlay) == [fx.ClearOverlay("a", f"{conf}/playback/1")]
    assert hooks(out) == []  # b still hears it
    out = h.m.handle_command(conf, ORG, StopConference(call_control_ids=()), h.now)
    assert hooks(out) == [("conference.playback.ended", "a")]


def test_send_dtmf_queues_the_digits_on_each_participant_named() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    dtmf = ConferenceDtmf(call_control_ids=(), digits="12", duration_millis=100)
    out = h.m.handle_command(conf, ORG, dtmf, h.now)
    assert of_type(out, fx.SendDtmf) == [fx.SendDtmf("a", "12", 100), fx.SendDtmf("b", "12", 100)]
    h.incoming("x")
    stranger = ConferenceDtmf(call_control_ids=("x",), digits="1")
    with pytest.raises(InvalidState):
        h.m.handle_command(conf, ORG, stranger, h.now)


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("hold", {"audio_url": "file:///x.wav", "media_name": "m"}, "audio_url"),
        ("hold", {"region": "US"}, "region"),
        ("unhold", {}, "call_control_ids"),
        ("play", {}, "audio_url"),
        ("play", {"media_name": "m", "loop": 0}, "loop"),
        ("stop", {"command_id": "x"}, "command_id"),
        ("send_dtmf", {"digits": "12x"}, "digits"),
        ("send_dtmf", {"digits": "1", "duration_millis": 50}, "duration_millis"),
        ("send_dtmf", {"digits": "1", "client_state": "eA=="}, "client_state"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    action: str, body: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_action(action, body)
    assert caught.value.field == field
