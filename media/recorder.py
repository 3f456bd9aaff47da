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

    MediaError
    +-- RecordingError                  the file could not be written (wraps the OSError)
        +-- UnsupportedRecordingFormat  a format this installation cannot write (mp3, no lameenc)
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import pathlib
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError

__all__ = [
    "SILENCE_DBFS",
    "Recorder",
    "RecordingError",
    "RecordingResult",
    "UnsupportedRecordingFormat",
]

#: A frame whose RMS is under this level (full-scale sine = 0 dBFS) counts as silence for trimming;
#: comfort noise (-70) and quiet line noise are silence, speech (-20 to -35) is not.
SILENCE_DBFS = -50.0
_SILENCE_RMS = 32767.0 * math.pow(10.0, SILENCE_DBFS / 20.0) / math.sqrt(2.0)
_WAV_HEADER_BYTES = 44
#: MP3 bit rate per channel, in kbit/s: ample for 8 kHz telephone audio.
_MP3_KBPS_PER_CHANNEL = 32


class RecordingError(MediaError):
    """The recording could not be written; ``__cause__`` holds the underlying error."""


class UnsupportedRecordingFormat(RecordingError):
    """A ``record_format`` this installation cannot produce."""

    def __init__(self, fmt: str, reason: str) -> None:
        super().__init__(f"cannot record in format {fmt!r}: {reason}")
        self.fmt = fmt


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What ``Recorder.close`` produced."""

    path: pathlib.Path
    duration_s: float
    channels: int
    format: Literal["wav", "mp3"]
    size_bytes: int
    #: True when recording stopped because ``max_length_s`` was reached.
    max_length_reached: bool


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


class _Close:
    """Sentinel: finish the file and stop the writer."""


_Item = tuple[NDArray[np.int16], NDArray[np.int16]] | _Flush | _Close


def _wav_header(channels: int, sample_rate: int, data_bytes: int) -> bytes:
    block_align = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        16,
        b"data",
        data_bytes,
    )


def _load_lameenc() -> Any:
    try:
        return importlib.import_module("lameenc")
    except ImportError as exc:
        raise UnsupportedRecordingFormat("mp3", "the lameenc package is not installed") from exc


class Recorder:
    """One recording: ``write`` per tick from the media path, ``close`` once at the end.

    ``write`` and ``close`` are meant for one thread (the media loop); ``close`` blocks until the
    file is complete, so an asyncio caller runs it in an executor. ``on_flush``, if given, is
    called from the writer thread with the number of frames on disk after each flush.
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

        self._encoder: Any = None
        if fmt == "mp3":
            lameenc = _load_lameenc()
            self._encoder = lameenc.Encoder()
            self._encoder.set_bit_rate(_MP3_KBPS_PER_CHANNEL * self.channels)
            self._encoder.set_in_sample_rate(sample_rate)
            self._encoder.set_channels(self.channels)
            self._encoder.set_quality(5)
            self._encoder.silence()

        try:
            # Not a with-block: the file lives as long as the recording, owned by the writer.
            self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115
            if fmt == "wav":
                self._file.write(_wav_header(self.channels, sample_rate, 0))
                self._file.flush()
        except OSError as exc:
            raise RecordingError(f"cannot open recording file {self.path}: {exc}") from exc

        # Caller-side state (the hot path).
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._received = 0  # samples per channel accepted by write()
        self._full = False
        self._closing = False
        self._result: RecordingResult | None = None

        # Writer-side state: touched only by the writer thread.
        self._pending: list[NDArray[np.int16]] = []  # composed frames not yet on disk
        self._pending_samples = 0
        self._deadline = 0.0
        self._started = not trim_silence  # False while dropping leading silence
        self._held_silence: list[NDArray[np.int16]] = []  # mp3 trim: silence after last sound
        self._frames_on_disk = 0  # wav: frames in the data chunk; mp3: frames fed to lame
        self._last_sound_end = 0  # frames, up to the end of the last non-silent frame
        self._error: BaseException | None = None

        self._thread = threading.Thread(
            target=self._run, name=f"recorder:{self.path.name}", daemon=True
        )
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------

    @property
    def max_length_reached(self) -> bool:
        return self._full

    def write(self, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> bool:
        """Queue one frame of each direction. False: no more audio is taken (max length
        reached, recorder closed, or the writer failed); the frame that reaches the limit is
        cut to fit and kept."""
        if self._full or self._closing or self._error is not None:
            return False
        if spoken.shape != heard.shape or spoken.ndim != 1:
            raise ValueError(
                f"spoken and heard must be 1-D of one length: {spoken.shape}, {heard.shape}"
            )
        if spoken.dtype != np.int16 or heard.dtype != np.int16:
            raise ValueError("spoken and heard must be int16")
        n = len(spoken)
        if self._max_samples:
            room = self._max_samples - self._received
            if n >= room:
                n = room
                self._full = True
        self._received += n
        self._queue.put((spoken[:n].copy(), heard[:n].copy()))
        return not self._full

    def flush(self) -> None:
        """Block until everything written so far is on disk with a valid header."""
        if self._closing:
            return
        done = threading.Event()
        self._queue.put(_Flush(done))
        done.wait()
        self._raise_if_failed()

    def close(self) -> RecordingResult:
        """Finish the file (flush, trim, final header) and describe it. Idempotent."""
        if not self._closing:
            self._closing = True
            self._queue.put(_Close())
            self._thread.join()
        self._raise_if_failed()
        assert self._result is not None  # set by the writer before it exits without error
        return self._result

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RecordingError(f"recording {self.path} failed: {self._error}") from self._error

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
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
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            if isinstance(item, _Close):
                self._guarded(self._finish)
                try:
                    self._file.close()
                except OSError as exc:
                    self._error = self._error or exc
                return
            if isinstance(item, _Flush):
                self._guarded(self._flush_pending)
                item.done.set()
            else:
                spoken, heard = item
                self._guarded(functools.partial(self._take, spoken, heard))

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a writer step; after the first failure, drop audio but keep answering."""
        if self._error is not None:
            return
        try:
            step()
        except Exception as exc:  # reported to the caller by flush()/close()/write()
            self._error = exc

    def _take(self, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> None:
        frame = self._compose(spoken, heard)
        silent = self.trim_silence and self._is_silent(frame)
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

    def _compose(self, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> NDArray[np.int16]:
        if self.track == "inbound":
            return spoken
        if self.track == "outbound":
            return heard
        if self.channels == 2:
            stereo: NDArray[np.int16] = np.column_stack((spoken, heard))
            return stereo
        mixed: NDArray[np.int32] = spoken.astype(np.int32) + heard
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    @staticmethod
    def _is_silent(frame: NDArray[np.int16]) -> bool:
        if frame.size == 0:
            return True
        samples = frame.astype(np.float64)
        return float(np.sqrt(np.mean(samples * samples))) < _SILENCE_RMS

    def _queue_pending(self, frames: list[NDArray[np.int16]]) -> None:
        if frames and not self._pending_samples:
            self._deadline = time.monotonic() + self._flush_interval_s
        for frame in frames:
            self._pending.append(frame)
            self._pending_samples += len(frame)

    def _flush_pending(self) -> None:
        if not self._pending_samples:
            return
        pcm = np.concatenate(self._pending).astype("<i2", copy=False).tobytes()
        if self.fmt == "wav":
            self._file.write(pcm)
            self._frames_on_disk += self._pending_samples
            self._write_header(self._frames_on_disk)
        else:
            self._file.write(self._encoder.encode(pcm))
            self._frames_on_disk += self._pending_samples
        self._file.flush()
        self._pending = []
        self._pending_samples = 0
        if self._on_flush is not None:
            self._on_flush(self._frames_on_disk)

    def _write_header(self, frames: int) -> None:
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(_wav_header(self.channels, self.sample_rate, frames * 2 * self.channels))
        self._file.seek(end)

    def _finish(self) -> None:
        self._flush_pending()
        frames = self._frames_on_disk
        if self.fmt == "wav":
            if self.trim_silence:
                frames = self._last_sound_end
                self._file.truncate(_WAV_HEADER_BYTES + frames * 2 * self.channels)
                self._write_header(frames)
        else:
            self._held_silence = []  # trailing silence is never encoded
            self._file.write(self._encoder.flush())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._result = RecordingResult(
            path=self.path,
            duration_s=frames / self.sample_rate,
            channels=self.channels,
            format=self.fmt,
            size_bytes=os.fstat(self._file.fileno()).st_size,
            max_length_reached=self._full,
        )
