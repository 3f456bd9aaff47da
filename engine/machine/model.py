"""The call-control vocabulary: leg states, causes, and the records the machine keeps.

Everything here is a plain enum or a frozen, slotted dataclass. The machine
(``engine.machine.machine``) owns the only mutable container of them and replaces a record whenever
it changes, so a copy of its dictionaries is a complete snapshot and a refused command provably
changed nothing.

Times are float seconds since the Unix epoch, always passed in by the caller; nothing here reads
a clock. Ids are strings chosen by the caller (leg ids) or derived from counters (rooms,
playbacks, recordings), never random.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from engine.errors import InvalidState

# Call Control v2's `ringtone` enum for the bridge command: the ringback a caller hears while
# the far end rings. The media core owns the tones (media/tones.py); the engine only names them.
RINGTONES: tuple[str, ...] = (
    "at", "au", "be", "bg", "br", "ch", "cl", "cn", "cz", "de", "dk", "ee", "es", "fi", "fr",
    "gr", "hu", "il", "in", "it", "jp", "lt", "mx", "my", "nl", "no", "nz", "ph", "pl", "pt",
    "ru", "se", "sg", "th", "tw", "uk", "us-old", "us", "ve", "za",
)  # fmt: skip

DEFAULT_TIME_LIMIT_SECS = 14400  # Call Control v2's default and maximum leg duration (4 h)


class LegState(enum.Enum):
    """Where a leg is in its life. Transitions between them live in
    ``engine.machine.transitions``."""

    INITIATED = "initiated"  # incoming, ringing at callbridge: waiting for answer or reject
    DIALING = "dialing"  # outgoing, ringing at the far end
    ANSWERING = "answering"  # answer sent to the provider, its confirmation not yet arrived
    ANSWERED = "answered"  # up since its answer, never put in a room: parked, in Call Control words
    BRIDGING = "bridging"  # in a room, waiting for its ringing peer to answer (ringback)
    BRIDGED = "bridged"  # in a room with others: its audio is mixed
    PARKED = "parked"  # up, in no room, after an unbridge
    HELD = "held"  # up, in no room, after an unbridge with hold_after_unbridge
    QUEUED = "queued"  # up, waiting in a named queue
    HANGUP = "hangup"  # ended; kept for a while so commands get 90018, not 404


LIVE_STATES = frozenset(s for s in LegState if s is not LegState.HANGUP)


class Direction(enum.Enum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class HangupCause(enum.Enum):
    CALL_REJECTED = "call_rejected"
    NORMAL_CLEARING = "normal_clearing"
    ORIGINATOR_CANCEL = "originator_cancel"
    TIMEOUT = "timeout"
    TIME_LIMIT = "time_limit"
    USER_BUSY = "user_busy"
    NOT_FOUND = "not_found"
    NO_ANSWER = "no_answer"
    UNSPECIFIED = "unspecified"


class HangupSource(enum.Enum):
    CALLER = "caller"
    CALLEE = "callee"
    UNKNOWN = "unknown"


class RejectCause(enum.Enum):
    """The reject command's `cause`, with the SIP code and hangup cause each one reports."""

    CALL_REJECTED = "CALL_REJECTED"
    USER_BUSY = "USER_BUSY"
    NOT_FOUND = "NOT_FOUND"
    TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"

    @property
    def sip_code(self) -> str:
        return _REJECT_SIP[self]

    @property
    def hangup_cause(self) -> HangupCause:
        return _REJECT_HANGUP[self]


_REJECT_SIP = {
    RejectCause.CALL_REJECTED: "603",
    RejectCause.USER_BUSY: "486",
    RejectCause.NOT_FOUND: "404",
    RejectCause.TEMPORARILY_UNAVAILABLE: "480",
}
# Call Control v2's hangup_cause enum has no "temporarily unavailable": it reports unspecified.
_REJECT_HANGUP = {
    RejectCause.CALL_REJECTED: HangupCause.CALL_REJECTED,
    RejectCause.USER_BUSY: HangupCause.USER_BUSY,
    RejectCause.NOT_FOUND: HangupCause.NOT_FOUND,
    RejectCause.TEMPORARILY_UNAVAILABLE: HangupCause.UNSPECIFIED,
}


class MuteDtmf(enum.Enum):
    """Bridge's `mute_dtmf`, relative to the commanded leg (A): who must not hear DTMF."""

    NONE = "none"  # everyone hears DTMF
    BOTH = "both"  # neither A nor its peer hears the other's DTMF
    SELF = "self"  # A does not hear its peer's DTMF
    OPPOSITE = "opposite"  # the peer does not hear A's DTMF


class SupervisorRole(enum.Enum):
    """Who hears a supervisor (it hears everyone in its room in every role); the roles of the
    SDK's dial, switch_supervisor_role and conference join/update (engine.machine.hearing)."""

    NONE = "none"  # an ordinary participant: heard by all ("barge" is "the same as none")
    BARGE = "barge"  # heard by all
    WHISPER = "whisper"  # heard only by the legs it whispers to
    MONITOR = "monitor"  # heard by none


class DtmfSource(enum.Enum):
    IN_BAND = "in_band"  # detected in the audio by the media core: it is in the mix already
    OUT_OF_BAND = "out_of_band"  # a provider event (RFC 4733): not in the audio, must be relayed


class TargetLegs(enum.Enum):
    """Playback's `target_legs`: who hears it, relative to the commanded leg."""

    SELF = "self"
    OPPOSITE = "opposite"
    BOTH = "both"


class RoomKind(enum.Enum):
    BRIDGE = "bridge"  # two parties; when one leaves, the other follows its unbridge policy
    CONFERENCE = "conference"  # any number; members come and go, the rest stay


class TimerKind(enum.Enum):
    RING_TIMEOUT = "ring_timeout"  # dial's timeout_secs: unanswered outgoing leg
    TIME_LIMIT = "time_limit"  # time_limit_secs: answered duration cap
    QUEUE_WAIT = "queue_wait"  # enqueue's max_wait_time_secs
    RECORD_LIMIT = "record_limit"  # a recording's max_length
    MEDIA_WAIT = "media_wait"  # an answered leg without a media stream (streams.py)
    SETUP_TIMEOUT = "setup_timeout"  # an incoming leg not yet answered (leg_setup.py)
    GATHER_TIMEOUT = "gather_timeout"  # a gather's timeout_millis (gather.py)
    GATHER_DIGIT_WAIT = "gather_digit_wait"  # a gather's wait for its first or next digit


@dataclass(frozen=True, slots=True)
class TimerKey:
    """Names one timer. `tag` tells generations apart (a recording's id), so a late firing of
    a cancelled timer can never act on its successor."""

    call_control_id: str
    kind: TimerKind
    tag: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingOptions:
    """How to record: shared by record_start, bridge's record_* fields and the effect."""

    format: str = "mp3"  # wav | mp3
    channels: str = "dual"  # single | dual
    track: str = "both"  # both | inbound | outbound
    max_length_secs: int = 0  # 0 = no limit
    timeout_secs: int = 0  # silence that ends it once speech was heard (media.silence_timeout)
    trim: str | None = None  # "trim-silence"
    custom_file_name: str | None = None
    play_beep: bool = False  # a beep to the leg as it starts (engine.machine.media)


@dataclass(frozen=True, slots=True)
class OverlaySource:
    """Audio the mixer plays to one listener on top of its room's mix.

    kind "ringback": `name` is a ringtone country code; kind "file": `name` is an absolute local
    path (from a file:// audio_url); kind "url": `name` is an http(s) audio_url, fetched for
    organization `org_id` (engine.media_plane.audio_fetch); kind "media": `name` is a media_name the
    runtime resolves (built-in tones); kind "beep": a recording's start beep, played once; kind
    "hold": the tone on hold of a held leg (media.tones.HOLD_TONE), until it leaves the state.
    """

    kind: str
    name: str
    org_id: int | None = None
    audio_type: str | None = None  # kind "url": "wav" or "mp3", checked against the bytes
    cache: bool = True  # kind "url": playback_start's cache_audio (false: fetched every time)


@dataclass(frozen=True, slots=True)
class ActivePlayback:
    playback_id: str
    listeners: tuple[str, ...]  # legs whose overlay plays it
    media_url: str | None
    media_name: str | None
    overlay: bool
    # What it plays and to whom, so that it follows its leg into another room
    # (engine.machine.playback_rooms). None: stored by an older version; it stays where it is.
    target_legs: TargetLegs = TargetLegs.SELF
    source: OverlaySource | None = None
    loop: int | None = None


@dataclass(frozen=True, slots=True)
class QueuedPlayback:
    """A playback_start waiting for the one playing before it (Call Control queues them)."""

    source: OverlaySource
    loop: int | None
    target_legs: TargetLegs
    media_url: str | None
    media_name: str | None


@dataclass(frozen=True, slots=True)
class AppStream:
    """A ``streaming_start`` in progress on a leg (engine.machine.app_streams): its id, where it
    goes, which track, who hears what the application sends back, and whether it is up."""

    stream_id: str
    url: str
    track: str
    listeners: tuple[str, ...] = ()
    started: bool = False  # the application's websocket took the start frame


@dataclass(frozen=True, slots=True, kw_only=True)
class GatherRules:
    """How a gather collects digits; the defaults are Call Control v2's (engine.machine.gather)."""

    minimum_digits: int = 1
    maximum_digits: int = 128
    terminating_digit: str = "#"  # "" collects "#" like any other digit
    valid_digits: str = "0123456789#*"
    timeout_millis: int = 60000
    inter_digit_timeout_millis: int = 5000
    initial_timeout_millis: int = 5000  # gather only: the wait for the first digit


@dataclass(frozen=True, slots=True)
class GatherAudio:
    """A gather_using_audio prompt: an audio_url or a media_name, as playback_start takes."""

    audio_url: str | None = None
    media_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather:
    """A DTMF gather in progress on a leg (engine.machine.gather). ``tag`` names this gather's
    timers, so a late firing of an earlier one's never acts on it."""

    tag: str
    rules: GatherRules
    gather_id: str | None = None  # gather's own, echoed in call.gather.ended
    prompt: GatherAudio | None = None  # gather_using_audio: played at the start of each try
    invalid_prompt: GatherAudio | None = None  # played before the next try after invalid input
    tries_left: int = 1  # prompts still to play, the current one included
    digits: str = ""
    playing: str | None = None  # the playback id of the prompt now playing
    playing_invalid: bool = False  # that playback is the invalid prompt; the prompt follows


@dataclass(frozen=True, slots=True)
class DtmfPress:
    """A reported digit that no report from the other source has matched yet (see
    ``engine.machine.media.dtmf_received``): ``at`` is when it was reported."""

    digit: str
    source: DtmfSource
    at: float


@dataclass(frozen=True, slots=True)
class Leg:
    """One live call party. Replaced, never mutated; see the module docstring."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    org_id: int
    connection_id: str
    direction: Direction
    from_: str
    to: str
    state: LegState
    start_time: float
    webhook_url: str | None = None
    client_state: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    # Room membership. `pending_room_id` is set on a ringing leg that a bridge is waiting for:
    # it joins that room when it answers.
    room_id: str | None = None
    pending_room_id: str | None = None
    # What this leg does when its bridge ends without it (peer hung up, moved or unbridged).
    park_after_unbridge: bool = False  # "self"
    hold_after_unbridge: bool = False
    # Dial options applied when the leg answers.
    link_to: str | None = None
    bridge_on_answer: bool = False
    prevent_double_bridge: bool = False
    join_conference_of: int | None = None  # default routing: the bridge whose conference to join
    ring_timeout_secs: int | None = None
    time_limit_secs: int = DEFAULT_TIME_LIMIT_SECS
    # Media.
    media_started: bool = False
    media_format: str | None = None
    media_restarted_at: float | None = None  # when callbridge last asked for a new stream
    dtmf_muted: bool = False  # this leg must not hear its peers' DTMF
    muted: bool = False  # a conference participant nobody hears (conferences' mute)
    on_hold: bool = False  # a conference participant on hold: hears its hold audio, nobody hears it
    # Supervision (engine.machine.supervision): the leg this one was dialled to supervise, its
    # role and the legs it whispers to; who hears it follows (engine.machine.hearing).
    supervise: str | None = None
    supervisor_role: SupervisorRole = SupervisorRole.NONE
    whisper_to: tuple[str, ...] = ()
    joined_room_at: float | None = None  # when it joined its conference room
    dtmf_unmatched: tuple[DtmfPress, ...] = ()  # recent digits one source alone has reported
    ringback: bool = False  # a ringback overlay is playing to this leg
    playbacks: tuple[ActivePlayback, ...] = ()  # started by this leg's commands
    playback_queue: tuple[QueuedPlayback, ...] = ()  # waiting for the playing one to end
    conference_beep: str | None = None  # its conference join's beep_enabled, while a participant
    recording_id: str | None = None  # the recording in progress
    recording_paused: bool = False  # record_pause'd: none of its audio is written until resumed
    # The recording's max_length left as of `recording_since` (None: no limit), and when its
    # current unpaused stretch began (the machine's clock): the limit counts recorded time only.
    recording_left_s: float | None = None
    recording_since: float = 0.0
    gather: Gather | None = None  # the DTMF gather in progress
    app_streams: tuple[AppStream, ...] = ()  # streaming_start's, until stopped or failed
    recordings_unsaved: tuple[str, ...] = ()  # started, call.recording.saved not yet sent
    bridge_record: RecordingOptions | None = None  # bridge's record-from-answer, until bridged
    seq: int = 0  # counter behind playback and recording ids
    timers: frozenset[TimerKey] = field(default_factory=frozenset)
    # The adapter's reference to the provider's call (provider, configuration, call id), opaque
    # to the engine: what a restarted process needs to reach the call again.
    carrier: str | None = None
    # Queue.
    queue_name: str | None = None
    enqueued_at: float | None = None
    # End.
    hangup_cause: HangupCause | None = None
    hangup_source: HangupSource | None = None
    sip_hangup_cause: str | None = None

    @property
    def is_alive(self) -> bool:
        return self.state is not LegState.HANGUP

    @property
    def our_side(self) -> HangupSource:
        """The party callbridge plays on this leg: the callee of an incoming call, the caller
        of an outgoing one. It is the hangup_source when the engine or application hangs up."""
        return HangupSource.CALLEE if self.direction is Direction.INCOMING else HangupSource.CALLER


@dataclass(frozen=True, slots=True)
class Room:
    """A live media group: the legs whose audio is mixed together."""

    room_id: str  # minted by the machine: "room:<id>" (bridge) or "conf:<id>" (conference)
    org_id: int
    kind: RoomKind
    members: tuple[str, ...] = ()
    pending: str | None = None  # a ringing leg that joins on answer (bridge rooms only)
    bridge_id: int | None = None  # the bridge whose default conference this is
    # Legs dialled to supervise a member (dial's supervise_call_control_id): mixed in the room,
    # not members of it (a bridge stays two-party; they are no conference's participants).
    supervisors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConferencePlayback:
    """A conference ``play`` in progress (engine.machine.conference_media): to the whole room
    (``targeted`` false: conference.playback.* webhooks) or to named participants
    (conference.participant.playback.* per listener)."""

    playback_id: str
    listeners: tuple[str, ...]  # legs whose overlay plays it now
    media_url: str | None
    media_name: str | None
    targeted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Conference:
    """A conference of the Conferences API (engine.machine.conferences): the record of a
    conference room, kept after the room is gone so GET still finds it until pruned.

    ``conference_id`` is the room key as a UUID (Call Control v2's ids are UUIDs). Its webhooks
    go to ``webhook_url`` (the creating leg's; None for a bridge's default conference, which nobody
    listens to) with ``client_state``, and name the creating leg (``creator``) when they concern
    the conference as a whole."""

    conference_id: str
    room_id: str
    org_id: int
    name: str
    created_at: float
    updated_at: float
    creator: str  # call_control_id of the leg that created it
    connection_id: str
    webhook_url: str | None = None
    client_state: str | None = None
    max_participants: int = 250
    # beep_enabled: a beep to the room as participants join and/or leave (never, always,
    # on_enter, on_exit); a participant's join may override it (Leg.conference_beep).
    beep_enabled: str = "never"
    bridge_id: int | None = None  # a bridge's default conference
    ended_at: float | None = None
    end_reason: str | None = None  # all_left | ended_via_api
    playbacks: tuple[ConferencePlayback, ...] = ()  # its play in progress (one at a time)
    seq: int = 0  # counter behind its playback and recording ids
    # Its recording (engine.machine.conference_recording): the one in progress, whether it is
    # paused, and those stopped whose outcome (saved or failed) is not reported yet.
    recording_id: str | None = None
    recording_paused: bool = False
    recordings_unsaved: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return "in_progress" if self.ended_at is None else "completed"


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue of one organization. It exists while it holds calls."""

    org_id: int
    name: str
    max_size: int
    members: tuple[str, ...] = ()
    total_wait_secs: float = 0.0  # of calls that left it: for queue_avg_wait_time_secs
    left_count: int = 0

    @property
    def avg_wait_secs(self) -> int:
        return round(self.total_wait_secs / self.left_count) if self.left_count else 0


@dataclass(frozen=True, slots=True)
class NewLegIds:
    """Ids of a leg being dialled, chosen by the caller (the runtime or the API layer)."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str


@dataclass(frozen=True, slots=True)
class CallStatus:
    """What GET /v2/calls/{call_control_id} reports."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    client_state: str | None
    is_alive: bool
    call_duration: int  # whole seconds since start, up to the end if it ended
    state: str
    start_time: float
    end_time: float | None
    record_type: str = "call"

    @classmethod
    def of(cls, leg: Leg, now: float) -> CallStatus:
        end = leg.ended_at if leg.ended_at is not None else now
        return cls(
            call_control_id=leg.call_control_id,
            call_leg_id=leg.call_leg_id,
            call_session_id=leg.call_session_id,
            client_state=leg.client_state,
            is_alive=leg.is_alive,
            call_duration=max(0, int(end - leg.start_time)),
            state=leg.state.value,
            start_time=leg.start_time,
            end_time=leg.ended_at,
        )


class CallEnded(InvalidState):
    """A command for a leg that has already ended (Call Control v2: 422, code 90018)."""

    code = "90018"
    title = "Call has already ended"


# Code of every other invalid-state refusal: Call Control v2's generic "bad request" code, so
# no client mistakes it for a more specific documented condition. The HTTP status stays 422.
INVALID_STATE_CODE = "10015"
