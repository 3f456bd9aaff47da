"""The media plane's recordings: one ``media.recorder.Recorder`` per recording leg, fed from
the mixer's taps on every tick, and what happens when one cannot be written.

A recording fails when its file cannot be opened, its writer fails (ENOSPC, EIO, any error) or
falls behind (a stalled disk: ``media.recorder_queue``), or its file cannot be finished when it
stops. Then it is over: its leg's tap stops feeding it, the recorder is aborted (its writer
thread closes the file when, and if, its stuck write returns; nobody waits for it), the failure
is logged and counted (``on_failed``, with the reason), and the machine gets
``RecordingFailed``, on which it sends ``call.recording.error``. The leg and its call go on, and
a new recording may start. Nothing here waits on a recording's disk, so a disk that stalls
never holds up the tick or the event loop: even starting one (making the directory, claiming a
free name, opening the file) is its writer thread's work, and ``poll``, each tick, finds the
file open (then the recording is stored, below), or failed, or not open ``STALL_AFTER_S`` after
the start (``disk_stalled``). A stop that comes first waits for the open like any close. Only
reopening one after a restart (``resume``, ``reopen``: an MP3's frame headers are walked, about
0.5 s for a 4 h recording) touches the disk on the event loop, at adoption, before the process
serves.

Recordings outlive the process (issue 12). What continuing one takes is stored from the moment
its file is open until its outcome is reported (``opened``; the runtime writes and deletes
it). On shutdown ``suspend_all`` closes every file properly (MP3 encoder flushed, WAV header
final) without ending the recordings; the next process ``resume``s each in the same file, and
the first frame it records there is preceded by silence for the time since the file was last
written (its mtime, which a kill -9 leaves at the last flush), at most ``MAX_RESUME_GAP_S``:
the whole outage, up to the new stream's first frame, is silence in the recording. One stopped
but not yet saved is ``reopen``ed only to be closed and saved. A recording whose file is gone
or cannot be continued fails like any other (``RecordingFailed``: ``call.recording.error``).

A recording with ``timeout_secs`` has a ``media.silence_timeout.SilenceTimeout`` fed the
directions it records (``recording_track``: inbound is what the leg says, outbound what it
hears, both both) on every tick; when it runs out the machine gets ``RecordingSilenced`` and
ends the recording as ``record_stop`` does (``call.recording.saved``). The tap goes on feeding
the recording until that stop takes it, so nothing is lost meanwhile. A ``play_beep`` beep is
in what the leg hears, so its length is not counted as speech. The timer lives in this process
only: a resumed recording starts it over, waiting for speech again (the silence heard before
the restart, and the outage written as silence, do not count), so a restart can only lengthen
a recording's silent tail, never cut it short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray

from engine.logs import get_logger
from engine.machine.events import RecordingFailed, RecordingSilenced
from engine.machine.model import RecordingOptions
from engine.media_plane.audio_sources import BEEP_S
from engine.store.live_records import LiveRecording
from media.recorder import (
    CLOSE_WAIT_S,
    STALL_AFTER_S,
    FileOpener,
    Recorder,
    RecordingError,
    RecordingResult,
    RecordingStalled,
    UnsupportedRecordingFormat,
    open_new_file,
)
from media.silence_timeout import SilenceTimeout

__all__ = [
    "FAILURE_REASONS",
    "MAX_RESUME_GAP_S",
    "ActiveRecording",
    "Recordings",
    "close_recording",
    "failure_reason",
    "public_detail",
]

log = get_logger("callbridge.media")

#: Every ``RecordingFailed.reason`` (and metrics label) there is: the label set stays bounded.
FAILURE_REASONS = ("disk_stalled", "unsupported_format", "write_failed")
#: The most silence a resumed recording gets for the time it was not recorded. A restart takes
#: seconds (issue 12 asks for adoption within 10 s); an outage longer than this is logged and
#: written as this much, so a long one does not fill the disk with silence.
MAX_RESUME_GAP_S = 300.0


@dataclass(slots=True)
class ActiveRecording:
    recording_id: str
    recorder: Recorder
    options: RecordingOptions
    started_at: float
    org_id: int
    #: A resumed recording, until its first frame: when its file was last written (epoch s).
    resumed_from: float | None = None
    #: ``timeout_secs``'s timer (module docstring); None without one.
    silence: SilenceTimeout | None = None
    #: record_pause'd: the tap's audio is not written (nor judged for silence) until resumed.
    paused: bool = False


def failure_reason(error: RecordingError) -> str:
    """The slug of a recording failure, one of ``FAILURE_REASONS``."""
    if isinstance(error, RecordingStalled):
        return "disk_stalled"
    if isinstance(error, UnsupportedRecordingFormat):
        return "unsupported_format"
    return "write_failed"


def public_detail(error: RecordingError) -> str:
    """What the application is told: the cause, never a path on this server."""
    cause = error.__cause__
    if isinstance(error, RecordingStalled):
        return "the disk stopped taking the recording's audio"
    if isinstance(error, UnsupportedRecordingFormat):
        return str(error)
    if isinstance(cause, OSError) and cause.strerror:
        return f"the recording could not be written: {cause.strerror}"
    return "the recording could not be written"


def close_recording(active: ActiveRecording) -> RecordingResult:
    """Blocking, for at most ``media.recorder.CLOSE_WAIT_S``: finish the file (flush, trim,
    header). Run it in an executor. Raises ``RecordingError`` if the recording failed."""
    return active.recorder.close()


class Recordings:
    """The recordings in progress, by leg. ``opener`` opens their files (tests inject disks that
    block or fail); ``on_failed`` is told each failure's reason (the metrics counter)."""

    def __init__(
        self,
        directory: Path,
        sample_rate: int,
        *,
        opener: FileOpener = open_new_file,
        on_failed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.sample_rate = sample_rate
        self.opener = opener
        #: How long a recording's disk may take no audio, or not open its file (tests shorten it).
        self.stall_after_s = STALL_AFTER_S
        self.on_failed = on_failed
        self.clock = clock  # wall clock, as file mtimes are
        self._active: dict[str, ActiveRecording] = {}  # by leg
        self._opening: dict[str, ActiveRecording] = {}  # those whose file is not open yet
        self._opened: list[LiveRecording] = []  # open since ``opened`` was last asked

    def __contains__(self, leg_id: str) -> bool:
        return leg_id in self._active

    def start(
        self, leg_id: str, recording_id: str, options: RecordingOptions, now: float, org_id: int
    ) -> RecordingFailed | None:
        """Record into the organization's own directory (``org-<id>/``), under the custom file
        name if one was given (checked to be a bare name by the command), never over a file
        that exists: a name used again gets a suffix. Never touches the disk: the recorder's
        writer thread makes the directory and opens the file, and ``poll`` reports how that
        went. A recording this engine cannot make fails at once (the returned event)."""
        name = options.custom_file_name or recording_id.replace("/", "-")
        path = self.directory / f"org-{org_id}" / f"{name}.{options.format}"
        try:
            recorder = self._recorder(path, options, self.opener, resume=False)
        except RecordingError as exc:
            return self._report(leg_id, recording_id, exc)
        active = ActiveRecording(recording_id, recorder, options, now, org_id)
        active.silence = self._silence_timeout(options, beeped=options.play_beep)
        self._active[leg_id] = self._opening[leg_id] = active
        return None

    def poll(self) -> list[RecordingFailed]:
        """Per tick: recordings whose file was opened since are ready to be stored
        (``opened``); those that could not be opened, or not in time, have failed (the
        returned events; they are taken out and aborted)."""
        if not self._opening:
            return []
        failed: list[RecordingFailed] = []
        for leg_id, active in list(self._opening.items()):
            state = active.recorder.open_state()
            if state == "opening":
                continue
            del self._opening[leg_id]
            if state == "open":
                self._opened.append(self._stored(leg_id, active))
            else:
                failed.append(self._drop(leg_id, active))
        return failed

    def opened(self) -> list[LiveRecording]:
        """What to store of the recordings whose file ``poll`` found open since last asked:
        from then on a restart continues them (``engine.runtime.recording_lifecycle``)."""
        opened, self._opened = self._opened, []
        return opened

    def _silence_timeout(self, options: RecordingOptions, beeped: bool) -> SilenceTimeout | None:
        if not options.timeout_secs:
            return None
        # The beep and the tick it may straddle are not speech.
        ignore_s = BEEP_S + 0.02 if beeped else 0.0
        return SilenceTimeout(options.timeout_secs, self.sample_rate, ignore_s=ignore_s)

    def _recorder(
        self, path: Path, options: RecordingOptions, opener: FileOpener | None, *, resume: bool
    ) -> Recorder:
        return Recorder(
            path,
            channels=cast(Literal["single", "dual"], options.channels),
            track=cast(Literal["both", "inbound", "outbound"], options.track),
            max_length_s=float(options.max_length_secs),
            trim_silence=options.trim == "trim-silence",
            fmt=cast(Literal["wav", "mp3"], options.format),
            sample_rate=self.sample_rate,
            opener=opener,
            resume=resume,
            unique=not resume,
            stall_after_s=self.stall_after_s,
        )

    def _stored(self, leg_id: str, active: ActiveRecording) -> LiveRecording:
        """What a new process needs to continue the recording (its file is open)."""
        return LiveRecording(
            recording_id=active.recording_id,
            call_control_id=leg_id,
            org_id=active.org_id,
            path=active.recorder.path.relative_to(self.directory).as_posix(),
            options=active.options,
            started_at=active.started_at,
        )

    def resume(self, stored: LiveRecording, *, paused: bool = False) -> RecordingFailed | None:
        """Continue a recording an earlier process left, in its file (module docstring); one
        that cannot be continued fails at once (the returned event). Touches the disk. One
        that was paused stays paused, and the outage is not in it: its file was last written
        when the pause began, before the outage."""
        reopened = self.reopen(stored)
        if isinstance(reopened, RecordingFailed):
            return reopened
        if paused:
            reopened.paused, reopened.resumed_from = True, None
        self._active[stored.call_control_id] = reopened
        log.info("recording resumed", leg_id=stored.call_control_id,
                 recording_id=stored.recording_id)  # fmt: skip
        return None

    def reopen(self, stored: LiveRecording) -> ActiveRecording | RecordingFailed:
        """A recording an earlier process left, its file open to be appended to (not fed by
        any leg: ``resume`` does that), or why it cannot be continued. Touches the disk."""
        path = self.directory / stored.path
        try:
            if not path.resolve().is_relative_to(self.directory.resolve()):
                raise RecordingError(f"{path} is outside the recordings directory")
            # Before opening: cutting off a torn tail would move the mtime.
            last_written = path.stat().st_mtime
            recorder = self._recorder(path, stored.options, None, resume=True)
        except OSError as exc:  # the file is gone, or unreadable
            error = RecordingError(f"cannot continue recording {path}: {exc}")
            error.__cause__ = exc
            return self._report(stored.call_control_id, stored.recording_id, error)
        except RecordingError as exc:
            return self._report(stored.call_control_id, stored.recording_id, exc)
        return ActiveRecording(
            stored.recording_id,
            recorder,
            stored.options,
            stored.started_at,
            stored.org_id,
            last_written,
            self._silence_timeout(stored.options, beeped=False),  # no beep on resuming
        )

    def suspend_all(self, timeout: float = CLOSE_WAIT_S) -> list[LiveRecording]:
        """Blocking, for at most ``timeout`` in all (run it in an executor): close every
        recording's file properly without ending the recording, for the next process to
        resume. A file that cannot be finished is logged; its recording fails when resumed,
        if its file cannot be continued. Returns what is still to be stored for the next
        process: recordings whose file was opened but not yet reported by ``poll``."""
        active, self._active = self._active, {}
        opening, self._opening = self._opening, {}
        for each in active.values():
            each.recorder.abort(trim=False)  # every writer finishes at once, in parallel
        deadline = time.monotonic() + timeout
        for leg_id, each in active.items():
            try:
                each.recorder.suspend(max(0.0, deadline - time.monotonic()))
            except RecordingError as exc:
                log.warning("recording not flushed at shutdown", leg_id=leg_id,
                            recording_id=each.recording_id, error=str(exc))  # fmt: skip
        unstored = self.opened()
        for leg_id, each in opening.items():
            if each.recorder.open_state() == "open":
                unstored.append(self._stored(leg_id, each))
        return unstored

    def set_paused(self, leg_id: str, paused: bool) -> None:
        """record_pause / record_resume: the recording keeps its file, and takes no audio while
        paused. A resumed recording paused before its first frame gets the outage's silence now
        (the outage was recorded time; the pause starts after it)."""
        active = self._active.get(leg_id)
        if active is None:
            return  # failed or stopped meanwhile: its outcome is reported on its own
        if paused and active.resumed_from is not None:
            self._pad_gap(leg_id, active, active.resumed_from)
        active.paused = paused
        log.info("recording paused" if paused else "recording resumed taking audio",
                 leg_id=leg_id, recording_id=active.recording_id)  # fmt: skip

    def take(self, leg_id: str) -> ActiveRecording | None:
        """The leg's recording, no longer fed, to be closed (off the media path); its writer
        opens the file first if it has not yet."""
        self._opening.pop(leg_id, None)
        return self._active.pop(leg_id, None)

    def write(
        self, leg_id: str, spoken: NDArray[np.int16], heard: NDArray[np.int16]
    ) -> RecordingFailed | RecordingSilenced | None:
        """Feed one tick of the leg's audio to its recording, if it has one; never waits. A
        recording found failed is taken out and aborted: the returned event says so. One
        whose silence timeout ran out with this tick is only reported, for the machine to
        stop it (``RecordingSilenced``)."""
        active = self._active.get(leg_id)
        if active is None or active.paused:
            return None
        if active.resumed_from is not None:
            self._pad_gap(leg_id, active, active.resumed_from)
        if active.recorder.write(spoken, heard):
            return self._silenced(leg_id, active, spoken, heard)
        if active.recorder.failure is None:
            return None  # max length reached: the machine's RECORD_LIMIT timer stops it
        return self._drop(leg_id, active)

    def _silenced(
        self,
        leg_id: str,
        active: ActiveRecording,
        spoken: NDArray[np.int16],
        heard: NDArray[np.int16],
    ) -> RecordingSilenced | None:
        if active.silence is None:
            return None
        recorded = {"inbound": (spoken,), "outbound": (heard,)}.get(
            active.options.track, (spoken, heard)
        )
        if not active.silence.feed(*recorded):
            return None
        log.info("recording silence timeout", leg_id=leg_id, recording_id=active.recording_id)
        return RecordingSilenced(leg_id, active.recording_id)

    def _drop(self, leg_id: str, active: ActiveRecording) -> RecordingFailed:
        """A recording found failed: taken out, aborted, reported."""
        self._active.pop(leg_id, None)
        self._opening.pop(leg_id, None)
        active.recorder.abort()
        failure = active.recorder.failure
        assert failure is not None
        return self.failed(leg_id, active, failure)

    def lost(self, leg_id: str, recording_id: str) -> RecordingFailed:
        """A recording the leg awaits (in progress, or stopped and not yet saved) that nothing
        was stored about (the process stopped between starting it and storing it, or stored
        it before this table existed): it cannot be continued."""
        error = RecordingError("nothing was stored to continue the recording after a restart")
        return self._report(leg_id, recording_id, error)

    def _pad_gap(self, leg_id: str, active: ActiveRecording, last_written: float) -> None:
        """A resumed recording's first frame: the time nobody recorded goes in as silence."""
        active.resumed_from = None
        gap = max(0.0, self.clock() - last_written)
        if gap > MAX_RESUME_GAP_S:
            log.warning("recording gap written shorter than it was", leg_id=leg_id,
                        recording_id=active.recording_id, gap_s=round(gap, 1))  # fmt: skip
            gap = MAX_RESUME_GAP_S
        active.recorder.pad_silence(gap)

    def failed(
        self, leg_id: str, active: ActiveRecording, error: RecordingError
    ) -> RecordingFailed:
        """Log and count a recording that failed; the event for the machine."""
        return self._report(leg_id, active.recording_id, error)

    def _report(self, leg_id: str, recording_id: str, error: RecordingError) -> RecordingFailed:
        reason = failure_reason(error)
        log.warning(
            "recording failed",
            leg_id=leg_id,
            recording_id=recording_id,
            reason=reason,
            error=str(error),  # names the file
        )
        if self.on_failed is not None:
            self.on_failed(reason)
        return RecordingFailed(leg_id, recording_id, reason, public_detail(error))
