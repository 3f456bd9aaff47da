"""The media plane's recordings: one ``media.recorder.Recorder`` per recording leg, fed from
the mixer's taps on every tick, and what happens when one cannot be written.

A recording fails when its file cannot be opened, its writer fails (ENOSPC, EIO, any error) or
falls behind (a stalled disk: ``media.recorder_queue``), or its file cannot be finished when it
stops. Then it is over: its leg's tap stops feeding it, the recorder is aborted (its writer
thread closes the file when, and if, its stuck write returns; nobody waits for it), the failure
is logged and counted (``on_failed``, with the reason), and the machine gets
``RecordingFailed``, on which it sends ``call.recording.error``. The leg and its call go on, and
a new recording may start. Once a recording has started nothing here waits on its disk, so a
disk that stalls under a running recording never holds up the tick or the event loop. Limit:
starting one (``start``: making the directory, choosing a free name, opening the file) touches
the disk on the caller's thread, the event loop's, as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray

from engine.events import RecordingFailed
from engine.logs import get_logger
from engine.model import RecordingOptions
from media.recorder import (
    FileOpener,
    Recorder,
    RecordingError,
    RecordingResult,
    RecordingStalled,
    UnsupportedRecordingFormat,
    open_new_file,
)

__all__ = [
    "FAILURE_REASONS",
    "ActiveRecording",
    "Recordings",
    "close_recording",
    "failure_reason",
    "public_detail",
]

log = get_logger("callbridge.media")

#: Every ``RecordingFailed.reason`` (and metrics label) there is: the label set stays bounded.
FAILURE_REASONS = ("disk_stalled", "unsupported_format", "write_failed")


@dataclass(slots=True)
class ActiveRecording:
    recording_id: str
    recorder: Recorder
    options: RecordingOptions
    started_at: float


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
    ) -> None:
        self.directory = directory
        self.sample_rate = sample_rate
        self.opener = opener
        self.on_failed = on_failed
        self._active: dict[str, ActiveRecording] = {}  # by leg

    def __contains__(self, leg_id: str) -> bool:
        return leg_id in self._active

    def start(
        self, leg_id: str, recording_id: str, options: RecordingOptions, now: float, org_id: int
    ) -> RecordingFailed | None:
        """Record into the organization's own directory (``org-<id>/``), under the custom file
        name if one was given (checked to be a bare name by the command), never over a file
        that exists: a name used again gets a suffix. A file that cannot be opened fails the
        recording at once (the returned event). Touches the disk (see the module docstring)."""
        try:
            directory = self.directory / f"org-{org_id}"
            directory.mkdir(parents=True, exist_ok=True)
            name = options.custom_file_name or recording_id.replace("/", "-")
            recorder = Recorder(
                self._free_path(directory, name, options.format),
                channels=cast(Literal["single", "dual"], options.channels),
                track=cast(Literal["both", "inbound", "outbound"], options.track),
                max_length_s=float(options.max_length_secs),
                trim_silence=options.trim == "trim-silence",
                fmt=cast(Literal["wav", "mp3"], options.format),
                sample_rate=self.sample_rate,
                opener=self.opener,
            )
        except OSError as exc:  # the directory could not be made
            error = RecordingError(f"cannot create the recordings directory: {exc}")
            error.__cause__ = exc
            return self._report(leg_id, recording_id, error)
        except RecordingError as exc:
            return self._report(leg_id, recording_id, exc)
        self._active[leg_id] = ActiveRecording(recording_id, recorder, options, now)
        return None

    def _free_path(self, directory: Path, name: str, extension: str) -> Path:
        taken = {active.recorder.path for active in self._active.values()}
        path = directory / f"{name}.{extension}"
        suffix = 1
        while path.exists() or path in taken:
            suffix += 1
            path = directory / f"{name}-{suffix}.{extension}"
        return path

    def take(self, leg_id: str) -> ActiveRecording | None:
        """The leg's recording, no longer fed, to be closed (off the media path)."""
        return self._active.pop(leg_id, None)

    def write(
        self, leg_id: str, spoken: NDArray[np.int16], heard: NDArray[np.int16]
    ) -> RecordingFailed | None:
        """Feed one tick of the leg's audio to its recording, if it has one; never waits. A
        recording found failed is taken out and aborted: the returned event says so."""
        active = self._active.get(leg_id)
        if active is None or active.recorder.write(spoken, heard):
            return None
        failure = active.recorder.failure
        if failure is None:
            return None  # max length reached: the machine's RECORD_LIMIT timer stops it
        del self._active[leg_id]
        active.recorder.abort()
        return self.failed(leg_id, active, failure)

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
