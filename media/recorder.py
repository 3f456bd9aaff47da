"""Recording a leg or a room to a WAV or MP3 file, off the media hot path.

The mixer calls ``Recorder.write(spoken, heard)`` once per tick; that only checks the frame, counts
it against ``max_length_s`` and puts copies on a queue. A writer thread owns the file: it turns
frames into the chosen channel layout and appends them to disk, then rewrites the WAV header
sizes (data first, header second), within ``flush_interval_s`` (1 s) of wall time after a frame
arrives and as soon as that much audio is pending. A process killed at any moment therefore
leaves a readable file missing at most about the last second. (Flushed means handed to the OS,
which survives kill -9; ``close`` also fsyncs.)

Layouts follow the bridge command's ``record_*`` options:

- ``track="both"``, ``channels="single"``: mono, the leg's own audio plus what it hears, clipped;
- ``track="both"``, ``channels="dual"``: stereo, spoken on the left, heard on the right;
- ``track="inbound"`` / ``"outbound"``: mono, only spoken / only heard (``channels`` is ignored).

``trim_silence`` drops leading silence as it comes (nothing is written before the first sound)
and trailing silence at ``close``: a WAV file is truncated back to the end of the last sound; for
MP3, silence after the last sound is held in memory and only encoded once sound follows it.
Silence is judged per written frame: RMS under ``SILENCE_DBFS``.

A disk that stalls or fills never holds up the caller: ``write`` only queues, never more than
``MAX_QUEUED_FRAMES`` (``media.recorder_queue``). A writer with no frame taken for ``STALL_AFTER_S``
while frames wait, or with that many waiting (a stalled disk), or failing (ENOSPC, EIO, any
error) fails the recording: ``failure`` says why, ``write`` takes no more audio, and ``abort``
(never blocking) or ``close`` (waiting at most ``CLOSE_WAIT_S``) ends it. The writer thread closes
the file as well as it can (a WAV header for what reached the disk) once a stuck write returns,
if ever; nobody waits for it. Formats, silence test and errors live in ``media.recording_format``.

A recording outlives its process: ``suspend`` closes the file like ``close`` but trims nothing,
and a new ``Recorder`` with ``resume`` appends to the same file (a kill's torn tail cut off);
``pad_silence`` writes the time nobody recorded as silence, so the file keeps the call's timeline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from media.recorder_queue import (
    MAX_QUEUED_FRAMES,
    STALL_AFTER_S,
    Close,
    Flush,
    Gap,
    Item,
    WriterQueue,
)
from media.recording_format import (
    SILENCE_DBFS,
    WAV_HEADER_BYTES,
    FileOpener,
    RecordingError,
    RecordingResult,
    RecordingStalled,
    UnsupportedRecordingFormat,
    claim_free_path,
    compose,
    is_silent,
    mp3_encoder,
    open_new_file,
    open_recording,
    wav_header,
)

__all__ = [
    "CLOSE_WAIT_S",
    "MAX_QUEUED_FRAMES",
    "SILENCE_DBFS",
    "STALL_AFTER_S",
    "FileOpener",
    "Recorder",
    "RecordingError",
    "RecordingResult",
    "RecordingStalled",
    "UnsupportedRecordingFormat",
    "open_new_file",
]

#: How long ``close`` waits for the writer to finish the file (flush about 1 s of audio, fsync)
#: before the recording counts as stalled; the writer is then left to finish on its own.
CLOSE_WAIT_S = 10.0


class Recorder:
    """One recording: ``write`` per tick from the media path, ``close`` once at the end.

    ``write`` and ``close`` are meant for one thread (the media loop); ``close`` blocks until the
    file is complete (or ``CLOSE_WAIT_S``), so an asyncio caller runs it in an executor.
    ``on_flush``, if given, is called from the writer thread with the number of frames on disk
    after each flush. ``opener`` opens the file (tests inject disks that block or fail; None:
    the real one). ``resume``: continue the recording in the file (module docstring);
    ``RecordingError`` if this layout cannot continue it. A new file is created by the writer
    thread (its directory too), so the constructor never waits on the disk: ``open_state``
    says when it is open, or that it could not be; ``unique``: never over an existing file,
    the first free ``<stem>-<n>`` name instead (``path`` is the one taken once open).
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        channels: Literal["single", "dual"] = "single",
        track: Literal["both", "inbound", "outbound"] = "both",
        max_length_s: float = 0,
        trim_silence: bool = False,
        fmt: Literal["wav", "mp3"] = "wav",
        sample_rate: int = 8000,
        flush_interval_s: float = 1.0,
        on_flush: Callable[[int], None] | None = None,
        opener: FileOpener | None = None,
        stall_after_s: float = STALL_AFTER_S,
        max_queued_frames: int = MAX_QUEUED_FRAMES,
        resume: bool = False,
        unique: bool = False,
    ) -> None:
        if channels not in ("single", "dual"):
            raise ValueError(f"channels must be 'single' or 'dual', got {channels!r}")
        if track not in ("both", "inbound", "outbound"):
            raise ValueError(f"track must be 'both', 'inbound' or 'outbound', got {track!r}")
        if max_length_s < 0 or sample_rate <= 0 or flush_interval_s <= 0:
            raise ValueError("max_length_s must be >= 0, sample_rate and flush_interval_s > 0")
        if fmt not in ("wav", "mp3"):
            raise UnsupportedRecordingFormat(str(fmt), "only 'wav' and 'mp3' are supported")
        self.path = pathlib.Path(path)
        self.track = track
        self.fmt: Literal["wav", "mp3"] = fmt
        self.sample_rate = sample_rate
        self.channels = 2 if channels == "dual" and track == "both" else 1
        self.trim_silence = trim_silence
        self._max_samples = round(max_length_s * sample_rate)
        self._flush_interval_s = flush_interval_s
        self._flush_samples = max(1, round(flush_interval_s * sample_rate))
        self._on_flush = on_flush

        self._encoder: Any = mp3_encoder(self.channels, sample_rate) if fmt == "mp3" else None
        # Not a with-block: the file lives as long as the recording, owned by the writer. A new
        # one is opened by the writer (``_open_new``), so that a disk that stalls on open stalls
        # only the writer; a resumed one here, since how much it holds is needed at once.
        self._file: BinaryIO | None = None
        self._opener = opener
        self._unique = unique
        existing = 0
        if resume:
            self._file, existing = open_recording(
                self.path, opener, fmt, self.channels, sample_rate, resume=True
            )
        self._opened = resume  # set by the writer once its new file is open
        self._open_deadline = time.monotonic() + stall_after_s

        # Caller-side state (the hot path).
        self._queue: WriterQueue[Item] = WriterQueue(
            stall_after_s=stall_after_s, max_frames=max_queued_frames
        )
        self._received = existing  # samples per channel accepted by write(), or on file
        self._full = 0 < self._max_samples <= existing
        self._closing = False
        self._stalled: RecordingStalled | None = None  # set on this side, read by the writer
        self._result: RecordingResult | None = None

        # Writer-side state: touched only by the writer thread.
        self._pending: list[NDArray[np.int16]] = []  # composed frames not yet on disk
        self._pending_samples = 0
        self._deadline = 0.0
        self._started = existing > 0 or not trim_silence  # False while dropping leading silence
        self._held_silence: list[NDArray[np.int16]] = []  # mp3 trim: silence after last sound
        self._encoder_fed = False
        # wav: frames in the data chunk; mp3: frames fed to lame (or found in the file)
        self._frames_on_disk = existing
        # Frames up to the end of the last non-silent frame; a resumed file's are all kept.
        self._last_sound_end = existing
        self._error: RecordingError | None = None

        self._thread = threading.Thread(
            target=self._run, name=f"recorder:{self.path.name}", daemon=True
        )
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------

    @property
    def max_length_reached(self) -> bool:
        return self._full

    @property
    def failure(self) -> RecordingError | None:
        """Why the recording failed (a ``RecordingStalled`` if the disk fell behind); None
        while it has not."""
        return self._stalled or self._error

    def open_state(self) -> Literal["opening", "open", "failed"]:
        """Whether the writer has opened the file yet. Still opening ``stall_after_s`` after
        the recorder was made, the disk is stalled: the recording fails (``failure``)."""
        if self.failure is not None:
            return "failed"
        if self._opened:
            return "open"
        if time.monotonic() >= self._open_deadline:
            self._stall(f"its file was not opened within {self._queue.stall_after_s:g} s")
            return "failed"
        return "opening"

    @property
    def queued_frames(self) -> int:
        """Frames waiting for the writer (never above ``max_queued_frames``)."""
        return len(self._queue)

    def write(self, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> bool:
        """Queue one frame of each direction, never waiting. False: no more audio is taken (max
        length reached, recorder closed, or the recording failed: see ``failure``); the frame
        that reaches the limit is cut to fit and kept."""
        if self._full or self._closing or self.failure is not None:
            return False
        if spoken.shape != heard.shape or spoken.ndim != 1:
            raise ValueError(
                f"spoken and heard must be 1-D of one length: {spoken.shape}, {heard.shape}"
            )
        if spoken.dtype != np.int16 or heard.dtype != np.int16:
            raise ValueError("spoken and heard must be int16")
        behind = self._queue.behind()
        if behind is not None:
            self._stall(behind)
            return False
        n = len(spoken)
        if self._max_samples:
            room = self._max_samples - self._received
            if n >= room:
                n = room
                self._full = True
        self._received += n
        self._queue.put((spoken[:n].copy(), heard[:n].copy()))
        return not self._full

    def pad_silence(self, seconds: float) -> None:
        """Queue this much silence (the time a resumed recording was not recorded), within
        the max length; never waits (the writer makes it a second at a time)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        samples = round(seconds * self.sample_rate)
        if self._full or self._closing or self.failure is not None or not samples:
            return
        if self._max_samples:
            samples = min(samples, self._max_samples - self._received)
            self._full = self._received + samples >= self._max_samples
        self._received += samples
        self._queue.put(Gap(samples))

    def flush(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Block until everything written so far is on disk with a valid header (at most
        ``timeout`` seconds: then the recording has stalled)."""
        if self._closing:
            return
        done = threading.Event()
        self._queue.put(Flush(done))
        if not done.wait(timeout):
            self._stall(f"a flush took more than {timeout} s")
        self._raise_if_failed()

    def abort(self, *, trim: bool = True) -> None:
        """Stop taking audio and have the writer close the file when it can; never blocks.
        For a failed recording that nobody will ``close``."""
        if not self._closing:
            self._closing = True
            self._queue.put(Close(trim))

    def close(self, timeout: float = CLOSE_WAIT_S) -> RecordingResult:
        """Finish the file (flush, trim, final header) and describe it, waiting at most
        ``timeout`` seconds for the writer. Idempotent. Raises ``RecordingError`` if the
        recording failed (``RecordingStalled`` if the writer did not finish in time)."""
        return self._end(timeout, trim=True)

    def suspend(self, timeout: float = CLOSE_WAIT_S) -> RecordingResult:
        """Like ``close`` (MP3 encoder flushed, WAV header final, fsynced) but nothing is
        trimmed: the recording is not over, a later ``Recorder`` resumes the file."""
        return self._end(timeout, trim=False)

    def _end(self, timeout: float, *, trim: bool) -> RecordingResult:
        self.abort(trim=trim)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stall(f"the writer did not finish the file within {timeout} s")
        self._raise_if_failed()
        assert self._result is not None  # set by the writer before it exits without error
        return self._result

    def _stall(self, why: str) -> None:
        if self._stalled is None:
            self._stalled = RecordingStalled(f"recording {self.path} stalled: {why}")

    def _raise_if_failed(self) -> None:
        failure = self.failure
        if failure is not None:
            raise failure

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        if not self._opened:
            self._guarded(self._open_new)
        while True:
            # Checked on every turn, not only on a quiet queue: frames trickling in slower than
            # real time must not postpone the flush forever.
            timeout = None
            if self._pending_samples:
                timeout = self._deadline - time.monotonic()
                if timeout <= 0:
                    self._guarded(self._flush_pending)
                    continue
            try:
                item = self._queue.get(timeout)
            except queue.Empty:
                continue
            if isinstance(item, Close):
                self._guarded(functools.partial(self._finish, item.trim))
                self._close_file()
                return
            if isinstance(item, Gap):
                self._guarded(functools.partial(self._take_gap, item.samples))
            elif isinstance(item, Flush):
                self._guarded(self._flush_pending)
                item.done.set()
            else:
                self._queue.took_frame()
                spoken, heard = item
                self._guarded(functools.partial(self._take, spoken, heard))

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a writer step; once the recording failed, drop audio but keep answering."""
        if self.failure is None:
            try:
                step()
                return
            except Exception as exc:  # reported to the caller by failure, flush() and close()
                self._fail(exc)
        # Nothing more reaches the disk: free the audio held for it.
        self._pending, self._pending_samples, self._held_silence = [], 0, []

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, RecordingError):  # already says what failed, with its cause
            self._error = exc
            return
        error = RecordingError(f"recording {self.path} failed: {exc}")
        error.__cause__ = exc
        self._error = error

    def _open_new(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        path = claim_free_path(self.path) if self._unique else self.path
        self._file, _ = open_recording(
            path, self._opener, self.fmt, self.channels, self.sample_rate, resume=False
        )
        self.path = path  # before _opened: whoever sees it open sees the path taken
        self._opened = True

    def _out(self) -> BinaryIO:
        """The open file (writer steps run only once it is: ``_guarded``)."""
        assert self._file is not None
        return self._file

    def _close_file(self) -> None:
        """Close the file; a failed WAV first gets a header for what reached the disk, if it can."""
        if self._file is None:  # never opened
            return
        failed = self.failure is not None
        if failed and self.fmt == "wav":
            with contextlib.suppress(Exception):
                self._write_header(self._frames_on_disk)
        try:
            self._file.close()  # closes the descriptor even when its last flush fails
        except Exception as exc:
            if not failed:
                self._fail(exc)

    def _take(self, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> None:
        frame = compose(self.track, self.channels, spoken, heard)
        silent = self.trim_silence and is_silent(frame)
        if self.trim_silence:
            if not self._started:
                if silent:
                    return
                self._started = True
            if self.fmt == "mp3":
                if silent:
                    self._held_silence.append(frame)
                    return
                self._queue_pending(self._held_silence)
                self._held_silence = []
        self._queue_pending([frame])
        if self.trim_silence and not silent:
            self._last_sound_end = self._frames_on_disk + self._pending_samples
        if self._pending_samples >= self._flush_samples:
            self._flush_pending()

    def _take_gap(self, samples: int) -> None:
        """Silence, a second at a time: judged, trimmed and flushed as any audio is."""
        for start in range(0, samples, self.sample_rate):
            silence = np.zeros(min(self.sample_rate, samples - start), dtype=np.int16)
            self._take(silence, silence)

    def _queue_pending(self, frames: list[NDArray[np.int16]]) -> None:
        if frames and not self._pending_samples:
            self._deadline = time.monotonic() + self._flush_interval_s
        for frame in frames:
            self._pending.append(frame)
            self._pending_samples += len(frame)

    def _flush_pending(self) -> None:
        if not self._pending_samples:
            return
        file = self._out()
        pcm = np.concatenate(self._pending).astype("<i2", copy=False).tobytes()
        if self.fmt == "wav":
            file.write(pcm)
            self._frames_on_disk += self._pending_samples
            self._write_header(self._frames_on_disk)
        else:
            file.write(self._encoder.encode(pcm))
            self._encoder_fed = True
            self._frames_on_disk += self._pending_samples
        file.flush()
        self._pending = []
        self._pending_samples = 0
        if self._on_flush is not None:
            self._on_flush(self._frames_on_disk)

    def _write_header(self, frames: int) -> None:
        file = self._out()
        end = file.tell()
        file.seek(0)
        file.write(wav_header(self.channels, self.sample_rate, frames * 2 * self.channels))
        file.seek(end)

    def _finish(self, trim: bool) -> None:
        self._flush_pending()
        file = self._out()
        frames = self._frames_on_disk
        if self.fmt == "wav":
            if self.trim_silence and trim:
                frames = self._last_sound_end
                file.truncate(WAV_HEADER_BYTES + frames * 2 * self.channels)
                self._write_header(frames)
        elif self._encoder_fed:  # lame refuses to flush an encoder that was fed nothing
            self._held_silence = []  # trailing silence is never encoded
            file.write(self._encoder.flush())
        file.flush()
        os.fsync(file.fileno())
        self._result = RecordingResult(
            path=self.path,
            duration_s=frames / self.sample_rate,
            channels=self.channels,
            format=self.fmt,
            size_bytes=os.fstat(file.fileno()).st_size,
            max_length_reached=self._full,
        )
