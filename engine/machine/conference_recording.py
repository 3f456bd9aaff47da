"""A conference's recording on the machine: the Conferences API's record_start, record_stop,
record_pause and record_resume, the conference's end, and the outcome's webhook.

What is recorded is the conference's mix: what a silent listener in its room hears. That is
every participant everyone may hear (``engine.machine.hearing``: not muted, not on hold, not a
monitor or whisper supervisor), as they join and leave, and what is played to the whole room
(the untargeted ``play``, the join/leave beeps, record_start's ``play_beep``); not what is
played to named participants only, nor hold audio. The media plane builds that listener in the
mixer (``engine.media_plane.room_recordings``) from ``StartRecording.room``; the recording's
effects and events name the conference by its id where a leg's name the leg. Call Control v2's
reference says only "Start recording the conference"; Bandwidth's BXML documents the same rule
for its conference recordings ("all members who are not on mute or hold will be recorded, as
well as all audio clips played": its StartRecording verb).

- record_start: one recording at a time per conference (a second is refused, 422, as a leg's
  is). ``play_beep`` ("a beep sound will be played at the start of a recording"): callbridge's
  1 kHz beep of 250 ms to every participant, and so into the recording. ``channels`` dual:
  the creator (its audio as the room hears it) on the first channel, the rest on the second.
- record_pause / record_resume: the file takes no audio while paused; one file, one webhook.
  Pausing a paused recording (resuming a running one) changes nothing and is no error.
- record_stop, or the conference's end ("Recording will stop on conference end, or via the
  Stop Recording command": the SDK's record_start docstring). Once the file is written,
  ``conference.recording.saved`` goes to the conference's webhook URL with the fields of the
  SDK's ``ConferenceRecordingSaved`` payload: the creator's ``call_control_id`` and
  ``call_session_id``, ``connection_id``, ``client_state`` (the conference's; record_stop's
  ``client_state``, "add state to every subsequent webhook", replaces it), ``conference_id``,
  ``channels``, ``format``, ``recording_id`` (the one ``GET /v2/recordings/{id}`` answers to),
  ``recording_started_at``, ``recording_ended_at`` and ``recording_urls`` /
  ``public_recording_urls`` (the signed download URL, for the format recorded).
- ``recording_id`` on stop, pause and resume names the recording in progress (the machine's
  id); another is refused (422), none is refused when none is in progress (422).
- A recording that cannot be written ends with ``conference.recording.error``: callbridge's own
  event (Call Control v2 defines none for conferences), with ``call.recording.error``'s fields
  (``reason`` "Internal server error", ``recording_id``, ``callbridge_reason``,
  ``callbridge_reason_detail``) and the conference's ids; a new record_start may follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.errors import InvalidState
from engine.machine import effects as fx
from engine.machine.conference_commands import (
    PauseConferenceRecording,
    RecordConference,
    StopConferenceRecording,
)
from engine.machine.core import Core, iso
from engine.machine.events import RecordingFailed, RecordingSaved
from engine.machine.media import RECORDING_ERROR_REASON, START_BEEP
from engine.machine.model import INVALID_STATE_CODE, Conference

RecordingCommand = RecordConference | StopConferenceRecording | PauseConferenceRecording


def check(core: Core, record: Conference, command: RecordingCommand) -> Callable[[], object]:
    """The change of a recording command on a live conference; raises before any change."""
    if isinstance(command, RecordConference):
        if record.recording_id is not None:
            raise InvalidState("a recording is already in progress", code=INVALID_STATE_CODE)
        return lambda: _start(core, record, command)
    if record.recording_id is None:
        raise InvalidState("no recording is in progress", code=INVALID_STATE_CODE)
    if command.recording_id not in (None, record.recording_id):
        raise InvalidState(
            "no such recording in progress", field="recording_id", code=INVALID_STATE_CODE
        )
    if isinstance(command, StopConferenceRecording):
        if command.client_state is not None:
            record = replace(record, client_state=command.client_state)
        return lambda: stop(core, record)
    return lambda: _pause(core, record, command.paused)


def _start(core: Core, record: Conference, command: RecordConference) -> None:
    recording_id = f"{record.conference_id}/recording/{record.seq + 1}"
    options = command.options
    creator = record.creator if options.channels == "dual" else None
    core.emit(
        fx.StartRecording(
            record.conference_id,
            recording_id,
            options,
            record.org_id,
            room=fx.RoomMix(record.room_id, creator),
        )
    )
    if options.play_beep:
        room = core.rooms.get(record.room_id)
        tag = f"beep/{recording_id}"
        for hearer in (*(room.members if room else ()), record.conference_id):
            core.emit(fx.SetOverlay(hearer, tag, START_BEEP, 1))
    core.records[record.conference_id] = replace(
        record,
        seq=record.seq + 1,
        recording_id=recording_id,
        recording_paused=False,
        recordings_unsaved=(*record.recordings_unsaved, recording_id),
        updated_at=core.now,
    )


def stop(core: Core, record: Conference) -> Conference:
    """Stop the conference's recording in progress, if any (record_stop; its end). The record
    after."""
    if record.recording_id is None:
        return record
    core.emit(fx.StopRecording(record.conference_id, record.recording_id))
    record = replace(record, recording_id=None, recording_paused=False, updated_at=core.now)
    core.records[record.conference_id] = record
    return record


def _pause(core: Core, record: Conference, paused: bool) -> None:
    if paused == record.recording_paused:
        return
    assert record.recording_id is not None  # check
    core.emit(fx.PauseRecording(record.conference_id, record.recording_id, paused))
    core.records[record.conference_id] = replace(
        record, recording_paused=paused, updated_at=core.now
    )


def reported(core: Core, record: Conference, event: RecordingSaved | RecordingFailed) -> None:
    """The media plane's outcome of one of the conference's recordings (it may come after the
    conference ended): its webhook, once."""
    if event.recording_id not in record.recordings_unsaved:
        return  # unknown, or already reported
    unsaved = tuple(r for r in record.recordings_unsaved if r != event.recording_id)
    record = replace(record, recordings_unsaved=unsaved)
    if record.recording_id == event.recording_id:  # failed while in progress: a new one may start
        record = replace(record, recording_id=None, recording_paused=False)
    core.records[record.conference_id] = record
    if isinstance(event, RecordingSaved):
        _send(core, record, "conference.recording.saved", _saved_fields(event))
    else:
        _send(core, record, "conference.recording.error", _error_fields(event))


def _saved_fields(event: RecordingSaved) -> dict[str, object]:
    urls = {event.format: event.url}
    return {
        "channels": event.channels,
        "format": event.format,
        # The id GET /v2/recordings/{id} answers to.
        "recording_id": event.public_id or event.recording_id,
        "recording_started_at": iso(event.started_at),
        "recording_ended_at": iso(event.ended_at),
        "recording_urls": urls,
        "public_recording_urls": dict(urls),
    }


def _error_fields(event: RecordingFailed) -> dict[str, object]:
    return {
        "reason": RECORDING_ERROR_REASON,
        "recording_id": event.recording_id,
        "callbridge_reason": event.reason,
        "callbridge_reason_detail": event.detail[:300],
    }


def _send(core: Core, record: Conference, event_type: str, fields: dict[str, object]) -> None:
    if record.webhook_url is None:
        return  # a bridge's default conference: nobody listens (the recording is still listed)
    creator = core.legs.get(record.creator)
    payload: dict[str, object] = {
        "call_control_id": record.creator,
        "call_session_id": creator.call_session_id if creator is not None else None,
        "client_state": record.client_state,
        "conference_id": record.conference_id,
        "connection_id": record.connection_id,
        **fields,
    }
    core.send(
        record.creator,
        record.org_id,
        record.webhook_url,
        event_type,
        payload,
        order_key=record.room_id,
    )


def hears_room_audio(record: Conference) -> tuple[str, ...]:
    """The recording's listener, as a hearer of what is played to the whole room (the
    conference's id names it): one while a recording is in progress, else none."""
    return (record.conference_id,) if record.recording_id is not None else ()
