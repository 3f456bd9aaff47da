"""What a leg hears and sends besides its room's mix: media streams, DTMF, playback, recording.

- DTMF: every key press yields one ``call.dtmf.received`` for its leg, and a ``RelayDtmf`` to
  each room peer that may hear DTMF (the media plane turns it into a key-press message for a
  peer whose media carries them, regenerated tones for an out-of-band digit, or nothing for an
  in-band digit, which the mix carries already). Listeners with ``dtmf_muted`` get no relay and
  have in-band tones stripped by the mixer (``SetDtmfMute``, derived in ``Core.put``).
  One press can be reported twice, out-of-band by the provider and in-band by the media core's
  detector: a report from the other source of the same digit, within ``DTMF_SAME_PRESS_S`` of
  one not yet matched, is that same press and yields nothing. Two reports from one source are
  always two presses, however quick.
  ``send_dtmf`` is a ``SendDtmf``: the media plane queues the digits behind the leg's earlier
  ones; the leg's end clears what is left (``ClearOverlay(leg, DTMF_TAG)``). No webhook:
  Call Control v2 defines none for it.
- Playback: a ``SetOverlay`` per listener under the playback's id; ``call.playback.started`` at
  once, ``call.playback.ended`` when the runtime reports the end, when stopped ("cancelled"), when
  replaced by a new playback of the same kind ("cancelled"), or when the leg ends ("call_hangup").
  Call Control v2 queues a non-overlay playback behind the current one; callbridge replaces it.
- Recording: one at a time per leg; ``call.recording.saved`` when the runtime has written the
  file, even after the leg ended. A recording the media plane could not write (disk full or
  stalled: ``engine.media_plane.recordings``) ends with ``call.recording.error`` instead, and is no
  longer in progress: no ``call.recording.saved`` follows, and a new one may start.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import unquote, urlsplit

from engine.errors import InvalidState
from engine.machine import effects as fx
from engine.machine.commands import (
    PlaybackStart,
    PlaybackStop,
    RecordPause,
    RecordStart,
    RecordStop,
    SendDtmf,
)
from engine.machine.core import Core, iso
from engine.machine.events import (
    DtmfReceived,
    MediaStarted,
    PlaybackEnded,
    RecordingFailed,
    RecordingSaved,
)
from engine.machine.model import (
    INVALID_STATE_CODE,
    ActivePlayback,
    DtmfPress,
    Leg,
    OverlaySource,
    QueuedPlayback,
    RecordingOptions,
    TargetLegs,
    TimerKind,
)

RINGBACK_TAG = "ringback"
#: The beep of ``record_start``'s ``play_beep`` (engine.media_plane.audio_sources.beep).
START_BEEP = OverlaySource("beep", "recording-start")

# How far apart the two reports of one key press may arrive. In-band detection names a digit
# 40-60 ms after its tone starts (three 10 ms Goertzel windows, plus the frame and tick that
# carry them: engine/media_plane/plane.py). When the provider sends its out-of-band report is not
# documented (a provider's stream `dtmf` message may carry no time at all; an RFC 4733 sender
# may report at the start or only at the end of the press, and a human press lasts 100-300 ms),
# and the two travel different paths (a webhook or stream message vs. the audio, through a
# jitter buffer). 500 ms covers a long press reported at its end plus that skew. Two real
# presses stay two: only reports from *different* sources are paired, a pair is used once, and
# a second press of the same key needs a release and a new tone (ITU-T Q.24: at least 40 ms of
# each), which yields its own report from each source. They merge only if each source missed
# the press the other saw, within the window.
DTMF_SAME_PRESS_S = 0.5
# Unmatched reports kept per leg: a stream that floods digits must not grow the leg without end.
_MAX_UNMATCHED_DTMF = 16


# Media streams and DTMF (events).
def media_started(core: Core, leg: Leg, event: MediaStarted) -> None:
    if leg.media_started:
        return  # a duplicate start frame
    leg = core.update(leg, media_started=True, media_format=event.media_format)
    core.webhook(leg, "streaming.started", stream_url=event.stream_url)


def media_stopped(core: Core, leg: Leg) -> None:
    if leg.media_started:
        leg = core.update(leg, media_started=False)
        core.webhook(leg, "streaming.stopped")


def dtmf_received(core: Core, leg: Leg, event: DtmfReceived) -> Leg | None:
    """The leg after a new key press, or None when the report was a press already counted."""
    # Reports older than the window can match nothing any more.
    recent = [p for p in leg.dtmf_unmatched if core.now - p.at <= DTMF_SAME_PRESS_S]
    # The oldest report of this digit from the other source is this press's first report.
    twin = next(
        (p for p in recent if p.digit == event.digit and p.source is not event.source), None
    )
    if twin is not None:
        recent.remove(twin)
        core.update(leg, dtmf_unmatched=tuple(recent))
        return None
    recent.append(DtmfPress(event.digit, event.source, core.now))
    leg = core.update(leg, dtmf_unmatched=tuple(recent[-_MAX_UNMATCHED_DTMF:]))
    core.webhook(leg, "call.dtmf.received", digit=event.digit)
    # Call Control's media streaming sends a dtmf frame on each stream of the leg (its
    # "Stream call media over WebSocket" page: a DTMF frame when DTMF is detected on the call).
    for stream in leg.app_streams:
        core.emit(fx.StreamDtmf(leg.call_control_id, stream.stream_id, event.digit))
    for peer in core.peers(leg):
        if not peer.dtmf_muted:
            core.emit(fx.RelayDtmf(peer.call_control_id, event.digit, event.source))
    return leg


def send_dtmf(core: Core, leg: Leg, command: SendDtmf) -> None:
    core.emit(fx.SendDtmf(leg.call_control_id, command.digits, command.duration_millis))


# Playback.
def check_playback_start(core: Core, leg: Leg, command: PlaybackStart) -> None:
    if command.overlay:
        # Call Control: "When overlay is enabled, target_legs is limited to self" and "A
        # customer cannot Play Audio with overlay=true unless there is a Play Audio with
        # overlay=false actively playing" (its SDK's start_playback docstring).
        if command.target_legs is not TargetLegs.SELF:
            raise InvalidState(
                "an overlay plays to this leg only: target_legs must be self",
                field="target_legs",
                code=INVALID_STATE_CODE,
            )
        if _current(leg) is None:
            raise InvalidState(
                "overlay: true needs a playback with overlay false playing on the leg",
                field="overlay",
                code=INVALID_STATE_CODE,
            )
    elif not core.listeners(leg, command.target_legs):
        raise InvalidState(
            "target_legs names no leg: this leg is in no room",
            field="target_legs",
            code=INVALID_STATE_CODE,
        )


def _current(leg: Leg) -> ActivePlayback | None:
    """The leg's playback with overlay false, the one its queue waits for."""
    return next((p for p in leg.playbacks if not p.overlay), None)


def playback_start(core: Core, leg: Leg, command: PlaybackStart) -> Leg:
    """Call Control queues consecutive playbacks: one waits for the playing one unless it is an
    overlay (mixed on top, replacing an earlier overlay) or asks to ``stop`` the ``current``
    (the next in the queue plays) or ``all`` (the queue is cleared and it plays now)."""
    queued = queued_playback(leg, command)
    if command.overlay:
        for old in leg.playbacks:
            if old.overlay:
                leg = end_playback(core, leg, old, "cancelled")
        return _start(core, leg, queued, overlay=True)
    current = _current(leg)
    if command.stop == "all":
        leg = core.update(leg, playback_queue=())
        return play_now(core, leg, queued)
    leg = core.update(leg, playback_queue=(*leg.playback_queue, queued))
    if command.stop == "current" and current is not None:
        leg = end_playback(core, leg, current, "cancelled")
    return next_playback(core, leg)


def queued_playback(leg: Leg, command: PlaybackStart) -> QueuedPlayback:
    return QueuedPlayback(
        _playback_source(leg, command),
        command.loop,
        command.target_legs,
        command.audio_url,
        command.media_name,
    )


def play_now(core: Core, leg: Leg, queued: QueuedPlayback) -> Leg:
    """Start ``queued`` at once, cutting the playing one short; the queue waits behind it (a
    gather's prompt plays so)."""
    current = _current(leg)
    if current is not None:
        leg = end_playback(core, leg, current, "cancelled")
    return _start(core, leg, queued, overlay=False)


def next_playback(core: Core, leg: Leg) -> Leg:
    """With nothing playing, the first queued playback starts (one whose target is gone ends
    at once as failed, and the next is tried)."""
    while _current(leg) is None and leg.playback_queue:
        first, *rest = leg.playback_queue
        leg = _start(core, core.update(leg, playback_queue=tuple(rest)), first, overlay=False)
    return leg


def _start(core: Core, leg: Leg, queued: QueuedPlayback, *, overlay: bool) -> Leg:
    playback_id = f"{leg.call_control_id}/playback/{leg.seq + 1}"
    listeners = core.listeners(leg, queued.target_legs)
    playback = ActivePlayback(
        playback_id, listeners, queued.media_url, queued.media_name, overlay,
        queued.target_legs, queued.source, queued.loop,
    )  # fmt: skip
    leg = core.update(leg, seq=leg.seq + 1)
    if not listeners:  # queued while the leg had a peer, which is gone
        core.webhook(
            leg, "call.playback.ended", status="failed",
            status_detail="target_legs names no leg: this leg is in no room",
            **_playback_fields(playback),
        )  # fmt: skip
        return leg
    for listener in listeners:
        core.emit(fx.SetOverlay(listener, playback_id, queued.source, queued.loop))
    leg = core.update(leg, playbacks=(*leg.playbacks, playback))
    core.webhook(leg, "call.playback.started", **_playback_fields(playback))
    return leg


def _playback_source(leg: Leg, command: PlaybackStart) -> OverlaySource:
    source = audio_source(leg.org_id, command.audio_url, command.media_name, command.audio_type)
    return source if command.cache_audio else replace(source, cache=False)


def audio_source(
    org_id: int, url: str | None, media_name: str | None, audio_type: str | None = None
) -> OverlaySource:
    """What an ``audio_url`` (file:// in the media directory, or http(s)) or ``media_name``
    plays."""
    if url is None:
        return OverlaySource("media", media_name or "")
    if url.startswith("file:"):
        return OverlaySource("file", unquote(urlsplit(url).path))
    # Fetched for the organization only (engine.media_plane.audio_fetch keys its cache by it).
    return OverlaySource("url", url, org_id=org_id, audio_type=audio_type)


def _playback_fields(playback: ActivePlayback) -> dict[str, object]:
    return {
        "media_url": playback.media_url,
        "media_name": playback.media_name,
        "overlay": playback.overlay,
    }


def end_playback(
    core: Core, leg: Leg, playback: ActivePlayback, status: str, status_detail: str | None = None
) -> Leg:
    for listener in playback.listeners:
        core.emit(fx.ClearOverlay(listener, playback.playback_id))
    leg = core.update(
        leg, playbacks=tuple(p for p in leg.playbacks if p.playback_id != playback.playback_id)
    )
    detail = {} if status_detail is None else {"status_detail": status_detail}
    core.webhook(leg, "call.playback.ended", status=status, **detail, **_playback_fields(playback))
    return leg


def playback_stop(core: Core, leg: Leg, command: PlaybackStop) -> Leg:
    """Stop the overlay (``overlay``), or the playing one: ``current`` lets the next in the
    queue play, ``all`` (the default) clears the queue too."""
    if not command.overlay and command.stop == "all":
        leg = core.update(leg, playback_queue=())
    for playback in leg.playbacks:
        if playback.overlay == command.overlay:
            leg = end_playback(core, leg, playback, "cancelled")
    return next_playback(core, leg)


def playback_ended(core: Core, leg: Leg, event: PlaybackEnded) -> Leg | None:
    """A playback played to its end (or could not be played): the next in the queue starts.
    The leg after, or None when the playback was not the leg's (ended already)."""
    for playback in leg.playbacks:
        if playback.playback_id == event.playback_id:
            leg = end_playback(core, leg, playback, event.status)
            return next_playback(core, leg)
    return None


# Recording.
def check_record_start(leg: Leg, command: RecordStart) -> None:
    if leg.recording_id is not None:
        raise InvalidState("a recording is already in progress", code=INVALID_STATE_CODE)


def start_recording(core: Core, leg: Leg, options: RecordingOptions) -> Leg:
    recording_id = f"{leg.call_control_id}/recording/{leg.seq + 1}"
    core.emit(fx.StartRecording(leg.call_control_id, recording_id, options, leg.org_id))
    if options.play_beep:
        # Call Control v2: "If enabled, a beep sound will be played at the start of a
        # recording". The leg hears it (it waits for the leg's media, as the recording does)
        # and, being part of what the leg hears, it is in the recording too, as on a recorded
        # line.
        core.emit(fx.SetOverlay(leg.call_control_id, f"beep/{recording_id}", START_BEEP, 1))
    leg = core.update(
        leg,
        seq=leg.seq + 1,
        recording_id=recording_id,
        recordings_unsaved=(*leg.recordings_unsaved, recording_id),
        recording_left_s=float(options.max_length_secs) if options.max_length_secs else None,
        recording_since=core.now,
    )
    if options.max_length_secs:
        leg = core.start_timer(leg, TimerKind.RECORD_LIMIT, options.max_length_secs, recording_id)
    return leg


def check_record_stop(leg: Leg, command: RecordStop | RecordPause) -> None:
    if leg.recording_id is None:
        raise InvalidState("no recording is in progress", code=INVALID_STATE_CODE)
    if command.recording_id not in (None, leg.recording_id):
        raise InvalidState(
            "no such recording in progress", field="recording_id", code=INVALID_STATE_CODE
        )


def stop_recording(core: Core, leg: Leg) -> Leg:
    if leg.recording_id is None:
        return leg
    core.emit(fx.StopRecording(leg.call_control_id, leg.recording_id))
    return _recording_over(core, leg)


def _recording_over(core: Core, leg: Leg) -> Leg:
    leg = core.cancel_timers(leg, TimerKind.RECORD_LIMIT)
    return core.update(leg, recording_id=None, recording_paused=False, recording_left_s=None)


def pause_recording(core: Core, leg: Leg, paused: bool) -> Leg:
    """record_pause / record_resume. Pausing a paused recording (or resuming a running one)
    changes nothing and is not an error: the command's outcome holds either way. max_length
    counts recorded time: its timer stops while paused and restarts with what is left."""
    recording_id = leg.recording_id
    assert recording_id is not None  # check_record_stop
    if paused == leg.recording_paused:
        return leg
    core.emit(fx.PauseRecording(leg.call_control_id, recording_id, paused))
    left = leg.recording_left_s
    if paused:
        if left is not None:
            left = max(0.0, left - (core.now - leg.recording_since))
        leg = core.cancel_timers(leg, TimerKind.RECORD_LIMIT)
    elif left is not None:
        leg = core.start_timer(leg, TimerKind.RECORD_LIMIT, left, recording_id)
    return core.update(
        leg, recording_paused=paused, recording_left_s=left, recording_since=core.now
    )


def recording_saved(core: Core, leg: Leg, event: RecordingSaved) -> None:
    if event.recording_id not in leg.recordings_unsaved:
        return  # unknown, or already reported
    unsaved = tuple(r for r in leg.recordings_unsaved if r != event.recording_id)
    leg = core.update(leg, recordings_unsaved=unsaved)
    core.webhook(
        leg,
        "call.recording.saved",
        # The id GET /v2/recordings/{id} answers to, so the application can fetch it again.
        recording_id=event.public_id or event.recording_id,
        channels=event.channels,
        recording_started_at=iso(event.started_at),
        recording_ended_at=iso(event.ended_at),
        recording_urls={event.format: event.url},
        public_recording_urls={event.format: event.url},
    )


# Call Control v2's ``call.recording.error`` payload (its SDK's types/call_recording_error.py)
# has the leg's ids, client_state and ``reason``, one of a closed set naming storage failures; of
# them only "Internal server error" fits a local disk. Why exactly goes in callbridge's
# extension fields, as for call.hangup.
RECORDING_ERROR_REASON = "Internal server error"


def recording_failed(core: Core, leg: Leg, event: RecordingFailed) -> None:
    if event.recording_id not in leg.recordings_unsaved:
        return  # unknown, or already reported
    unsaved = tuple(r for r in leg.recordings_unsaved if r != event.recording_id)
    leg = core.update(leg, recordings_unsaved=unsaved)
    if leg.recording_id == event.recording_id:  # in progress until now: a new one may start
        leg = _recording_over(core, leg)
    core.webhook(
        leg,
        "call.recording.error",
        reason=RECORDING_ERROR_REASON,
        recording_id=event.recording_id,
        callbridge_reason=event.reason,
        callbridge_reason_detail=event.detail[:300],
    )


def set_ringback(leg: Leg, source: OverlaySource) -> fx.SetOverlay:
    """Ringback to a leg whose bridge waits for its ringing peer; plays until cleared."""
    return fx.SetOverlay(leg.call_control_id, RINGBACK_TAG, source, None)


def clear_ringback(leg: Leg) -> fx.ClearOverlay:
    return fx.ClearOverlay(leg.call_control_id, RINGBACK_TAG)


def stop_all(core: Core, leg: Leg) -> Leg:
    """Everything a leg plays or records stops: it is ending (digits still queued included)."""
    core.emit(fx.ClearOverlay(leg.call_control_id, fx.DTMF_TAG))
    if leg.ringback:
        core.emit(clear_ringback(leg))
        leg = core.update(leg, ringback=False)
    leg = core.update(leg, playback_queue=())  # never started: no webhook for them
    for playback in leg.playbacks:
        leg = end_playback(core, leg, playback, "call_hangup")
    return stop_recording(core, leg)
