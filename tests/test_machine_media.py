"""What legs hear besides the mix: mute_dtmf, DTMF relay, playback overlays, recordings."""

from __future__ import annotations

import pytest

from engine.errors import InvalidState
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.media import DTMF_SAME_PRESS_S
from engine.machine.model import (
    DtmfSource,
    HangupCause,
    HangupSource,
    OverlaySource,
    RecordingOptions,
    TargetLegs,
    TimerKind,
)
from tests.test_machine_harness import Harness, hook, hooks, of_type

OOB, IN_BAND = DtmfSource.OUT_OF_BAND, DtmfSource.IN_BAND


# mute_dtmf, relative to A (the leg that sent the bridge): which listener must not hear DTMF.
@pytest.mark.parametrize(
    ("mute", "a_deaf", "b_deaf"),
    [
        ("none", False, False),
        ("both", True, True),
        ("self", True, False),
        ("opposite", False, True),
    ],
)
def test_mute_dtmf_keeps_digits_from_the_legs_it_names(
    mute: str, a_deaf: bool, b_deaf: bool
) -> None:
    h = Harness()
    h.incoming("a")
    h.incoming("b")
    out = h.command("a", cmd.parse_command("bridge", {"call_control_id": "b", "mute_dtmf": mute}))
    # In-band digits are in the audio: the mixer strips them for muted listeners.
    muted = {e.call_control_id for e in of_type(out, fx.SetDtmfMute) if e.muted}
    assert muted == {leg for leg, deaf in (("a", a_deaf), ("b", b_deaf)) if deaf}
    # Digits are relayed to each listener that may hear them.
    from_a = h.event(ev.DtmfReceived("a", "5", OOB))
    from_b = h.event(ev.DtmfReceived("b", "#", OOB))
    assert of_type(from_a, fx.RelayDtmf) == ([] if b_deaf else [fx.RelayDtmf("b", "5", OOB)])
    assert of_type(from_b, fx.RelayDtmf) == ([] if a_deaf else [fx.RelayDtmf("a", "#", OOB)])
    # The application hears every digit regardless.
    assert hook(from_a, "a", "call.dtmf.received")["digit"] == "5"
    assert hook(from_b, "b", "call.dtmf.received")["digit"] == "#"


def test_in_band_dtmf_is_relayed_with_its_source_and_regenerates_nothing() -> None:
    h = Harness()
    h.bridged_pair()
    out = h.event(ev.DtmfReceived("a", "7", IN_BAND))
    # The media plane decides what an in-band relay becomes (a message for a websocket agent,
    # nothing for a phone: the tone is in its audio); the machine never asks for new tones.
    assert of_type(out, fx.RelayDtmf) == [fx.RelayDtmf("b", "7", IN_BAND)]
    assert of_type(out, fx.SendDtmf) == []
    assert hooks(out) == ["call.dtmf.received"]


def test_only_the_pressers_room_peers_learn_of_a_digit() -> None:
    h = Harness()
    h.bridged_pair()
    h.incoming("c")  # answered, in no room
    out = h.event(ev.DtmfReceived("a", "9", OOB))
    assert of_type(out, fx.RelayDtmf) == [fx.RelayDtmf("b", "9", OOB)]
    assert of_type(h.event(ev.DtmfReceived("c", "9", OOB)), fx.RelayDtmf) == []


# One key press, reported by both sources, is one webhook; each source's reports are presses.
# Rows: (source, digit, seconds after the previous report) per report, and the digits the
# application hears, in order. W is the same-press window.
W = DTMF_SAME_PRESS_S
DTMF_REPORTS = [
    pytest.param([(OOB, "5", 0.0), (IN_BAND, "5", 0.05)], ["5"], id="oob-then-in-band"),
    pytest.param([(IN_BAND, "5", 0.0), (OOB, "5", 0.2)], ["5"], id="in-band-then-oob"),
    pytest.param([(IN_BAND, "5", 0.0), (OOB, "5", W)], ["5"], id="at-the-window-edge"),
    pytest.param([(IN_BAND, "5", 0.0), (OOB, "5", W + 0.01)], ["5", "5"], id="past-the-window"),
    pytest.param([(OOB, "5", 0.0), (OOB, "5", 0.08)], ["5", "5"], id="two-quick-oob-presses"),
    pytest.param(
        [(IN_BAND, "5", 0.0), (IN_BAND, "5", 0.08)], ["5", "5"], id="two-quick-in-band-presses"
    ),
    pytest.param(
        [(OOB, "5", 0.0), (IN_BAND, "5", 0.05), (OOB, "5", 0.1), (IN_BAND, "5", 0.05)],
        ["5", "5"],
        id="two-quick-presses-both-sources",
    ),
    pytest.param(
        # In-band detects each press early, Twilio reports each at its release.
        [(IN_BAND, "5", 0.0), (OOB, "5", 0.2), (IN_BAND, "5", 0.1), (OOB, "5", 0.2)],
        ["5", "5"],
        id="late-oob-reports",
    ),
    pytest.param(
        # Fast dialling: the out-of-band reports of two digits arrive before either tone is heard.
        [(OOB, "1", 0.0), (OOB, "2", 0.1), (IN_BAND, "1", 0.02), (IN_BAND, "2", 0.1)],
        ["1", "2"],
        id="interleaved-digits",
    ),
    pytest.param([(OOB, "5", 0.0), (IN_BAND, "6", 0.05)], ["5", "6"], id="different-digits"),
    pytest.param(
        # A pair is used once: the third report starts a new press.
        [(OOB, "5", 0.0), (IN_BAND, "5", 0.05), (IN_BAND, "5", 0.05)],
        ["5", "5"],
        id="a-pair-is-used-once",
    ),
]


@pytest.mark.parametrize(("reports", "heard"), DTMF_REPORTS)
def test_one_key_press_is_one_webhook_however_many_sources_report_it(
    reports: list[tuple[DtmfSource, str, float]], heard: list[str]
) -> None:
    h = Harness()
    h.bridged_pair()
    webhooks: list[str] = []
    relays: list[str] = []
    for source, digit, after in reports:
        h.tick(after)
        out = h.event(ev.DtmfReceived("a", digit, source))
        webhooks += [str(e.payload["digit"]) for e in of_type(out, fx.EmitWebhook)]
        relays += [e.digit for e in of_type(out, fx.RelayDtmf)]
    assert webhooks == heard
    assert relays == heard  # the peer learns of each press once, too


def test_a_flood_of_unmatched_digits_keeps_the_leg_bounded() -> None:
    h = Harness()
    h.incoming("a")
    for _ in range(1000):
        h.event(ev.DtmfReceived("a", "1", OOB))
    assert len(h.m.leg("a").dtmf_unmatched) <= 16


def test_dtmf_mute_ends_with_the_bridge() -> None:
    h = Harness()
    h.bridged_pair(mute_dtmf="both", park_after_unbridge="self")
    out = h.command("b", cmd.Unbridge())
    assert sorted((e.call_control_id, e.muted) for e in of_type(out, fx.SetDtmfMute)) == [
        ("a", False),
        ("b", False),
    ]


def test_send_dtmf_sends_on_the_commanded_leg() -> None:
    h = Harness()
    h.incoming("a")
    out = h.command("a", cmd.parse_command("send_dtmf", {"digits": "12w#", "duration_millis": 300}))
    assert out == [fx.SendDtmf("a", "12w#", 300)]


def test_hangup_clears_the_digits_still_queued_for_the_leg() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.parse_command("send_dtmf", {"digits": "123"}))
    out = h.command("a", cmd.Hangup())
    assert fx.ClearOverlay("a", fx.DTMF_TAG) in out


def test_playback_plays_to_its_targets_and_reports_start_and_end() -> None:
    h = Harness()
    h.bridged_pair()
    body = {"audio_url": "file:///srv/prompts/hello.wav", "target_legs": "both", "loop": 2}
    out = h.command("a", cmd.parse_command("playback_start", body, media_dir="/srv"))
    overlays = of_type(out, fx.SetOverlay)
    source = OverlaySource("file", "/srv/prompts/hello.wav")
    assert [(o.call_control_id, o.source, o.loop) for o in overlays] == [
        ("a", source, 2),
        ("b", source, 2),
    ]
    started = hook(out, "a", "call.playback.started")
    assert (started["media_url"], started["overlay"]) == ("file:///srv/prompts/hello.wav", False)
    out = h.event(ev.PlaybackEnded("a", overlays[0].tag, "completed"))
    assert hook(out, "a", "call.playback.ended")["status"] == "completed"
    assert h.event(ev.PlaybackEnded("a", overlays[0].tag)) == []  # a duplicate end


@pytest.mark.parametrize(
    ("target", "listeners"),
    [(TargetLegs.SELF, ["a"]), (TargetLegs.OPPOSITE, ["b"]), (TargetLegs.BOTH, ["a", "b"])],
)
def test_playback_target_legs(target: TargetLegs, listeners: list[str]) -> None:
    h = Harness()
    h.bridged_pair()
    out = h.command("a", cmd.PlaybackStart(media_name="beep", target_legs=target))
    assert [o.call_control_id for o in of_type(out, fx.SetOverlay)] == listeners


def test_playback_to_the_opposite_leg_needs_one() -> None:
    h = Harness()
    h.incoming("a")
    before = h.m.snapshot()
    with pytest.raises(InvalidState) as refused:
        h.command("a", cmd.PlaybackStart(media_name="beep", target_legs=TargetLegs.OPPOSITE))
    assert refused.value.field == "target_legs"
    assert h.m.snapshot() == before


def test_playbacks_queue_and_stop_current_plays_the_next() -> None:
    h = Harness()
    h.incoming("a")
    first = h.command("a", cmd.PlaybackStart(media_name="one"))
    assert hooks(first) == ["call.playback.started"]
    assert hooks(h.command("a", cmd.PlaybackStart(media_name="two"))) == []  # queued
    overlay = h.command("a", cmd.PlaybackStart(media_name="three", overlay=True))
    assert hooks(overlay) == ["call.playback.started"]  # an overlay plays on top, at once
    one = of_type(first, fx.SetOverlay)[0].tag
    out = h.event(ev.PlaybackEnded("a", one, "completed", None))
    assert [(e.event_type, e.payload["media_name"]) for e in of_type(out, fx.EmitWebhook)] == [
        ("call.playback.ended", "one"),
        ("call.playback.started", "two"),
    ]
    out = h.command("a", cmd.PlaybackStart(media_name="four", stop="current"))
    assert [p["media_name"] for p in _ended(out)] == ["two"]  # cut short: the queue moves on
    assert _ended(out)[0]["status"] == "cancelled"
    assert hook(out, "a", "call.playback.started")["media_name"] == "four"
    h.command("a", cmd.PlaybackStart(media_name="five"))
    stopped = h.command("a", cmd.PlaybackStop())  # stop: all, the default
    assert [p["media_name"] for p in _ended(stopped)] == ["four"]
    assert "call.playback.started" not in hooks(stopped), "the queue is cleared"
    assert [p.overlay for p in h.m.leg("a").playbacks] == [True]
    assert h.m.leg("a").playback_queue == ()


def test_stop_all_on_start_clears_the_queue_and_plays_at_once() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.PlaybackStart(media_name="one"))
    h.command("a", cmd.PlaybackStart(media_name="two"))
    out = h.command("a", cmd.PlaybackStart(media_name="three", stop="all"))
    assert [p["media_name"] for p in _ended(out)] == ["one"]
    assert hook(out, "a", "call.playback.started")["media_name"] == "three"
    assert h.m.leg("a").playback_queue == ()
    out = h.command("a", cmd.PlaybackStop(stop="current"))  # nothing queued: nothing follows
    assert hooks(out) == ["call.playback.ended"]


def test_an_overlay_needs_a_playback_to_play_over_and_plays_to_self_only() -> None:
    h = Harness()
    h.bridged_pair()
    with pytest.raises(InvalidState) as refused:
        h.command("a", cmd.PlaybackStart(media_name="on top", overlay=True))
    assert refused.value.field == "overlay"
    h.command("a", cmd.PlaybackStart(media_name="music"))
    with pytest.raises(InvalidState) as refused:
        h.command("a", cmd.PlaybackStart(media_name="x", overlay=True, target_legs=TargetLegs.BOTH))
    assert refused.value.field == "target_legs"


def _ended(effects: list[fx.Effect]) -> list[dict[str, object]]:
    return [
        e.payload for e in of_type(effects, fx.EmitWebhook) if e.event_type == "call.playback.ended"
    ]


def test_hangup_ends_playback_with_call_hangup_before_the_hangup_webhook() -> None:
    h = Harness()
    h.bridged_pair(park_after_unbridge="self")
    h.command("a", cmd.PlaybackStart(media_name="music", target_legs=TargetLegs.OPPOSITE))
    out = h.command("a", cmd.Hangup())
    assert hooks(out, "a") == ["call.playback.ended", "call.hangup"]
    assert _ended(out)[0]["status"] == "call_hangup"
    playback_clears = [c for c in of_type(out, fx.ClearOverlay) if c.tag != fx.DTMF_TAG]
    assert [c.call_control_id for c in playback_clears] == ["b"]


def test_recording_start_stop_and_saved_after_hangup() -> None:
    h = Harness()
    h.incoming("a")
    options = RecordingOptions(format="wav", channels="single", max_length_secs=30)
    out = h.command("a", cmd.RecordStart(options=options))
    (start,) = of_type(out, fx.StartRecording)
    assert start.options == options
    assert TimerKind.RECORD_LIMIT in h.timers("a")
    with pytest.raises(InvalidState):
        h.command("a", cmd.RecordStart(options=options))
    out = h.command("a", cmd.Hangup())
    assert fx.StopRecording("a", start.recording_id) in out
    saved = ev.RecordingSaved("a", start.recording_id, "/rec/a.wav", h.now - 5, h.now, "wav")
    out = h.event(saved)
    payload = hook(out, "a", "call.recording.saved")
    assert payload["recording_urls"] == {"wav": "/rec/a.wav"}
    assert h.event(saved) == []  # reported once


def test_record_max_length_stops_the_recording() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.RecordStart(options=RecordingOptions(max_length_secs=10)))
    recording = h.m.leg("a").recording_id
    out = h.fire("a", TimerKind.RECORD_LIMIT)
    assert out == [fx.StopRecording("a", recording or "")]
    with pytest.raises(InvalidState):
        h.command("a", cmd.RecordStop())


def test_record_pause_and_resume_keep_one_recording_and_max_length_counts_recorded_time() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.RecordStart(options=RecordingOptions(max_length_secs=10)))
    recording = h.m.leg("a").recording_id or ""
    h.tick(4)  # 4 s recorded
    out = h.command("a", cmd.RecordPause(paused=True))
    assert of_type(out, fx.PauseRecording) == [fx.PauseRecording("a", recording, True)]
    assert of_type(out, fx.CancelTimer) and TimerKind.RECORD_LIMIT not in h.timers("a")
    assert hooks(out) == []  # Call Control sends no webhook for a pause or a resume
    assert h.command("a", cmd.RecordPause(paused=True)) == []  # paused already: nothing to do
    h.tick(60)  # paused: the limit does not run
    out = h.command("a", cmd.RecordPause(paused=False, recording_id=recording))
    assert of_type(out, fx.PauseRecording) == [fx.PauseRecording("a", recording, False)]
    (timer,) = of_type(out, fx.StartTimer)
    assert timer.delay_s == pytest.approx(6.0)  # 10 s in all, 4 s recorded before the pause
    out = h.fire("a", TimerKind.RECORD_LIMIT)
    assert out == [fx.StopRecording("a", recording)]
    leg = h.m.leg("a")
    assert (leg.recording_id, leg.recording_paused, leg.recording_left_s) == (None, False, None)


def test_record_pause_needs_the_recording_in_progress() -> None:
    h = Harness()
    h.incoming("a")
    with pytest.raises(InvalidState, match="no recording"):
        h.command("a", cmd.RecordPause(paused=True))
    h.command("a", cmd.RecordStart(options=RecordingOptions()))
    with pytest.raises(InvalidState) as raised:
        h.command("a", cmd.RecordPause(paused=False, recording_id="another"))
    assert raised.value.field == "recording_id"
    out = h.command("a", cmd.RecordPause(paused=True))  # without a limit: no timer to move
    assert not of_type(out, fx.StartTimer) and not of_type(out, fx.CancelTimer)
    out = h.command("a", cmd.Hangup())
    assert of_type(out, fx.StopRecording), "a paused recording ends with its leg"
    assert not h.m.leg("a").recording_paused


def test_bridge_record_from_answer_starts_when_the_bridge_completes() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    body = {"call_control_id": "b", "record": "record-from-answer", "record_format": "wav"}
    out = h.command("a", cmd.parse_command("bridge", body))
    assert of_type(out, fx.StartRecording) == []
    out = h.event(ev.LegAnswered("b"))
    (start,) = of_type(out, fx.StartRecording)
    assert (start.call_control_id, start.options.format) == ("a", "wav")


def test_media_stream_webhooks_and_duplicates() -> None:
    h = Harness()
    h.incoming("a", media=False)
    out = h.event(ev.MediaStarted("a", "PCMU/8000", "wss://cb.example/media"))
    assert hook(out, "a", "streaming.started")["stream_url"] == "wss://cb.example/media"
    assert h.event(ev.MediaStarted("a", "PCMU/8000")) == []
    assert h.m.leg("a").media_format == "PCMU/8000"


def test_dtmf_after_hangup_is_ignored() -> None:
    h = Harness()
    h.incoming("a")
    h.event(ev.LegHungUp("a", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    assert h.event(ev.DtmfReceived("a", "1", OOB)) == []


def test_a_held_leg_hears_the_tone_on_hold_exactly_while_it_is_held() -> None:
    h = Harness()
    h.bridged_pair(hold_after_unbridge=True)
    h.incoming("c")
    hold = fx.SetOverlay("a", fx.HOLD_TAG, OverlaySource("hold", ""), None)
    out = h.command("c", cmd.parse_command("bridge", {"call_control_id": "b"}))
    assert hold in out and h.state("a").value == "held"
    out = h.command("a", cmd.PlaybackStop())  # a media command keeps it held: no change
    assert not [e for e in out if getattr(e, "tag", None) == fx.HOLD_TAG]
    out = h.command("a", cmd.parse_command("bridge", {"call_control_id": "c"}))
    assert fx.ClearOverlay("a", fx.HOLD_TAG) in out and h.state("a").value == "bridged"
