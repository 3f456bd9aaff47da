"""The Conferences API's commands on the machine: create, join, leave, mute, unmute, update,
end; hold, unhold, play, stop and send_dtmf are ``engine.machine.conference_media``'s.

A conference is a conference room (``RoomKind.CONFERENCE``) with its record
(``engine.machine.conference_events``); the mixer mixes any number of members. Words and rules:

- ``create`` makes a new room and record from a leg (``call_control_id``), which joins it at
  once, leaving any room it was in (its bridge peer then follows its own unbridge policy).
- ``join`` puts a leg of the same organization in the room; ``leave`` takes one out, parked
  (Call Control v2's leave: the leg stays up under the application's control).
- ``mute``/``unmute`` set the participants' ``Leg.muted`` (all of them when no id is named);
  ``Core.put`` derives the mixer's ``SetAudience`` from it, so the mixer's hear-matrix, not this
  module, decides what a muted leg's peers hear: nothing of it.
- ``update`` (and ``join``'s ``supervisor_role``) set a participant's supervisor role and the
  participants it whispers to (``engine.machine.hearing`` decides who hears it).
- ``end`` hangs up every participant (the SDK's ``end_conference``: "End a conference and
  terminate all active participants"); the conference ends with ``end_reason``
  ``ended_via_api`` (the SDK's ``Conference.end_reason`` values).
- ``record_start``, ``record_stop``, ``record_pause``, ``record_resume``: the conference's
  recording (``engine.machine.conference_recording``).

Each command is checked first and raises before any change (``NotFound`` for a conference or
leg that is unknown or another organization's, ``InvalidState`` for one in the wrong state),
as ``engine.machine.actions`` does for leg commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.errors import InvalidState, NotFound
from engine.machine import (
    conference_events,
    conference_media,
    conference_recording,
    legs,
    supervision,
)
from engine.machine.conference_commands import (
    ConferenceCommand,
    ConferenceDtmf,
    CreateConference,
    EndConference,
    HoldParticipants,
    JoinParticipant,
    LeaveParticipant,
    MuteParticipants,
    PauseConferenceRecording,
    PlayConference,
    RecordConference,
    StopConference,
    StopConferenceRecording,
)
from engine.machine.core import Core
from engine.machine.effects import HangupCall
from engine.machine.model import (
    INVALID_STATE_CODE,
    CallEnded,
    Conference,
    HangupCause,
    Leg,
    RoomKind,
)
from engine.machine.supervision_commands import UpdateSupervisor
from engine.machine.transitions import Trigger, next_state, require

Change = Callable[[], object]


def check(core: Core, org_id: int, target: str, command: ConferenceCommand) -> Change:
    """Check ``command`` (on conference ``target``; for create, the creating leg's id) and
    return its change, which cannot fail."""
    if isinstance(command, CreateConference):
        leg = _leg(core, org_id, command.call_control_id, "call_control_id")
        require(leg.state, Trigger.JOIN_CONFERENCE, field="call_control_id")
        return lambda: _create(core, leg, command)
    record = find(core, org_id, target)
    if record.ended_at is not None:
        raise InvalidState("the conference has ended", code=INVALID_STATE_CODE)
    match command:
        case JoinParticipant():
            leg = _joining(core, record, command)
            return lambda: _join(core, record, leg, command)
        case LeaveParticipant():
            leg = _participant(core, record, command.call_control_id, "call_control_id")
            require(leg.state, Trigger.UNBRIDGE, field="call_control_id")
            return lambda: legs.unbridge(core, leg)
        case MuteParticipants():
            chosen = _chosen(core, record, command.call_control_ids)
            return lambda: _mute(core, chosen, command.muted)
        case HoldParticipants() | PlayConference() | StopConference() | ConferenceDtmf():
            chosen = _chosen(core, record, command.call_control_ids)
            return conference_media.change(core, record, chosen, command)
        case EndConference():
            return lambda: _end(core, record)
        case RecordConference() | StopConferenceRecording() | PauseConferenceRecording():
            return conference_recording.check(core, record, command)
        case UpdateSupervisor():
            leg = _participant(core, record, command.call_control_id, "call_control_id")
            _whisper_targets(core, record, command.whisper_to)
            return lambda: _update(core, record, leg, command)
    raise AssertionError(f"unhandled conference command {type(command).__name__}")


def find(core: Core, org_id: int, conference_id: str) -> Conference:
    """The organization's conference, live or ended; ``NotFound`` otherwise."""
    record = core.records.get(conference_id)
    if record is None or record.org_id != org_id:
        raise NotFound(f"no conference with id '{conference_id}'")
    return record


def members(core: Core, record: Conference) -> tuple[str, ...]:
    room = core.rooms.get(record.room_id) if record.ended_at is None else None
    return room.members if room is not None else ()


def _chosen(core: Core, record: Conference, ids: tuple[str, ...]) -> list[Leg]:
    """The participants ``ids`` name; none named: every participant."""
    named = ids or members(core, record)
    return [_participant(core, record, i, "call_control_ids") for i in named]


def _leg(core: Core, org_id: int, call_control_id: str, field: str) -> Leg:
    leg = core.legs.get(call_control_id)
    if leg is None or leg.org_id != org_id:
        raise NotFound(f"no call with call_control_id '{call_control_id}'", field=field)
    if not leg.is_alive:
        raise CallEnded("Call has already ended", field=field)
    return leg


def _participant(core: Core, record: Conference, call_control_id: str, field: str) -> Leg:
    leg = _leg(core, record.org_id, call_control_id, field)
    if leg.room_id != record.room_id:
        raise InvalidState(
            f"call '{call_control_id}' is not a participant of this conference",
            field=field,
            code=INVALID_STATE_CODE,
        )
    return leg


def _whisper_targets(core: Core, record: Conference, ids: tuple[str, ...]) -> None:
    """A supervisor whispers to participants of its conference (the SDK's
    whisper_call_control_ids), checked when its role is set; one that leaves later simply no
    longer hears it."""
    for call_control_id in ids:
        _participant(core, record, call_control_id, "whisper_call_control_ids")


def _joining(core: Core, record: Conference, command: JoinParticipant) -> Leg:
    _whisper_targets(core, record, command.whisper_to)
    leg = _leg(core, record.org_id, command.call_control_id, "call_control_id")
    require(leg.state, Trigger.JOIN_CONFERENCE, field="call_control_id")
    if leg.room_id == record.room_id:
        raise InvalidState(
            "the call is already a participant of this conference",
            field="call_control_id",
            code=INVALID_STATE_CODE,
        )
    if len(members(core, record)) >= record.max_participants:
        raise InvalidState(
            f"the conference has its max_participants ({record.max_participants})",
            field="call_control_id",
            code=INVALID_STATE_CODE,
        )
    return leg


def _create(core: Core, leg: Leg, command: CreateConference) -> None:
    leg = core.with_client_state(leg, command.client_state)
    room_id = core.new_room_id(RoomKind.CONFERENCE)
    record = conference_events.new_record(
        core, room_id, leg.org_id, leg, command.name, max_participants=command.max_participants
    )
    record = replace(record, beep_enabled=command.beep_enabled)
    conference_events.opened(core, record, leg)
    legs.join_conference(core, leg, room_id)


def _join(core: Core, record: Conference, leg: Leg, command: JoinParticipant) -> None:
    # The SDK's join: client_state "will be updated for the participant call leg".
    leg = core.with_client_state(leg, command.client_state)
    leg = core.update(leg, conference_beep=command.beep_enabled)
    legs.join_conference(core, leg, record.room_id)
    leg = core.update(core.legs[leg.call_control_id], muted=command.mute)
    supervision.set_role(core, leg, command.role, command.whisper_to)


def _mute(core: Core, chosen: list[Leg], muted: bool) -> None:
    for leg in chosen:
        core.update(core.legs[leg.call_control_id], muted=muted)
    if chosen:
        record = conference_events.record_of(core, chosen[0].room_id or "")
        if record is not None:
            core.records[record.conference_id] = replace(record, updated_at=core.now)


def _update(core: Core, record: Conference, leg: Leg, command: UpdateSupervisor) -> None:
    supervision.set_role(core, leg, command.role, command.whisper_to)
    core.records[record.conference_id] = replace(record, updated_at=core.now)


def _end(core: Core, record: Conference) -> None:
    core.records[record.conference_id] = replace(record, end_reason="ended_via_api")
    for call_control_id in members(core, record):
        leg = core.live(call_control_id)
        if leg is None or next_state(leg.state, Trigger.HANGUP) is None:
            continue
        legs.end_leg(
            core,
            leg,
            Trigger.HANGUP,
            HangupCause.NORMAL_CLEARING,
            leg.our_side,
            provider=HangupCall(call_control_id),
        )
