"""A conference's recording on the machine (engine/machine/conference_recording.py) and its
commands' bodies (engine/machine/conference_commands.py): the effects that start, pause and
stop it (the conference's end too), what may be refused, the one webhook its outcome gets in the
SDK's ``ConferenceRecordingSaved`` shape, what is played to the whole room reaching it, and the
record stored and read back mid-recording."""

from __future__ import annotations

import contextlib
import importlib
import typing
from pathlib import Path
from typing import Any

import pytest
from telnyx.types.conference_recording_saved import Payload as SavedPayload

from engine.api.openapi_conferences import ACTIONS
from engine.errors import InvalidState, NotFound
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.command_body import ParameterError
from engine.machine.conference_commands import (
    EndConference,
    PauseConferenceRecording,
    PlayConference,
    RecordConference,
    StopConferenceRecording,
    parse_action,
)
from engine.machine.core import Checkpoint
from engine.machine.live_changes import changes_between
from engine.machine.model import RecordingOptions
from engine.store.sql import SqlStore
from tests.test_machine_conferences import conference
from tests.test_machine_harness import ORG, Harness, of_type

WAV = RecordingOptions(format="wav", channels="single")


def run(h: Harness, conference_id: str, command: Any) -> list[fx.Effect]:
    out = h.m.handle_command(conference_id, ORG, command, h.now)
    h.log += out
    return out


def saved(h: Harness, conference_id: str, recording_id: str) -> list[fx.Effect]:
    return h.event(
        ev.RecordingSaved(
            conference_id,
            recording_id,
            url="https://cb.example/v2/recordings/r-1/download?x=1",
            started_at=h.now - 30,
            ended_at=h.now,
            format="wav",
            channels="single",
            public_id="r-1",
        )
    )


def test_record_start_records_the_room_and_stop_saves_it_with_the_sdks_fields() -> None:
    h = Harness()
    conf = conference(h, "a", "b", "c")
    record = h.m.conference(conf, ORG)
    out = run(h, conf, RecordConference(options=WAV))
    recording_id = f"{conf}/recording/1"
    assert of_type(out, fx.StartRecording) == [
        fx.StartRecording(conf, recording_id, WAV, ORG, room=fx.RoomMix(record.room_id))
    ]
    assert of_type(out, fx.SetOverlay) == [], "no play_beep: no beep"
    with pytest.raises(InvalidState, match="already in progress"):
        run(h, conf, RecordConference(options=WAV))
    out = run(h, conf, StopConferenceRecording(client_state="c3RvcA=="))
    assert out == [fx.StopRecording(conf, recording_id)]
    with pytest.raises(InvalidState, match="no recording is in progress"):
        run(h, conf, StopConferenceRecording())
    (webhook,) = of_type(saved(h, conf, recording_id), fx.EmitWebhook)
    assert webhook.event_type == "conference.recording.saved"
    assert set(webhook.payload) <= set(SavedPayload.model_fields), "only the SDK's fields"
    assert webhook.payload == {
        "call_control_id": "a",  # the creator
        "call_session_id": "session-a",
        "client_state": "c3RvcA==",  # record_stop's: "add state to every subsequent webhook"
        "conference_id": conf,
        "connection_id": "conn-1",
        "channels": "single",
        "format": "wav",
        "recording_id": "r-1",
        "recording_started_at": "2023-11-14T22:12:50.000000Z",
        "recording_ended_at": "2023-11-14T22:13:20.000000Z",
        "recording_urls": {"wav": "https://cb.example/v2/recordings/r-1/download?x=1"},
        "public_recording_urls": {"wav": "https://cb.example/v2/recordings/r-1/download?x=1"},
    }
    SavedPayload.model_validate(webhook.payload)
    assert webhook.order_key == record.room_id, "in order with the conference's other events"
    assert saved(h, conf, recording_id) == [], "reported once"
    # A new one may start: the next id.
    out = run(h, conf, RecordConference(options=WAV))
    assert of_type(out, fx.StartRecording)[0].recording_id == f"{conf}/recording/2"


def test_pause_and_resume_change_only_what_they_must() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    with pytest.raises(InvalidState, match="no recording"):
        run(h, conf, PauseConferenceRecording(paused=True))
    run(h, conf, RecordConference(options=WAV))
    recording_id = f"{conf}/recording/1"
    with pytest.raises(InvalidState) as refused:
        run(h, conf, PauseConferenceRecording(paused=True, recording_id="other"))
    assert refused.value.field == "recording_id"
    pause = PauseConferenceRecording(paused=True, recording_id=recording_id)
    assert run(h, conf, pause) == [fx.PauseRecording(conf, recording_id, True)]
    assert run(h, conf, PauseConferenceRecording(paused=True)) == [], "paused already"
    resume = PauseConferenceRecording(paused=False)
    assert run(h, conf, resume) == [fx.PauseRecording(conf, recording_id, False)]
    assert run(h, conf, resume) == []


def test_the_conference_ending_stops_it_and_its_outcome_still_reaches_the_application() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    run(h, conf, RecordConference(options=RecordingOptions(format="mp3", channels="dual")))
    start = of_type(h.log, fx.StartRecording)[-1]
    assert start.room == fx.RoomMix(h.m.conference(conf, ORG).room_id, "a"), "dual: the creator"
    out = run(h, conf, EndConference())
    stops = of_type(out, fx.StopRecording)
    assert stops == [fx.StopRecording(conf, f"{conf}/recording/1")]
    hangups = [i for i, e in enumerate(out) if isinstance(e, fx.EmitWebhook)]
    assert out.index(stops[0]) < hangups[-1], "stopped as the conference ends, not after"
    h.tick(5)
    failed = h.event(ev.RecordingFailed(conf, f"{conf}/recording/1", "disk_stalled", "slow"))
    (webhook,) = of_type(failed, fx.EmitWebhook)
    assert webhook.event_type == "conference.recording.error"
    assert webhook.payload["conference_id"] == conf
    assert (webhook.payload["reason"], webhook.payload["callbridge_reason"]) == (
        "Internal server error",
        "disk_stalled",
    )


def test_play_beep_and_the_whole_rooms_audio_reach_its_listener() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    beep = RecordingOptions(format="wav", channels="single", play_beep=True)
    out = run(h, conf, RecordConference(options=beep))
    tag = f"beep/{conf}/recording/1"
    assert [(e.call_control_id, e.tag) for e in of_type(out, fx.SetOverlay)] == [
        ("a", tag),
        ("b", tag),
        (conf, tag),  # the recording's listener: the beep is in the recording
    ]
    play = PlayConference(call_control_ids=(), audio_url=None, media_name="tone-440")
    heard = [e.call_control_id for e in of_type(run(h, conf, play), fx.SetOverlay)]
    assert heard == ["a", "b", conf]
    targeted = PlayConference(call_control_ids=("a",), audio_url=None, media_name="tone-440")
    out = run(h, conf, targeted)
    assert [e.call_control_id for e in of_type(out, fx.SetOverlay)] == ["a"], "not the room's"
    # ... and it replaced the room's playback, which the listener stops hearing too.
    cleared = [(e.call_control_id, e.tag) for e in of_type(out, fx.ClearOverlay)]
    assert (conf, f"{conf}/playback/2") in cleared


async def test_the_record_is_stored_and_read_back_mid_recording(tmp_path: Path) -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    run(h, conf, RecordConference(options=WAV))
    run(h, conf, PauseConferenceRecording(paused=True))
    changes = changes_between(Checkpoint({}, {}, {}, {}, {}), h.m.checkpoint(), h.log, h.now)
    store = SqlStore(f"sqlite:///{tmp_path / 'live.db'}")
    await store.start()
    try:
        await store.commit_input(changes, [], h.now)
        (record,) = (await store.load_live()).records
    finally:
        await store.close()
    assert (record.recording_id, record.recording_paused) == (f"{conf}/recording/1", True)
    assert record.recordings_unsaved == (f"{conf}/recording/1",)


# ---- the bodies --------------------------------------------------------------------------------
def test_record_start_takes_the_sdks_fields_with_telnyxs_defaults() -> None:
    command = parse_action("record_start", {"format": "mp3"})
    assert command == RecordConference(
        options=RecordingOptions(format="mp3", channels="single", track="both")
    )
    full = parse_action(
        "record_start",
        {
            "format": "wav",
            "channels": "dual",
            "play_beep": True,
            "trim": "trim-silence",
            "custom_file_name": "standup",
            "command_id": "x1",
        },
    )
    assert full == RecordConference(
        options=RecordingOptions(
            format="wav",
            channels="dual",
            trim="trim-silence",
            custom_file_name="standup",
            play_beep=True,
        ),
        command_id="x1",
    )
    assert parse_action("record_stop", {"recording_id": "r", "client_state": "eA=="}) == (
        StopConferenceRecording(recording_id="r", client_state="eA==")
    )
    assert parse_action("record_resume", {}) == PauseConferenceRecording(paused=False)


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("record_start", {}, "format"),
        ("record_start", {"format": "ogg"}, "format"),
        ("record_start", {"format": "wav", "channels": "stereo"}, "channels"),
        ("record_start", {"format": "wav", "region": "US"}, "region"),
        ("record_start", {"format": "wav", "client_state": "eA=="}, "client_state"),
        ("record_start", {"format": "wav", "max_length": 10}, "max_length"),
        ("record_start", {"format": "wav", "custom_file_name": "../x"}, "custom_file_name"),
        ("record_start", {"format": "wav", "trim": "yes"}, "trim"),
        ("record_stop", {"region": "US"}, "region"),
        ("record_stop", {"client_state": "not base64!"}, "client_state"),
        ("record_pause", {"client_state": "eA=="}, "client_state"),
        ("record_resume", {"paused": True}, "paused"),
    ],
)
def test_a_field_it_would_not_carry_out_is_refused_by_name(
    action: str, body: dict[str, object], field: str
) -> None:
    with pytest.raises(ParameterError) as refused:
        parse_action(action, body)
    assert refused.value.field == field
    assert refused.value.status == 422


def test_a_leg_command_is_not_a_conference_recording() -> None:
    h = Harness()
    conference(h, "a", "b")
    out = h.command("a", cmd.RecordStart(options=WAV))
    assert of_type(out, fx.StartRecording)[0].room is None, "a leg's own recording"


@pytest.mark.parametrize("action", ["record_start", "record_stop", "record_pause", "record_resume"])
def test_the_openapi_body_has_the_sdks_fields_but_region(action: str) -> None:
    module = importlib.import_module(f"telnyx.types.conferences.action_{action}_params")
    sdk_fields = set(typing.get_type_hints(getattr(module, sdk_params_name(action))))
    assert set(ACTIONS[action]["properties"]) == sdk_fields - {"region"}
    assert ACTIONS[action]["additionalProperties"] is False


def sdk_params_name(action: str) -> str:
    return "Action" + "".join(part.capitalize() for part in action.split("_")) + "Params"


def test_every_action_in_openapi_is_one_the_parser_knows() -> None:
    for action in ACTIONS:
        with contextlib.suppress(ParameterError):  # known, its body refused
            parse_action(action, {})
    with pytest.raises(NotFound):
        parse_action("speak", {})
