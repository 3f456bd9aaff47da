"""The engine's side of the media: mixer membership, overlays, recordings, per-leg outputs.

The runtime drives it from effects (``JoinRoom``, ``SetOverlay``, ``StartRecording`` ...) and
from the media streams the adapters accept (``attach``, ``frame_in``, ``detach``); ``tick``
runs one mixer pass and hands every leg its frame. It reports what the machine must hear
about (a playback that ended, a recording that was written) as events, never acting on them.

A leg's media can start after the machine asked for an overlay (ringback, playback) or a
recording: those wait for it and begin when its stream attaches (again from the start if the
stream re-attaches), until they are cleared. Overlays are kept, spec and running source, in
``engine.media_plane.overlays``; the plane makes sources from specs and tells the mixer what to
pull each tick. A leg is tapped while it records or streams to an application (``add_app_stream``:
``engine.media_plane.app_streams``, whose playouts are overlays with no spec).

Digits sent to a leg (``play_dtmf``: ``send_dtmf`` and regenerated key presses) go into the
leg's one queue in ``engine.media_plane.digits_out`` and play in order, one at a time, as the
overlay ``DTMF_TAG`` while its media is live; clearing that overlay empties the queue.

A URL overlay (an http(s) ``audio_url``) starts when its audio is at hand: ``RemoteAudio``
(``engine.media_plane.audio_fetch``) either has it cached or fetches it and calls back; meanwhile
the overlay waits like one whose leg has no media yet, a cleared overlay is simply not started when
the audio arrives, and a failed fetch ends every playback waiting for that URL, once each.

The transport is hidden behind ``MediaOutput``: whatever the adapter does to put a frame on
its websocket, the plane only calls ``send_frame`` with bytes in the leg's own format.

A peer's key press reaches a listener (``relay_dtmf``, from the machine's ``RelayDtmf``) the way
the listener's media carries key presses: an output that is also a ``KeyPressOutput`` (a
websocket agent, whose bot reads Media Streams ``dtmf`` messages and not tones in the audio)
gets a message for every digit; any other gets regenerated tones for an out-of-band digit, and
nothing for an in-band one, which is in the audio it hears already.

In-band DTMF: the mixer detects digits in what every attached leg says (``detect_dtmf``; Telnyx
detects on every call-control leg too, so it is on by default, and off only for load tests) and
``tick`` reports each key press once as ``DtmfReceived(leg, digit, IN_BAND)``. The tone itself
is in the audio, so a listener the machine marked with ``SetDtmfMute`` must not hear it: who
stops hearing whom, from when and until when, is ``engine.media_plane.dtmf_mute``'s to decide;
the plane hands it the machine's marks, each tick's new digits and the detector's held ones,
and applies the hear-matrix entries it returns (``Mixer.mute_for``, a gain of 0; a passthrough
room is mixed meanwhile). Limit, by design: the detector names a digit after three 10 ms
windows of it (about 40 ms of tone), and the frame that completes them has been mixed and sent
by then, so the first 40-60 ms of every digit still reach a muted listener (in passthrough they
left as they arrived); the mute cuts in from the next frame. A human hears a short blip; a DTMF
receiver at the far end that accepts 40 ms tones (ITU-T Q.24 requires accepting them) may still
decode that onset. ``tests/test_inband_dtmf.py`` pins the leak to the frames up to the
detecting one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from engine.logs import get_logger
from engine.machine.effects import DTMF_TAG, RoomMix
from engine.machine.events import DtmfReceived, Event, PlaybackEnded, RecordingFailed
from engine.machine.model import DtmfSource, OverlaySource, RecordingOptions
from engine.media_plane.app_streams import AppStreams, LiveStream
from engine.media_plane.audio_sources import (
    OverlayError,
    Source,
    beep,
    builtin_samples,
    load_wav,
)
from engine.media_plane.digits_out import DigitsOut
from engine.media_plane.dtmf_mute import DtmfMute, MuteChanges
from engine.media_plane.levels import InputLevels
from engine.media_plane.outputs import FlushableOutput, KeyPressOutput, MediaOutput
from engine.media_plane.overlays import Overlays, OverlaySpec
from engine.media_plane.recordings import ActiveRecording, Recordings, close_recording
from engine.media_plane.room_recordings import RoomListeners, Unheard
from engine.media_plane.stats import LegStatsBook
from engine.store.live_records import LiveRecording
from media.codecs import AudioFormat
from media.mixer import Mixer
from media.recorder import FileOpener, open_new_file
from media.tones import HoldTone, Playback, Ringback

__all__ = [
    "RELAYED_DTMF_MS",
    "ActiveRecording",
    "AudioArrived",
    "LegMedia",
    "MediaPlane",
    "RemoteAudio",
    "close_recording",
]

log = get_logger("callbridge.media")
#: How long a relayed out-of-band digit sounds (the provider reports the digit, not its length).
RELAYED_DTMF_MS = 250


@dataclass(frozen=True, slots=True)
class LegMedia:
    fmt: AudioFormat
    output: MediaOutput


AudioArrived = Callable[[OverlaySource, NDArray[np.int16] | OverlayError], None]


class RemoteAudio(Protocol):
    """Where a URL overlay's samples come from (``engine.media_plane.audio_fetch.AudioFetcher``)."""

    def cached(self, source: OverlaySource) -> NDArray[np.int16] | None:
        """The samples if they are at hand now, at the mixer's rate."""

    def request(self, source: OverlaySource, arrived: AudioArrived) -> None:
        """Fetch them; ``arrived`` is called later (never from within this call), on the loop."""

    async def close(self) -> None:
        """Stop fetching (the engine is shutting down)."""


class MediaPlane:
    def __init__(
        self,
        mixer: Mixer,
        recordings_dir: Path,
        *,
        detect_dtmf: bool = True,
        media_dir: Path | None = None,
        remote_audio: RemoteAudio | None = None,
        recording_opener: FileOpener = open_new_file,
        on_recording_failed: Callable[[str], None] | None = None,
    ) -> None:
        """``recording_opener`` opens recording files (tests inject disks that block or fail);
        ``on_recording_failed`` is told the reason of each recording that fails (a counter)."""
        self.mixer = mixer
        self.recordings_dir = recordings_dir
        self.recordings = Recordings(
            recordings_dir,
            mixer.sample_rate,
            opener=recording_opener,
            on_failed=on_recording_failed,
        )
        # http(s) audio_url playback (None: such overlays fail at once).
        self.remote_audio = remote_audio
        # The one directory file:// playback reads from (None: none); checked again here, after
        # symlinks, because the API could only check the path it was given.
        self.media_dir = media_dir.resolve() if media_dir is not None else None
        self.detect_dtmf = detect_dtmf
        self._legs: dict[str, LegMedia] = {}
        self.dtmf_mute = DtmfMute()
        self.overlays = Overlays()
        self.app_streams = AppStreams()  # streaming_start's (engine.media_plane.app_streams)
        self.digits_out = DigitsOut(
            mixer.sample_rate, lambda leg_id: self.clear_overlay(leg_id, DTMF_TAG)
        )
        self._pending: list[Event] = []
        # Every leg's media statistics (engine/media_plane/stats.py).
        self.stats = LegStatsBook(
            lambda leg_id: self.mixer.concealed(leg_id) if leg_id in self._legs else 0
        )
        # The console's level meters: the legs someone watches (engine/media_plane/levels.py).
        self.levels = InputLevels()
        self._metered = self.levels.frames
        # Conference recordings' listeners (engine/media_plane/room_recordings.py).
        self.listeners = RoomListeners(mixer)

    # streams
    def attach(
        self,
        leg_id: str,
        fmt: AudioFormat,
        output: MediaOutput,
        out_fmt: AudioFormat | None = None,
    ) -> None:
        """The leg's stream is live: it sends ``fmt`` and decodes ``out_fmt`` (``fmt`` if None)."""
        self.mixer.add_leg(leg_id, fmt, out_fmt)
        self._legs[leg_id] = LegMedia(fmt, output)
        if self.detect_dtmf:
            self.mixer.set_detect(leg_id, True)
        self._retap(leg_id)  # tapped while it records or streams
        for tag, spec in self.overlays.wanted(leg_id):
            self._start_overlay(leg_id, tag, spec)
        for tag, source in self.app_streams.playouts(leg_id):
            self.overlays.start(leg_id, tag, source)
        self._refresh_overlay(leg_id)
        digits = self.digits_out.waiting(leg_id)
        if digits is not None:
            self._start_digits(leg_id, digits)

    def detach(self, leg_id: str) -> None:
        if self._legs.pop(leg_id, None) is not None:
            self.stats.detached(leg_id, self.mixer.concealed(leg_id))
            self.mixer.remove_leg(leg_id)
            self.dtmf_mute.forget(leg_id)
            self.overlays.detached(leg_id)
            self.digits_out.interrupted(leg_id)

    def is_attached(self, leg_id: str) -> bool:
        return leg_id in self._legs

    def input_format(self, leg_id: str) -> AudioFormat | None:
        """The format the leg's stream sends (what ``frame_in`` gets); None without one."""
        media = self._legs.get(leg_id)
        return None if media is None else media.fmt

    def frame_in(self, leg_id: str, payload: bytes) -> None:
        metered = self._metered.get(leg_id)  # None unless a console watches the leg
        if metered is not None:
            metered.append(payload)
        for peer, data in self.mixer.put_frame(leg_id, payload):
            media = self._legs.get(peer)
            if media is not None:
                media.output.send_frame(data)

    # membership
    def join(self, leg_id: str, room_id: str) -> None:
        if leg_id in self._legs:
            self.mixer.join(leg_id, room_id)
            self.listeners.joined(leg_id, room_id)

    def leave(self, leg_id: str) -> None:
        """The leg leaves its room. What its far end still has queued of that room (a burst
        after a stall can leave a provider's playout a second or more behind) is dropped, so the
        leg does not hear the room it left after leaving it."""
        media = self._legs.get(leg_id)
        if media is not None:
            self.mixer.leave(leg_id)
            if isinstance(media.output, FlushableOutput):
                media.output.flush()

    # overlays
    def set_overlay(self, leg_id: str, tag: str, source: OverlaySource, loop: int | None) -> None:
        spec = OverlaySpec(source, loop)
        self.overlays.want(leg_id, tag, spec)
        if leg_id in self._legs:
            self._start_overlay(leg_id, tag, spec)

    def _start_overlay(
        self, leg_id: str, tag: str, spec: OverlaySpec, samples: NDArray[np.int16] | None = None
    ) -> None:
        try:
            made = self._make_source(leg_id, tag, spec, samples)
        except OverlayError as exc:
            log.info("overlay refused", leg_id=leg_id, tag=tag, reason=str(exc))
            self.overlays.stop(leg_id, tag)
            self._playback_ended(tag, exc.status, str(exc))
        else:
            if made is not None:  # else a URL still being fetched: ``_audio_arrived`` starts it
                self.overlays.start(leg_id, tag, made)
        self._refresh_overlay(leg_id)

    def _audio_arrived(
        self, source: OverlaySource, result: NDArray[np.int16] | OverlayError
    ) -> None:
        """A fetched URL is here (or failed): start it on every live leg still waiting for it;
        on failure end its playbacks (once per playback, whatever the number of listeners)."""
        ended: set[str] = set()
        for leg_id, tag, spec in self.overlays.wanting(source):
            if isinstance(result, OverlayError):
                self.clear_overlay(leg_id, tag)
                ended.add(tag)
            elif leg_id in self._legs and not self.overlays.is_running(leg_id, tag):
                self._start_overlay(leg_id, tag, spec, result)
        for tag in sorted(ended):
            assert isinstance(result, OverlayError)
            self._playback_ended(tag, result.status, str(result))

    def clear_overlay(self, leg_id: str, tag: str) -> None:
        """Stop the tag's overlay; ``DTMF_TAG`` also drops the digits still queued."""
        if tag == DTMF_TAG:
            self.digits_out.clear(leg_id)
        if self.overlays.stop(leg_id, tag) and leg_id in self._legs:
            self._refresh_overlay(leg_id)

    def play_dtmf(self, leg_id: str, digits: str, duration_millis: int) -> None:
        """Queue digits for the leg: they play after its earlier ones, once its media is live
        (``engine.media_plane.digits_out``)."""
        started = self.digits_out.send(leg_id, digits, duration_millis)
        if started is not None and leg_id in self._legs:
            self._start_digits(leg_id, started)

    def _start_digits(self, leg_id: str, digits: Source) -> None:
        self.overlays.start(leg_id, DTMF_TAG, digits)
        self._refresh_overlay(leg_id)

    def relay_dtmf(self, leg_id: str, digit: str, source: DtmfSource) -> None:
        """A peer of this leg pressed ``digit`` (see the module docstring)."""
        media = self._legs.get(leg_id)
        if media is None:
            return  # no live media: nothing could carry it
        if isinstance(media.output, KeyPressOutput):
            media.output.send_key_press(digit)
        elif source is DtmfSource.OUT_OF_BAND:
            self.play_dtmf(leg_id, digit, RELAYED_DTMF_MS)

    def _make_source(
        self, leg_id: str, tag: str, spec: OverlaySpec, samples: NDArray[np.int16] | None
    ) -> Source | None:
        """The overlay's audio; None while a URL's audio is being fetched."""
        source = spec.source
        if source.kind == "ringback":
            return Ringback(source.name)
        if source.kind == "hold":
            return HoldTone(self.mixer.sample_rate)
        loops = None if spec.loop is None or spec.loop <= 0 else spec.loop

        def ended() -> None:
            self.clear_overlay(leg_id, tag)
            self._playback_ended(tag, "completed", None)

        if source.kind == "beep":
            samples = beep(self.mixer.sample_rate)
        elif source.kind == "file":
            samples = load_wav(self._media_file(source.name), self.mixer.sample_rate)
        elif source.kind == "url":
            samples = samples if samples is not None else self._remote_samples(source)
            if samples is None:
                return None
        else:
            samples = builtin_samples(source.name, self.mixer.sample_rate)
        return Playback(samples, loops=loops, on_end=ended)

    def _remote_samples(self, source: OverlaySource) -> NDArray[np.int16] | None:
        if self.remote_audio is None:
            raise OverlayError("this engine plays no audio URLs")
        samples = self.remote_audio.cached(source)
        if samples is None:
            self.remote_audio.request(source, self._audio_arrived)
        return samples

    def _media_file(self, name: str) -> Path:
        path = Path(name).resolve()
        if self.media_dir is None or not path.is_relative_to(self.media_dir):
            # The same status as a missing file: nothing outside the directory is confirmed.
            raise OverlayError(f"no such audio file: {name}", status="file_not_found")
        return path

    def _playback_ended(self, tag: str, status: str, detail: str | None) -> None:
        commander, sep, _ = tag.partition("/playback/")
        if sep:
            self._pending.append(PlaybackEnded(commander, tag, status, detail))

    def _refresh_overlay(self, leg_id: str) -> None:
        """What the mixer pulls the leg's overlay from, after a change to the leg's overlays."""
        self.mixer.set_overlay(leg_id, self.overlays.playing(leg_id))

    # recordings (engine.media_plane.recordings)
    def start_recording(
        self,
        leg_id: str,
        recording_id: str,
        options: RecordingOptions,
        now: float,
        *,
        org_id: int,
        room: RoomMix | None = None,
    ) -> None:
        """Record the leg (with ``room``: a conference, ``leg_id`` its id) into its
        organization's directory; a recording that cannot start is reported
        (``RecordingFailed``) with the next tick's events."""
        failed = self.recordings.start(leg_id, recording_id, options, now, org_id)
        if failed is not None:
            self._pending.append(failed)
        else:
            self._feed(leg_id, room)

    def resume_recording(
        self, stored: LiveRecording, *, paused: bool = False, room: RoomMix | None = None
    ) -> RecordingFailed | None:
        """Continue a recording an earlier process left (``Recordings.resume``), paused if the
        machine has it paused; the event if it cannot be continued."""
        failed = self.recordings.resume(stored, paused=paused)
        if failed is None:
            self._feed(stored.call_control_id, room)
        return failed

    def _feed(self, owner: str, room: RoomMix | None) -> None:
        """Tap the leg for its recording, or put a conference's listener in its room (kept
        as a leg whose output goes nowhere, so the overlays the machine gives it play)."""
        if room is not None:
            self.listeners.add(owner, room)
            self._legs[owner] = LegMedia(self.listeners.format, Unheard())
        else:
            self._retap(owner)

    def take_recording(self, leg_id: str) -> ActiveRecording | None:
        """Stop feeding a recording and hand it over to be closed (off the media path)."""
        active = self.recordings.take(leg_id)
        if active is not None:
            self._release(leg_id)
        return active

    def _release(self, leg_id: str) -> None:
        """A recording no longer fed: a conference's listener goes, with its overlays; a leg
        stays tapped while a recording or an application stream still reads it."""
        if leg_id in self.listeners:
            self.listeners.remove(leg_id)
            del self._legs[leg_id]
            for tag, _spec in self.overlays.wanted(leg_id):
                self.overlays.stop(leg_id, tag)
        else:
            self._retap(leg_id)

    def _retap(self, leg_id: str) -> None:
        if leg_id in self._legs:
            self.mixer.set_tap(leg_id, leg_id in self.recordings or self.app_streams.tapped(leg_id))

    def add_app_stream(self, stream: LiveStream) -> None:
        """The leg is tapped for the stream, its playouts play to its listeners."""
        self.app_streams.add(stream)
        self._retap(stream.leg_id)
        for listener, playout in stream.playouts.items():
            self.overlays.start(listener, stream.tag, playout)
            if listener in self._legs:
                self._refresh_overlay(listener)

    def remove_app_stream(self, leg_id: str, stream_id: str) -> None:
        stream = self.app_streams.remove(leg_id, stream_id)
        if stream is not None:
            self._retap(leg_id)
            for listener in stream.playouts:
                self.clear_overlay(listener, stream.tag)

    # in-band DTMF
    def set_audience(self, leg_id: str, heard_by: frozenset[str] | None, *, deaf: bool) -> None:
        """Only ``heard_by`` in its room hear the leg (None: everyone), and with ``deaf`` it hears
        nobody there (hold: its overlay, the hold audio, still plays), from the next tick: the
        machine's decision (engine.machine.hearing). It says it again after each new stream's
        join, so a detached leg is skipped."""
        if leg_id in self._legs:
            self.mixer.hear_only(leg_id, heard_by)
            self.mixer.deafen(leg_id, deaf)

    def set_dtmf_mute(self, leg_id: str, muted: bool) -> None:
        """Whether the leg may hear in-band DTMF from the others in its room (from next tick)."""
        self.mixer.set_dtmf_prompt(leg_id, muted)  # its speakers' digits are needed at once
        self._apply_mutes(self.dtmf_mute.set_muted(leg_id, muted))

    def _dtmf_tick(self, digits: list[tuple[str, str]]) -> list[Event]:
        """Report new digits; the mute policy judges who hears the ones being pressed."""
        started = [leg_id for leg_id, _ in digits]
        self._apply_mutes(self.dtmf_mute.tick(started, self.mixer.dtmf_held))
        return [DtmfReceived(leg_id, digit, DtmfSource.IN_BAND) for leg_id, digit in digits]

    def _apply_mutes(self, changes: MuteChanges) -> None:
        for speaker, listeners in changes.items():
            self.mixer.mute_for(speaker, listeners)

    # the tick
    def tick(self) -> list[Event]:
        """One mixer pass; frames go out, taps feed recordings. Returns events for the machine."""
        self.listeners.feed()
        result = self.mixer.tick()
        events, self._pending = self._pending, []
        if result.digits or self.dtmf_mute.active:
            # Before any frame goes out: a frame that arrives meanwhile meets the new mutes.
            events += self._dtmf_tick(result.digits)
        legs = self._legs
        for leg_id, payload in result.frames:
            media = legs.get(leg_id)
            if media is not None:
                media.output.send_frame(payload)
        for unopened in self.recordings.poll():  # files that could not be opened
            self._release(unopened.call_control_id)
            events.append(unopened)
        for leg_id, heard, spoken in self.listeners.taps(result.taps):
            outcome = self.recordings.write(leg_id, spoken, heard)
            if isinstance(outcome, RecordingFailed):  # taken out already: stop feeding it
                self._release(leg_id)
            if outcome is not None:
                events.append(outcome)
            self.app_streams.feed(leg_id, heard, spoken)
        return events
