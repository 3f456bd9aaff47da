"""Provider-side input events: what happened to a leg, in the past tense.

Adapters translate provider webhooks and media-stream frames into these; the runtime adds its
own (timers, playback and recording completion). Events are facts, so the machine never refuses
one: an event that does not fit the leg's state (a duplicate, a late or reordered webhook, an
unknown leg) changes nothing and yields no effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from engine.machine.model import (
    DEFAULT_TIME_LIMIT_SECS,
    DtmfSource,
    HangupCause,
    HangupSource,
    TimerKey,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegInitiated:
    """An incoming call arrived. The adapter has already found the bridge of the dialled number:
    `webhook_url` is that bridge's (None: default routing), `default_conference` its id. A leg
    with no webhook URL and a default conference is answered and joins that bridge's conference
    room, which the machine finds by organization and bridge (it names rooms itself)."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    org_id: int
    connection_id: str
    from_: str
    to: str
    webhook_url: str | None = None
    default_conference: int | None = None  # the bridge whose conference the leg joins
    time_limit_secs: int = DEFAULT_TIME_LIMIT_SECS
    carrier: str | None = None  # the adapter's reference to the provider's call (Leg.carrier)


@dataclass(frozen=True, slots=True)
class CarrierAssigned:
    """The provider has named the call of a dialled leg: the adapter's reference to it, kept
    with the leg (``Leg.carrier``) so that a restarted process can reach the call again."""

    call_control_id: str
    carrier: str


@dataclass(frozen=True, slots=True)
class LegAdopted:
    """A restarted process took the leg over from the stored live state (engine/runtime/runtime.py
    ``adopt``): its media stream, if it had one, went with the old process."""

    call_control_id: str


@dataclass(frozen=True, slots=True)
class LegAnswered:
    call_control_id: str


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """The leg's media stream to callbridge is live (its `start` frame arrived)."""

    call_control_id: str
    media_format: str  # e.g. "PCMU/8000"
    stream_url: str | None = None


@dataclass(frozen=True, slots=True)
class MediaStopped:
    call_control_id: str


@dataclass(frozen=True, slots=True)
class MediaFailed:
    """The leg's media stream could not be established or cannot be used: the provider reported
    a failure (a ``streaming.failed`` webhook) or the stream announced a codec callbridge cannot
    decode. ``reason`` is a short slug (``stream_failed``, ``unsupported_codec``); ``detail``
    says more, for the log and the application."""

    call_control_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call_control_id: str
    digit: str
    source: DtmfSource


@dataclass(frozen=True, slots=True)
class LegHungUp:
    """The far end or the provider ended the leg."""

    call_control_id: str
    cause: HangupCause
    source: HangupSource
    sip_hangup_cause: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """A provider call for this leg (answer, dial, ...) failed for good. The leg is ended with
    hangup_cause unspecified and a webhook, never left dangling."""

    call_control_id: str
    operation: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProviderCallGone:
    """Asked about the leg (the runtime's reconciliation), its provider says the call is over,
    though no hangup event of it arrived. The leg is ended with ``call.hangup``."""

    call_control_id: str
    detail: str  # what the provider said, for the log and the application


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: TimerKey


@dataclass(frozen=True, slots=True)
class PlaybackEnded:
    """A playback the machine started has finished on its own (or failed)."""

    call_control_id: str  # the leg whose command started it
    playback_id: str
    status: str = "completed"  # completed | file_not_found | failed | unknown
    status_detail: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingSaved:
    call_control_id: str
    recording_id: str  # the machine's, as in StartRecording
    url: str  # where the runtime stored it
    started_at: float
    ended_at: float
    format: str = "mp3"  # as in StartRecording's options
    channels: str = "dual"
    public_id: str | None = None  # the id the recordings API knows it by, when catalogued


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    """A recording could not be written (``engine.media_plane.recordings``): it is over, nothing of
    it is saved. ``reason`` is a slug (``disk_stalled``, ``write_failed``, ``unsupported_format``);
    ``detail`` says more, for the log and the application."""

    call_control_id: str
    recording_id: str  # the machine's, as in StartRecording
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RecordingSilenced:
    """A recording's ``timeout_secs`` ran out: that much silence after speech was heard
    (``media.silence_timeout``). The machine ends the recording as ``record_stop`` would."""

    call_control_id: str
    recording_id: str  # the machine's, as in StartRecording


@dataclass(frozen=True, slots=True)
class AppStreamChanged:
    """What became of a ``StartAppStream`` (engine/runtime/app_streams.py): ``started`` (the
    application's websocket took the start frame), ``stopped`` (the application closed it) or
    ``failed`` (no connection, or it broke; ``reason`` says how)."""

    call_control_id: str
    stream_id: str
    status: str  # started | stopped | failed
    reason: str = ""


Event: TypeAlias = (
    LegInitiated
    | CarrierAssigned
    | LegAdopted
    | LegAnswered
    | MediaStarted
    | MediaStopped
    | MediaFailed
    | DtmfReceived
    | LegHungUp
    | ProviderFailed
    | ProviderCallGone
    | TimerFired
    | PlaybackEnded
    | RecordingSaved
    | RecordingFailed
    | RecordingSilenced
    | AppStreamChanged
)
