"""Output effects: what the runtime must do after the machine handled an input.

The machine returns them in order; the runtime carries them out in that order, so webhooks of
one leg leave in emission order. Four families:

- provider calls: ``AnswerCall``, ``HangupCall``, ``RejectCall``, ``DialCall``;
- media plane: ``JoinRoom``/``LeaveRoom`` (mixer membership), ``SetOverlay``/``ClearOverlay``
  (ringback and playback to one listener), ``SendDtmf`` (digits queued on a leg, as its far
  end will hear them), ``SetDtmfMute`` (strip DTMF from what one listener
  hears), ``SetAudience`` (who in its room hears the leg), ``RelayDtmf`` (a peer's key
  press, to one listener), ``StartRecording``/``StopRecording``/``PauseRecording``,
  ``StartAppStream``/``StopAppStream`` (the leg's audio to the application's websocket),
  ``StreamDtmf`` (a key the leg pressed, to each of its application streams);
- ``EmitWebhook``: a Call Control v2 event for the application;
- timers: ``StartTimer``/``CancelTimer``, answered later with ``TimerFired``.

Mixer membership follows one rule: a leg is in the mixer's room exactly while it is a member
of a room *and* its media stream is live. So ``JoinRoom`` comes at bridge time when media is
already up, or at ``MediaStarted`` when the bridge came first; the bridge itself never waits
and never fails for missing media.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from engine.machine.model import DtmfSource, OverlaySource, RecordingOptions, RejectCause, TimerKey
from engine.machine.streaming_commands import StreamSpec


@dataclass(frozen=True, slots=True)
class AnswerCall:
    call_control_id: str


@dataclass(frozen=True, slots=True)
class RestartMedia:
    """Ask the provider to open the leg's media stream again (the first one never came, failed,
    or dropped). How is the provider's business (a new stream command, new call instructions)."""

    call_control_id: str


@dataclass(frozen=True, slots=True)
class HangupCall:
    """End the leg at its provider. Best effort: "already ended" there counts as done."""

    call_control_id: str


@dataclass(frozen=True, slots=True)
class RejectCall:
    call_control_id: str
    cause: RejectCause


@dataclass(frozen=True, slots=True, kw_only=True)
class DialCall:
    call_control_id: str
    org_id: int
    connection_id: str
    from_: str
    to: str  # +E.164, sip:, or ws:// / wss:// for a websocket agent leg
    timeout_secs: int


#: The overlay tag of a leg's outgoing digits; clearing it empties the leg's digit queue.
DTMF_TAG = "dtmf"
#: The overlay of a held leg's tone on hold: set when it enters the state, cleared when it leaves.
HOLD_TAG = "hold"
#: The overlay of a conference participant's hold audio (the conference ``hold`` action).
CONFERENCE_HOLD_TAG = "conference-hold"


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Queue ``digits`` to sound in what this leg's far end hears, after any sent before."""

    call_control_id: str
    digits: str
    duration_millis: int = 250


@dataclass(frozen=True, slots=True)
class RelayDtmf:
    """A room peer of this listener pressed ``digit``: let the listener learn of it.

    Provider-neutral: the media plane tells a listener whose media carries key presses as
    messages (a websocket agent: Media Streams ``dtmf``) with a message, whatever the source;
    any other listener gets regenerated tones for an ``OUT_OF_BAND`` digit only, since an
    ``IN_BAND`` one is in the audio it hears already.
    """

    call_control_id: str
    digit: str
    source: DtmfSource


@dataclass(frozen=True, slots=True)
class JoinRoom:
    call_control_id: str
    room_id: str


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    call_control_id: str
    room_id: str


@dataclass(frozen=True, slots=True)
class SetDtmfMute:
    """While muted, the mixer strips DTMF tones from what this leg hears (in-band digits)."""

    call_control_id: str
    muted: bool


@dataclass(frozen=True, slots=True)
class SetAudience:
    """Who in its mixer room hears the leg (``heard_by``; None: everyone) and whether it hears
    nobody there (``deaf``: a held participant, who hears only its hold audio), as decided by
    ``engine.machine.hearing`` (mute, hold, supervisor roles). Derived in ``Core.put`` while the
    leg is in the mixer, so each new stream of the leg gets it again after its ``JoinRoom``."""

    call_control_id: str
    heard_by: frozenset[str] | None
    deaf: bool = False


@dataclass(frozen=True, slots=True)
class SetOverlay:
    """Play `source` to this listener on top of its room's mix, under `tag` (one per source).

    `loop` None repeats until cleared. Overlays play whether or not the leg is in a room, once
    its media is live; the runtime reports the end of a playback with ``PlaybackEnded``.
    """

    call_control_id: str
    tag: str
    source: OverlaySource
    loop: int | None = None


@dataclass(frozen=True, slots=True)
class ClearOverlay:
    call_control_id: str
    tag: str


@dataclass(frozen=True, slots=True)
class RoomMix:
    """What a conference's recording takes: room ``room_id``'s mix as a silent listener in it
    hears it (engine.media_plane.room_recordings); with ``creator`` (channels dual) that leg on
    the first channel and the rest on the second."""

    room_id: str
    creator: str | None = None


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Record a leg (``call_control_id``), or with ``room`` a conference (``call_control_id``
    is then the conference's id, as in the recording's other effects and events)."""

    call_control_id: str
    recording_id: str
    options: RecordingOptions
    org_id: int  # whose recordings directory the file goes in
    room: RoomMix | None = None


@dataclass(frozen=True, slots=True)
class StopRecording:
    call_control_id: str  # a leg's, or a conference's
    recording_id: str


@dataclass(frozen=True, slots=True)
class PauseRecording:
    """The recording stops (``paused``) or goes on taking its audio, in the same file."""

    call_control_id: str
    recording_id: str
    paused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StartAppStream:
    """Open the application's websocket (``spec.url``) and stream the leg's audio to it in Call
    Control v2's media-streaming format; what it sends back plays to ``listeners``. The runtime
    reports the outcome with ``AppStreamChanged``. ``start`` is what the start frame says of
    the leg (call_control_id, call_session_id, from, to, client_state)."""

    call_control_id: str
    stream_id: str
    spec: StreamSpec
    listeners: tuple[str, ...]
    start: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class StopAppStream:
    """Send the application's websocket its stop frame and close it (nothing is reported)."""

    call_control_id: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class StreamDtmf:
    """A key the leg pressed, told to one of its application streams (a ``dtmf`` frame)."""

    call_control_id: str
    stream_id: str
    digit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitWebhook:
    """One Call Control v2 event for the application: the runtime wraps `payload` in
    ``{"data": {"record_type": "event", "event_type", "id", "occurred_at", "payload"}}``.

    Webhooks leave in order per ``order_key``: the leg's call_control_id, or for a conference's
    events its room id (all of one conference's events in order, whichever leg they name)."""

    call_control_id: str
    org_id: int
    webhook_url: str
    event_type: str
    payload: dict[str, object]
    occurred_at: float
    order_key: str | None = None  # None: call_control_id


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: TimerKey
    delay_s: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: TimerKey


Effect: TypeAlias = (
    AnswerCall
    | RestartMedia
    | HangupCall
    | RejectCall
    | DialCall
    | SendDtmf
    | RelayDtmf
    | JoinRoom
    | LeaveRoom
    | SetDtmfMute
    | SetAudience
    | SetOverlay
    | ClearOverlay
    | StartRecording
    | StopRecording
    | PauseRecording
    | StartAppStream
    | StopAppStream
    | StreamDtmf
    | EmitWebhook
    | StartTimer
    | CancelTimer
)
