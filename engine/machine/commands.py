"""Validated commands for every Call Control action, parsed from Call Control v2 JSON bodies.

``parse_command(action, body)`` builds the command of ``POST /v2/calls/{id}/actions/{action}``
(and of the ``PUT`` client_state_update); ``parse_dial(body)`` builds ``POST /v2/calls``. Both
check types and values the way Call Control v2 does and raise ``ParameterError`` naming the field:
code 10004 for a missing required field, 10015 for a bad value, 10016 for a number that is not
E.164. A field no parser reads is refused (422 naming it): nothing is accepted and ignored.

Every command carries ``client_state`` (base64, echoed on later webhooks) and ``command_id``
(a repeat on the same leg within 60 s is carried out once). ``JoinConference`` has no action:
the runtime uses it for the default routing of calls whose bridge has no webhook URL.

The DTMF gathers (``gather``, ``gather_using_audio``, ``gather_stop``) are parsed in
``engine.machine.gather_commands``, ``streaming_start`` and ``streaming_stop`` in
``engine.machine.streaming_commands``.

callbridge's own extension: ``unbridge`` (Call Control v2 has none) takes a leg out of its room.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from engine.errors import NotFound
from engine.machine.command_body import Body, CommandBase, parse_audio, parse_digits, parse_loop
from engine.machine.command_body import (
    ParameterError as ParameterError,  # raised by the parsers here
)
from engine.machine.conference_commands import ConferenceCommand
from engine.machine.gather_commands import (
    Gather as Gather,
)
from engine.machine.gather_commands import (
    GatherStop as GatherStop,
)
from engine.machine.gather_commands import (
    GatherUsingAudio as GatherUsingAudio,
)
from engine.machine.gather_commands import (
    parse_gather,
    parse_gather_stop,
    parse_gather_using_audio,
)
from engine.machine.model import (
    DEFAULT_TIME_LIMIT_SECS,
    RINGTONES,
    MuteDtmf,
    RecordingOptions,
    RejectCause,
    TargetLegs,
)
from engine.machine.streaming_commands import (
    StreamingStart as StreamingStart,
)
from engine.machine.streaming_commands import (
    StreamingStop as StreamingStop,
)
from engine.machine.streaming_commands import parse_streaming_start, parse_streaming_stop
from engine.machine.supervision_commands import (
    Supervision,
    parse_dial_supervision,
    parse_switch,
)
from engine.machine.supervision_commands import (
    SwitchSupervisorRole as SwitchSupervisorRole,
)

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
RECORD_FORMATS = ("wav", "mp3")
RECORD_CHANNELS = ("single", "dual")
RECORD_TRACKS = ("both", "inbound", "outbound")


_Command = CommandBase


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(_Command):
    webhook_url: str | None = None  # replaces the leg's webhook URL for later events


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridge(_Command):
    call_control_id: str | None = None  # the other leg (B); exactly one of it and `queue`
    queue: str | None = None
    park_after_unbridge: bool = False
    hold_after_unbridge: bool = False
    play_ringtone: bool = False
    ringtone: str = "us"
    mute_dtmf: MuteDtmf = MuteDtmf.NONE
    prevent_double_bridge: bool = False
    record: RecordingOptions | None = None  # record="record-from-answer" with its record_*


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbridge(_Command):
    """The leg leaves its room and is parked; the legs left behind follow their own policy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(_Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(_Command):
    cause: RejectCause


@dataclass(frozen=True, slots=True, kw_only=True)
class Enqueue(_Command):
    queue_name: str
    max_wait_time_secs: int | None = None
    max_size: int | None = None  # only used when the queue is created


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveQueue(_Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStart(_Command):
    options: RecordingOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStop(_Command):
    recording_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordPause(_Command):
    """record_pause (paused=True) or record_resume: the recording in progress stops, or goes
    on, taking the leg's audio; one file, one call.recording.saved, as Call Control describes."""

    paused: bool
    recording_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackStart(_Command):
    audio_url: str | None = None  # http(s), or file:// in the media directory
    media_name: str | None = None
    loop: int | None = 1  # None = "infinity"
    overlay: bool = False
    target_legs: TargetLegs = TargetLegs.SELF
    stop: str | None = None  # current | all: what to stop before this one starts
    audio_type: str | None = None
    cache_audio: bool = True  # callbridge's default (Call Control documents none)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackStop(_Command):
    overlay: bool = False
    stop: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendDtmf(_Command):
    digits: str
    duration_millis: int = 250


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStateUpdate(_Command):
    """The parser requires `client_state`; the machine stores it like any command's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinConference(_Command):
    room_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial(_Command):
    connection_id: str
    from_: str
    to: str
    link_to: str | None = None
    bridge_intent: bool = False
    bridge_on_answer: bool = False
    park_after_unbridge: bool = False
    prevent_double_bridge: bool = False
    timeout_secs: int = 30
    time_limit_secs: int = DEFAULT_TIME_LIMIT_SECS
    webhook_url: str | None = None
    supervision: Supervision | None = None


Command: TypeAlias = (
    Answer
    | Bridge
    | Unbridge
    | Hangup
    | Reject
    | Enqueue
    | LeaveQueue
    | RecordStart
    | RecordStop
    | RecordPause
    | PlaybackStart
    | PlaybackStop
    | SendDtmf
    | ClientStateUpdate
    | JoinConference
    | Gather
    | GatherUsingAudio
    | GatherStop
    | SwitchSupervisorRole
    | StreamingStart
    | StreamingStop
)
# What the runtime feeds the machine: a leg's command or a conference's.
AnyCommand: TypeAlias = Command | ConferenceCommand


def _recording(body: Body, prefix: str, max_length: int) -> RecordingOptions:
    """Recording options from `record_start` (no prefix) or bridge's `record_*` fields. Call Control
    v2's bridge has no beep field (the SDK's ActionBridgeParams), so bridge refuses `play_beep`."""
    track_field = "record_track" if prefix else "recording_track"
    if prefix and body.has("play_beep"):
        raise ParameterError(
            "'play_beep' is a record_start field; bridge's record-from-answer plays no beep",
            field="play_beep",
        )
    return RecordingOptions(
        format=body.choice(f"{prefix}format", RECORD_FORMATS, "mp3"),
        channels=body.choice(f"{prefix}channels", RECORD_CHANNELS, "dual"),
        track=body.choice(track_field, RECORD_TRACKS, "both"),
        max_length_secs=body.req_integer(f"{prefix}max_length", 0, max_length, 0),
        timeout_secs=body.req_integer(f"{prefix}timeout_secs", 0, None, 0),
        trim=body.opt_choice(f"{prefix}trim", ("trim-silence",)),
        custom_file_name=body.file_name(f"{prefix}custom_file_name"),
        play_beep=not prefix and body.flag("play_beep"),
    )


def _answer(b: Body) -> Command:
    return Answer(webhook_url=b.url("webhook_url", ("http://", "https://")), **b.common())


def _bridge(b: Body) -> Command:
    other, queue = b.string("call_control_id"), b.string("queue")
    for name, value in (("call_control_id", other), ("queue", queue)):
        if value == "":
            raise ParameterError(f"'{name}' must not be empty", field=name)
    if other is not None and queue is not None:
        raise ParameterError("'queue' cannot be combined with 'call_control_id'", field="queue")
    if other is None and queue is None:
        raise ParameterError("'call_control_id' is required", field="call_control_id", code="10004")
    if b.has("video_room_id"):
        raise ParameterError("video rooms are not supported", field="video_room_id")
    # record_* fields are validated even without `record`, then only used with it.
    options = _recording(b, "record_", 43200)
    record = b.opt_choice("record", ("record-from-answer",))
    return Bridge(
        call_control_id=other,
        queue=queue,
        park_after_unbridge=b.self_only("park_after_unbridge"),
        hold_after_unbridge=b.flag("hold_after_unbridge"),
        play_ringtone=b.flag("play_ringtone"),
        ringtone=b.choice("ringtone", RINGTONES, "us"),
        mute_dtmf=MuteDtmf(b.choice("mute_dtmf", tuple(m.value for m in MuteDtmf), "none")),
        prevent_double_bridge=b.flag("prevent_double_bridge"),
        record=options if record else None,
        **b.common(),
    )


def _unbridge(b: Body) -> Command:
    # Accepted (and checked) for symmetry with bridge: an unbridged leg is parked either way.
    b.self_only("park_after_unbridge")
    return Unbridge(**b.common())


def _reject(b: Body) -> Command:
    causes = tuple(c.value for c in RejectCause)
    if not b.has("cause"):
        raise ParameterError("'cause' is required", field="cause", code="10004")
    return Reject(cause=RejectCause(b.choice("cause", causes, "")), **b.common())


def _enqueue(b: Body) -> Command:
    return Enqueue(
        queue_name=b.req_string("queue_name"),
        max_wait_time_secs=b.integer("max_wait_time_secs", 1, None, None),
        max_size=b.integer("max_size", 1, None, None),
        **b.common(),
    )


def _record_start(b: Body) -> Command:
    for name in ("format", "channels"):  # required by record_start, defaulted elsewhere
        if not b.has(name):
            raise ParameterError(f"'{name}' is required", field=name, code="10004")
    return RecordStart(options=_recording(b, "", 14400), **b.common())


def _record_stop(b: Body) -> Command:
    return RecordStop(recording_id=b.string("recording_id"), **b.common())


def _record_pause(paused: bool) -> Callable[[Body], Command]:
    # Call Control v2's pause/resume recording parameters (its SDK's
    # ActionPauseRecordingParams, ActionResumeRecordingParams): client_state, command_id and
    # recording_id, nothing else.
    return lambda b: RecordPause(paused=paused, recording_id=b.string("recording_id"), **b.common())


def _audio_type(b: Body, audio_url: str | None) -> str | None:
    """Call Control's ``audio_type``: what the audio at ``audio_url`` must be, checked against its
    bytes when fetched. A file:/// file is read as WAV only, and a media_name has no type."""
    audio_type = b.opt_choice("audio_type", ("mp3", "wav"))
    if audio_type is None or (audio_type == "wav" and audio_url is not None):
        return audio_type
    if audio_url is None or audio_url.startswith("file:"):
        what = "'media_name'" if audio_url is None else "a file:/// 'audio_url' (WAV only)"
        raise ParameterError(
            f"'audio_type' {audio_type!r} does not apply to {what}", field="audio_type"
        )
    return audio_type


def _playback_start(b: Body) -> Command:
    audio_url, media_name = parse_audio(b)
    return PlaybackStart(
        audio_url=audio_url,
        media_name=media_name,
        loop=parse_loop(b),
        overlay=b.flag("overlay"),
        target_legs=TargetLegs(b.choice("target_legs", tuple(t.value for t in TargetLegs), "self")),
        stop=b.opt_choice("stop", ("current", "all")),
        audio_type=_audio_type(b, audio_url),
        cache_audio=b.flag("cache_audio", default=True),
        **b.common(),
    )


def _playback_stop(b: Body) -> Command:
    return PlaybackStop(
        overlay=b.flag("overlay"), stop=b.choice("stop", ("current", "all"), "all"), **b.common()
    )


def _send_dtmf(b: Body) -> Command:
    digits, duration = parse_digits(b)
    return SendDtmf(digits=digits, duration_millis=duration, **b.common())


def _client_state_update(b: Body) -> Command:
    state = b.base64("client_state", required=True)
    return ClientStateUpdate(client_state=state, command_id=b.string("command_id"))


_PARSERS: dict[str, Callable[[Body], Command]] = {
    "answer": _answer,
    "bridge": _bridge,
    "unbridge": _unbridge,
    "hangup": lambda b: Hangup(**b.common()),
    "reject": _reject,
    "enqueue": _enqueue,
    "leave_queue": lambda b: LeaveQueue(**b.common()),
    "record_start": _record_start,
    "record_stop": _record_stop,
    "record_pause": _record_pause(True),
    "record_resume": _record_pause(False),
    "playback_start": _playback_start,
    "playback_stop": _playback_stop,
    "send_dtmf": _send_dtmf,
    "client_state_update": _client_state_update,
    "gather": parse_gather,
    "gather_using_audio": parse_gather_using_audio,
    "gather_stop": parse_gather_stop,
    "switch_supervisor_role": parse_switch,
    "streaming_start": parse_streaming_start,
    "streaming_stop": parse_streaming_stop,
}

ACTIONS: tuple[str, ...] = tuple(_PARSERS)


def parse_command(
    action: str,
    body: Mapping[str, object],
    *,
    allow_private_urls: bool = False,
    media_dir: str | None = None,
) -> Command:
    """The validated command for `action`; ``NotFound`` for an action callbridge lacks.

    URLs callbridge will connect to must pass the URL policy unless ``allow_private_urls``;
    ``file://`` audio must be in ``media_dir`` (an absolute path; None: no file:// at all).
    """
    parser = _PARSERS.get(action)
    if parser is None:
        raise NotFound(f"unknown action '{action}'", field="action")
    b = Body(body, allow_private_urls=allow_private_urls, media_dir=media_dir)
    command = parser(b)
    b.refuse_unread()  # nothing is accepted and ignored
    return command


def parse_number(b: Body, name: str, schemes: tuple[str, ...]) -> str:
    """A destination field: a +E.164 number or a URL of one of ``schemes``."""
    value = b._get(name, True)
    if isinstance(value, list):
        raise ParameterError(f"'{name}' must be a single destination", field=name)
    text = b.req_string(name)
    if not (E164.match(text) or text.startswith(schemes)):
        raise ParameterError(f"'{name}' must be a +E.164 number", field=name, code="10016")
    return b.reachable(name, text) if text.startswith(("ws://", "wss://")) else text


def parse_dial(body: Mapping[str, object], *, allow_private_urls: bool = False) -> Dial:
    """The validated body of ``POST /v2/calls``.

    `to` is a +E.164 number, a SIP URI, or a ws:// / wss:// URL for a websocket agent leg.
    `link_to` is required by `bridge_intent`, `bridge_on_answer` and `park_after_unbridge`.
    A websocket `to` and `webhook_url` must pass the URL policy unless ``allow_private_urls``.
    """
    b = Body(body, allow_private_urls=allow_private_urls)
    dial = Dial(
        connection_id=b.req_string("connection_id"),
        from_=parse_number(b, "from", ("sip:", "sips:")),
        to=parse_number(b, "to", ("sip:", "sips:", "ws://", "wss://")),
        link_to=b.string("link_to"),
        bridge_intent=b.flag("bridge_intent"),
        bridge_on_answer=b.flag("bridge_on_answer"),
        park_after_unbridge=b.self_only("park_after_unbridge"),
        prevent_double_bridge=b.flag("prevent_double_bridge"),
        timeout_secs=b.req_integer("timeout_secs", 5, 600, 30),
        time_limit_secs=b.req_integer("time_limit_secs", 30, 14400, DEFAULT_TIME_LIMIT_SECS),
        webhook_url=b.url("webhook_url", ("http://", "https://")),
        supervision=parse_dial_supervision(b),
        **b.common(),
    )
    if dial.supervision is not None and dial.bridge_on_answer:
        # Both say where the answered leg goes: one room or the other.
        raise ParameterError(
            "'bridge_on_answer' and 'supervise_call_control_id' cannot be used together",
            field="supervise_call_control_id",
        )
    needs_link = {
        "bridge_intent": dial.bridge_intent,
        "bridge_on_answer": dial.bridge_on_answer,
        "park_after_unbridge": dial.park_after_unbridge,
    }
    for name, used in needs_link.items():
        if used and not dial.link_to:
            raise ParameterError(
                f"'link_to' is required with '{name}'", field="link_to", code="10004"
            )
    b.refuse_unread()  # nothing is accepted and ignored
    return dial
