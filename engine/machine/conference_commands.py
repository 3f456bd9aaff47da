"""The Conferences API's commands, parsed from Call Control v2 bodies: create, join, leave,
mute, unmute, hold, unhold, play, stop, send_dtmf, update, end and record_start, record_stop,
record_pause, record_resume (``POST /v2/conferences`` and
``/v2/conferences/{id}/actions/{action}``).

Fields and paths are the official SDK's (its ``types/conference_create_params.py``,
``types/conferences/action_{join,leave,mute,unmute,hold,unhold,play,stop,send_dtmf,
end_conference}_params.py``, ``resources/conferences/actions.py``: ``end_conference`` posts to
``actions/end``). What callbridge carries out is parsed; every other field the SDK has
(``hold_audio_url``, ``duration_minutes``, ``region``,
``end_conference_on_exit``, the whisper roles, ...) is refused with 422 naming it, so nothing is
accepted and ignored. ``hold_audio_url``/``hold_media_name`` of create stay refused: the SDK says
they take effect "only when start_conference_on_create is set to false", which callbridge does
not support; the ``hold`` action's own ``audio_url``/``media_name`` are carried out.

``beep_enabled`` (create, and join to override it for one participant): ``always``,
``never`` (the default), ``on_enter``, ``on_exit``, the SDK's values; the beep is callbridge's
1 kHz for 250 ms (Call Control names none), played to everyone in the room.

Bounds: ``max_participants`` 2 to 800, 250 by default (the SDK's docstring). ``name`` at most
255 characters (callbridge's bound; the SDK states none). ``start_conference_on_create`` may only
be true, its default: a conference that waits, its participants on hold, is not implemented.
``supervisor_role`` and ``whisper_call_control_ids`` on join, and the ``update`` action, are
parsed in ``engine.machine.supervision_commands``.

Recording (the SDK's ``action_record_{start,stop,pause,resume}_params.py``): record_start takes
``format`` (required), ``channels`` (``single``, Call Control v2's reference's default, or
``dual``: "the conference creator on the first channel, and the rest on the second channel"),
``custom_file_name`` (1 to 40 characters, a bare file name as a leg's record_start takes it),
``play_beep``, ``trim`` and ``command_id``; it has no ``client_state``. record_stop takes
``client_state``, ``command_id`` and ``recording_id``; record_pause and record_resume
``command_id`` and ``recording_id``. ``region`` (callbridge has one) and anything else is refused
(422 naming it: ``Body.refuse_unread``). What each does: ``engine.machine.conference_recording``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from engine.errors import NotFound
from engine.machine.command_body import (
    Body,
    CommandBase,
    ParameterError,
    parse_audio,
    parse_digits,
    parse_loop,
)
from engine.machine.model import RecordingOptions, SupervisorRole
from engine.machine.supervision_commands import UpdateSupervisor, conference_role, parse_update

MAX_NAME = 255


#: The SDK's beep_enabled values.
BEEPS = ("always", "never", "on_enter", "on_exit")


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateConference(CommandBase):
    call_control_id: str
    name: str
    max_participants: int = 250
    beep_enabled: str = "never"


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinParticipant(CommandBase):
    call_control_id: str
    mute: bool = False
    beep_enabled: str | None = None  # overrides the conference's for this participant
    role: SupervisorRole = SupervisorRole.NONE
    whisper_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveParticipant(CommandBase):
    call_control_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MuteParticipants(CommandBase):
    """mute (``muted`` true) or unmute; no ids means every participant (the SDK's docstring:
    "When empty all participants will be muted")."""

    call_control_ids: tuple[str, ...]
    muted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EndConference(CommandBase):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldParticipants(CommandBase):
    """hold (``held`` true, with the audio they hear: ``audio_url`` or ``media_name``, else the
    built-in tone on hold) or unhold. No ids: every participant (hold's "When empty all
    participants will be placed on hold"; unhold requires them)."""

    call_control_ids: tuple[str, ...]
    held: bool
    audio_url: str | None = None
    media_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayConference(CommandBase):
    """play: to ``call_control_ids``, or "the entire conference" when none are given."""

    call_control_ids: tuple[str, ...]
    audio_url: str | None
    media_name: str | None
    loop: int | None = 1  # None: "infinity"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopConference(CommandBase):
    call_control_ids: tuple[str, ...]  # none: everyone


@dataclass(frozen=True, slots=True, kw_only=True)
class ConferenceDtmf(CommandBase):
    call_control_ids: tuple[str, ...]  # none: "DTMF will be sent to all participants"
    digits: str
    duration_millis: int = 250


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordConference(CommandBase):
    """record_start: the conference's mix into one file (engine.machine.conference_recording)."""

    options: RecordingOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class StopConferenceRecording(CommandBase):
    recording_id: str | None = None  # the one in progress, if given


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseConferenceRecording(CommandBase):
    """record_pause (``paused`` true) or record_resume: one file either way."""

    paused: bool
    recording_id: str | None = None


ConferenceCommand: TypeAlias = (
    CreateConference
    | JoinParticipant
    | LeaveParticipant
    | MuteParticipants
    | EndConference
    | HoldParticipants
    | PlayConference
    | StopConference
    | ConferenceDtmf
    | UpdateSupervisor
    | RecordConference
    | StopConferenceRecording
    | PauseConferenceRecording
)


def parse_create(body: Mapping[str, object]) -> CreateConference:
    b = Body(body, allow_private_urls=False)
    b.only(
        (
            "call_control_id",
            "name",
            "max_participants",
            "start_conference_on_create",
            "beep_enabled",
        )
    )
    if not b.flag("start_conference_on_create", True):
        raise ParameterError(
            "'start_conference_on_create' false (a conference that waits, its participants on"
            " hold) is not supported",
            field="start_conference_on_create",
        )
    return CreateConference(
        call_control_id=b.req_string("call_control_id"),
        name=_name(b),
        max_participants=b.req_integer("max_participants", 2, 800, 250),
        beep_enabled=b.choice("beep_enabled", BEEPS, "never"),
        **b.common(),
    )


def _name(b: Body) -> str:
    name = b.req_string("name")
    if len(name) > MAX_NAME:
        raise ParameterError(f"'name' must be at most {MAX_NAME} characters", field="name")
    return name


def _join(b: Body) -> JoinParticipant:
    b.only(
        ("call_control_id", "mute", "supervisor_role", "whisper_call_control_ids", "beep_enabled")
    )
    role, whisper_to = conference_role(b, required=False)
    return JoinParticipant(
        call_control_id=b.req_string("call_control_id"),
        mute=b.flag("mute"),
        beep_enabled=b.opt_choice("beep_enabled", BEEPS),
        role=role,
        whisper_to=whisper_to,
        **b.common(),
    )


def _leave(b: Body) -> LeaveParticipant:
    b.only(("call_control_id",))
    _refuse(b, "client_state")
    return LeaveParticipant(call_control_id=b.req_string("call_control_id"), **b.common())


def _mute(muted: bool) -> Callable[[Body], MuteParticipants]:
    def parse(b: Body) -> MuteParticipants:
        b.only(("call_control_ids",))
        _refuse(b, "client_state", "command_id")
        return MuteParticipants(call_control_ids=_ids(b, "call_control_ids"), muted=muted)

    return parse


def _end(b: Body) -> EndConference:
    b.only(())
    _refuse(b, "client_state")
    return EndConference(**b.common())


def _hold(b: Body) -> HoldParticipants:
    b.only(("call_control_ids", "audio_url", "media_name"))
    _refuse(b, "client_state", "command_id")
    audio_url, media_name = parse_audio(b, required=False)
    return HoldParticipants(
        call_control_ids=_ids(b, "call_control_ids"),
        held=True,
        audio_url=audio_url,
        media_name=media_name,
    )


def _unhold(b: Body) -> HoldParticipants:
    b.only(("call_control_ids",))
    _refuse(b, "client_state", "command_id")
    ids = _ids(b, "call_control_ids")
    if not ids:  # Required in the SDK: "Enter each call control ID to be unheld."
        raise ParameterError("'call_control_ids' is required", field="call_control_ids")
    return HoldParticipants(call_control_ids=ids, held=False)


def _play(b: Body) -> PlayConference:
    b.only(("call_control_ids", "audio_url", "media_name", "loop"))
    _refuse(b, "client_state", "command_id")
    audio_url, media_name = parse_audio(b)
    return PlayConference(
        call_control_ids=_ids(b, "call_control_ids"),
        audio_url=audio_url,
        media_name=media_name,
        loop=parse_loop(b),
    )


def _stop(b: Body) -> StopConference:
    b.only(("call_control_ids",))
    _refuse(b, "client_state", "command_id")
    return StopConference(call_control_ids=_ids(b, "call_control_ids"))


def _send_dtmf(b: Body) -> ConferenceDtmf:
    b.only(("call_control_ids", "digits", "duration_millis"))
    # The SDK has client_state ("add state to every subsequent webhook") but names no webhook
    # that sending digits would produce, nor whose state it is: refused rather than guessed.
    _refuse(b, "client_state", "command_id")
    digits, duration = parse_digits(b)
    return ConferenceDtmf(
        call_control_ids=_ids(b, "call_control_ids"), digits=digits, duration_millis=duration
    )


#: The SDK's ``format`` and ``channels`` values for record_start.
RECORD_FORMATS = ("wav", "mp3")
RECORD_CHANNELS = ("single", "dual")


def _record_start(b: Body) -> RecordConference:
    _refuse(b, "client_state")
    if not b.has("format"):
        raise ParameterError("'format' is required", field="format", code="10004")
    options = RecordingOptions(
        format=b.choice("format", RECORD_FORMATS, ""),
        channels=b.choice("channels", RECORD_CHANNELS, "single"),
        trim=b.opt_choice("trim", ("trim-silence",)),
        custom_file_name=b.file_name("custom_file_name"),
        play_beep=b.flag("play_beep"),
    )
    command = RecordConference(options=options, command_id=b.string("command_id"))
    b.refuse_unread()
    return command


def _record_stop(b: Body) -> StopConferenceRecording:
    command = StopConferenceRecording(recording_id=b.string("recording_id"), **b.common())
    b.refuse_unread()
    return command


def _record_pause(paused: bool) -> Callable[[Body], PauseConferenceRecording]:
    def parse(b: Body) -> PauseConferenceRecording:
        _refuse(b, "client_state")
        command = PauseConferenceRecording(
            paused=paused, recording_id=b.string("recording_id"), command_id=b.string("command_id")
        )
        b.refuse_unread()
        return command

    return parse


def _ids(b: Body, name: str) -> tuple[str, ...]:
    value = b.raw(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
        raise ParameterError(f"'{name}' must be an array of call_control_ids", field=name)
    return tuple(dict.fromkeys(value))  # each once, in order


def _refuse(b: Body, *names: str) -> None:
    """Fields every other command takes but the SDK does not list for this one."""
    for name in names:
        if b.has(name):
            raise ParameterError(f"'{name}' is not supported by this command", field=name)


_ACTIONS: dict[str, Callable[[Body], ConferenceCommand]] = {
    "join": _join,
    "leave": _leave,
    "mute": _mute(True),
    "unmute": _mute(False),
    "end": _end,
    "hold": _hold,
    "unhold": _unhold,
    "play": _play,
    "stop": _stop,
    "send_dtmf": _send_dtmf,
    "update": parse_update,
    "record_start": _record_start,
    "record_stop": _record_stop,
    "record_pause": _record_pause(True),
    "record_resume": _record_pause(False),
}


def parse_action(
    action: str,
    body: Mapping[str, object],
    *,
    allow_private_urls: bool = False,
    media_dir: str | None = None,
) -> ConferenceCommand:
    """The command of ``POST /v2/conferences/{id}/actions/{action}``; an action callbridge does
    not carry out is not found, as an unknown path is. Audio URLs as ``parse_command`` takes
    them (the URL policy unless ``allow_private_urls``; ``file://`` inside ``media_dir``)."""
    parse = _ACTIONS.get(action)
    if parse is None:
        raise NotFound(f"no conference action '{action}'")
    return parse(Body(body, allow_private_urls=allow_private_urls, media_dir=media_dir))
