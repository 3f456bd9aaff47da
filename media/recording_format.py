"""What goes into a recording's file, and how it fails: the pieces ``media.recorder`` builds on.

- ``compose``: one frame of each direction in the file's channel layout;
- ``is_silent``: whether a frame counts as silence for trimming (RMS under ``SILENCE_DBFS``);
- ``wav_header`` (PCM, 44 bytes) and ``mp3_encoder`` (lameenc, loaded only when asked for);
- ``FileOpener``: how the recorder opens its file (``open_new_file``; tests inject failing disks);
- ``resume_wav`` / ``resume_mp3``: an existing file made ready to be appended to (a recording
  continued by a new process, ``open_existing_file``), its torn tail from a kill cut off.

    MediaError
    +-- RecordingError                  the file could not be written (wraps the OSError)
        +-- UnsupportedRecordingFormat  a format this installation cannot write (mp3, no lameenc)
        +-- RecordingStalled            the writer fell too far behind: the disk is stalled
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import pathlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError

__all__ = [
    "SILENCE_DBFS",
    "WAV_HEADER_BYTES",
    "FileOpener",
    "RecordingError",
    "RecordingResult",
    "RecordingStalled",
    "UnsupportedRecordingFormat",
    "claim_free_path",
    "compose",
    "is_silent",
    "mp3_encoder",
    "open_existing_file",
    "open_new_file",
    "open_recording",
    "resume_mp3",
    "resume_wav",
    "wav_header",
]

#: A frame whose RMS is under this level (full-scale sine = 0 dBFS) counts as silence for trimming;
#: comfort noise (-70) and quiet line noise are silence, speech (-20 to -35) is not.
SILENCE_DBFS = -50.0
_SILENCE_RMS = 32767.0 * math.pow(10.0, SILENCE_DBFS / 20.0) / math.sqrt(2.0)
WAV_HEADER_BYTES = 44
#: MP3 bit rate per channel, in kbit/s: ample for 8 kHz telephone audio.
_MP3_KBPS_PER_CHANNEL = 32


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


class RecordingError(MediaError):
    """The recording could not be written; ``__cause__`` holds the underlying error."""


class UnsupportedRecordingFormat(RecordingError):
    """A ``record_format`` this installation cannot produce."""

    def __init__(self, fmt: str, reason: str) -> None:
        super().__init__(f"cannot record in format {fmt!r}: {reason}")
        self.fmt = fmt


class RecordingStalled(RecordingError):
    """The writer fell too far behind (``MAX_QUEUED_FRAMES``), or did not finish in time."""


#: Opens a recording's file for writing; tests pass one whose writes block or fail.
FileOpener = Callable[[pathlib.Path], BinaryIO]


def open_new_file(path: pathlib.Path) -> BinaryIO:
    """The real opener: the file created, or truncated, for binary writing."""
    return open(path, "wb")  # not a with-block: the recorder's writer owns and closes it


#: How many ``<stem>-<n>`` names ``claim_free_path`` tries before giving up.
FREE_NAME_ATTEMPTS = 1000


def claim_free_path(path: pathlib.Path) -> pathlib.Path:
    """``path``, or the first of ``<stem>-2``, ``<stem>-3``... that does not exist, created
    empty at once (``O_EXCL``): no other recording, in this process or another, can take it
    meanwhile, and no existing file is ever written over."""
    for n in range(1, FREE_NAME_ATTEMPTS + 1):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return candidate
    raise RecordingError(f"no free name for {path} in {FREE_NAME_ATTEMPTS} tries")


def open_existing_file(path: pathlib.Path) -> BinaryIO:
    """The opener for a recording continued by a new process: the file as it is, for reading
    and writing (it must exist: a recording whose file is gone cannot be continued)."""
    return open(path, "r+b")  # not a with-block: the recorder's writer owns and closes it


def open_recording(
    path: pathlib.Path,
    opener: FileOpener | None,
    fmt: str,
    channels: int,
    sample_rate: int,
    *,
    resume: bool,
) -> tuple[BinaryIO, int]:
    """The recording's file, open: a new one with its WAV header, or a resumed one ready to be
    appended to; and the samples per channel already in it. ``opener`` None: the real one."""
    if opener is None:
        opener = open_existing_file if resume else open_new_file
    try:
        file = opener(path)
    except OSError as exc:
        raise RecordingError(f"cannot open recording file {path}: {exc}") from exc
    try:
        if resume:
            resume_file = resume_wav if fmt == "wav" else resume_mp3
            return file, resume_file(file, channels, sample_rate)
        if fmt == "wav":
            file.write(wav_header(channels, sample_rate, 0))
            file.flush()
        return file, 0
    except (OSError, RecordingError) as exc:
        with contextlib.suppress(OSError):
            file.close()
        if isinstance(exc, RecordingError):
            raise RecordingError(f"cannot continue recording {path}: {exc}") from exc
        raise RecordingError(f"cannot open recording file {path}: {exc}") from exc


def compose(
    track: str, channels: int, spoken: NDArray[np.int16], heard: NDArray[np.int16]
) -> NDArray[np.int16]:
    """The frame as the file holds it: one track, both side by side (stereo), or their sum."""
    if track == "inbound":
        return spoken
    if track == "outbound":
        return heard
    if channels == 2:
        stereo: NDArray[np.int16] = np.column_stack((spoken, heard))
        return stereo
    mixed: NDArray[np.int32] = spoken.astype(np.int32) + heard
    return np.clip(mixed, -32768, 32767).astype(np.int16)


def is_silent(frame: NDArray[np.int16]) -> bool:
    if frame.size == 0:
        return True
    samples = frame.astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) < _SILENCE_RMS


def wav_header(channels: int, sample_rate: int, data_bytes: int) -> bytes:
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


def mp3_encoder(channels: int, sample_rate: int) -> Any:
    """A lameenc encoder for 16-bit PCM in this layout (lameenc ships no type hints)."""
    try:
        lameenc = importlib.import_module("lameenc")
    except ImportError as exc:
        raise UnsupportedRecordingFormat("mp3", "the lameenc package is not installed") from exc
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(_MP3_KBPS_PER_CHANNEL * channels)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(channels)
    encoder.set_quality(5)
    encoder.silence()
    return encoder


def resume_wav(file: BinaryIO, channels: int, sample_rate: int) -> int:
    """Make a WAV file this recorder wrote ready to be appended to; return its frames.

    The data chunk runs to the end of the file: the recorder writes the data before the header,
    so after a kill the header may name up to a flush interval less than is there. A partly
    written frame at the end (the kill cut a write) is cut off; the header is fixed by the
    recorder's next flush. Raises ``RecordingError`` for a file in another layout."""
    header = file.read(WAV_HEADER_BYTES)
    expected = wav_header(channels, sample_rate, 0)
    # Everything but the two size fields (RIFF size at 4..8, data size at 40..44) must match.
    if len(header) < WAV_HEADER_BYTES or header[8:40] != expected[8:40] or header[:4] != b"RIFF":
        raise RecordingError(
            f"not a {channels}-channel {sample_rate} Hz WAV file written by callbridge"
        )
    size = file.seek(0, 2)
    frames = (size - WAV_HEADER_BYTES) // (2 * channels)
    end = WAV_HEADER_BYTES + frames * 2 * channels
    if end != size:
        file.truncate(end)
        file.seek(end)
    return frames


# MPEG audio Layer III frame headers (ISO/IEC 11172-3 and 13818-3; MPEG 2.5 is the unofficial
# low-rate extension LAME writes at 8-12 kHz): version bits -> (sample rates, bit rates in
# kbit/s, samples per frame, bytes per frame = coefficient * bit rate / sample rate + padding).
_MPEG_VERSIONS: dict[int, tuple[tuple[int, ...], tuple[int, ...], int, int]] = {
    0b11: (
        (44100, 48000, 32000),
        (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
        1152,
        144,
    ),
    0b10: (
        (22050, 24000, 16000),
        (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
        576,
        72,
    ),
    0b00: (
        (11025, 12000, 8000),
        (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
        576,
        72,
    ),
}


def _mp3_frame(header: bytes) -> tuple[int, int, int, int] | None:
    """(length in bytes, samples, sample rate, channels) of the Layer III frame this 4-byte
    header starts; None if it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 0b11, (header[1] >> 1) & 0b11
    rate_index, bitrate_index = (header[2] >> 2) & 0b11, header[2] >> 4
    if version not in _MPEG_VERSIONS or layer != 0b01 or rate_index == 3:
        return None
    if bitrate_index in (0, 15):  # free format and the forbidden index: LAME writes neither
        return None
    rates, bitrates, samples, coefficient = _MPEG_VERSIONS[version]
    rate = rates[rate_index]
    length = coefficient * bitrates[bitrate_index] * 1000 // rate + ((header[2] >> 1) & 1)
    channels = 1 if header[3] >> 6 == 0b11 else 2
    return length, samples, rate, channels


def resume_mp3(file: BinaryIO, channels: int, sample_rate: int) -> int:
    """Make an MP3 file this recorder wrote ready to be appended to; return the samples per
    channel its frames hold (the encoder's delay and last-frame padding included: a few hundred
    samples more than were recorded). Frames are only ever appended whole by the encoder, so
    the file is a run of frames; a frame the kill cut short is cut off. Raises
    ``RecordingError`` for a file that is not such a run in this layout. Only the headers are
    read: a 4 h recording is about 200,000 of them, well under a second."""
    size = file.seek(0, 2)
    offset = samples = 0
    while offset + 4 <= size:
        file.seek(offset)
        frame = _mp3_frame(file.read(4))
        if frame is None or frame[2:] != (sample_rate, channels):
            raise RecordingError(
                f"not a {channels}-channel {sample_rate} Hz MP3 file written by callbridge "
                f"(no frame of that layout at byte {offset})"
            )
        if offset + frame[0] > size:
            break
        offset += frame[0]
        samples += frame[1]
    if offset != size:
        file.truncate(offset)
    file.seek(offset)
    return samples
