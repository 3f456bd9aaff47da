"""What goes into a recording's file, and how it fails: the pieces ``media.recorder`` builds on.

- ``compose``: one frame of each direction in the file's channel layout;
- ``is_silent``: whether a frame counts as silence for trimming (RMS under ``SILENCE_DBFS``);
- ``wav_header`` (PCM, 44 bytes) and ``mp3_encoder`` (lameenc, loaded only when asked for);
- ``FileOpener``: how the recorder opens its file (``open_new_file``; tests inject failing disks).

    MediaError
    +-- RecordingError                  the file could not be written (wraps the OSError)
        +-- UnsupportedRecordingFormat  a format this installation cannot write (mp3, no lameenc)
        +-- RecordingStalled            the writer fell too far behind: the disk is stalled
"""

from __future__ import annotations

import importlib
import math
import pathlib
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError

__all__ = [
    "SILENCE_DBFS",
    "WAV_HEADER_BYTES",
    "FileOpener",
    "RecordingError",
    "RecordingStalled",
    "UnsupportedRecordingFormat",
    "compose",
    "is_silent",
    "mp3_encoder",
    "open_new_file",
    "wav_header",
]

#: A frame whose RMS is under this level (full-scale sine = 0 dBFS) counts as silence for trimming;
#: comfort noise (-70) and quiet line noise are silence, speech (-20 to -35) is not.
SILENCE_DBFS = -50.0
_SILENCE_RMS = 32767.0 * math.pow(10.0, SILENCE_DBFS / 20.0) / math.sqrt(2.0)
WAV_HEADER_BYTES = 44
#: MP3 bit rate per channel, in kbit/s: ample for 8 kHz telephone audio.
_MP3_KBPS_PER_CHANNEL = 32


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
