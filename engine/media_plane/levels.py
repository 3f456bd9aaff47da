"""Input levels of the legs an operator watches: the console's level meters (engine/console).

Nothing is measured for a leg nobody watches. ``watch`` names the legs whose inbound frames the
media plane keeps, as they arrive, in a short bounded buffer (the frames already in hand: no copy,
no decoding on the media path); ``take``, called a few times a second by whoever shows the
meters, decodes what each leg sent since the last call and returns its RMS level in dBFS.

The level is the RMS against a full-scale sine (AES17), so a sine whose peak is N dB below full
scale reads N dBFS, the convention of ``media.tones.dbfs_to_amplitude``. Digital silence, whose
logarithm has no value, reads ``SILENT_DBFS``; a leg that sent nothing since the last ``take``
reads None (no media, or its stream stalled), which is not the same as silence.

The same frames serve an operator listening to a room (``engine/console/listening.py``): ``take``
keeps the decoded samples of the legs it is asked to (``keep``) in ``kept`` until the next call,
so a room's members are decoded once for their meters and their mix.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Container, Iterable

import numpy as np
from numpy.typing import NDArray

from media.codecs import AudioFormat, Encoding, decode
from media.tones import FULL_SCALE

__all__ = ["KEPT_FRAMES", "SILENT_DBFS", "InputLevels", "rms_dbfs"]

SILENT_DBFS = -100.0
#: Frames kept per watched leg between two ``take`` calls (a second of 20 ms frames): a reader
#: that stops reading costs a bounded buffer, and a level covers at most that much audio.
KEPT_FRAMES = 50


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 ``samples`` in dBFS, a full-scale sine reading 0."""
    if not samples.size:
        return SILENT_DBFS
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return SILENT_DBFS
    # A sine of peak A has RMS A/sqrt(2): scaling by sqrt(2) makes a full-scale sine 0 dBFS.
    level = 10.0 * math.log10(2.0 * mean_square / (FULL_SCALE * FULL_SCALE))
    return max(SILENT_DBFS, level)


class InputLevels:
    def __init__(self) -> None:
        # The watched legs, each with the frames it sent since the last ``take``; the media
        # plane appends to these (``MediaPlane.frame_in``), and only to these.
        self.frames: dict[str, deque[bytes]] = {}
        #: What the last ``take`` decoded of the legs it was asked to keep, with their rates.
        self.kept: dict[str, tuple[NDArray[np.int16], int]] = {}

    def watch(self, leg_ids: Iterable[str]) -> None:
        """Keep the frames of exactly these legs from now on; others' buffers are dropped."""
        wanted = set(leg_ids)
        for leg_id in self.frames.keys() - wanted:
            del self.frames[leg_id]
        for leg_id in wanted - self.frames.keys():
            self.frames[leg_id] = deque(maxlen=KEPT_FRAMES)

    def take(
        self, fmt_of: Callable[[str], AudioFormat | None], keep: Container[str] = ()
    ) -> dict[str, float | None]:
        """Each watched leg's level over what it sent since the last call (None: nothing);
        ``fmt_of`` names the format a leg's frames are in (a leg without one reads None). The
        samples of the legs in ``keep`` stay in ``kept`` until the next call."""
        levels: dict[str, float | None] = {}
        self.kept = {}
        for leg_id, frames in self.frames.items():
            fmt = fmt_of(leg_id)
            if fmt is None or not frames:
                levels[leg_id] = None
                frames.clear()
                continue
            payload = b"".join(frames)
            frames.clear()
            if fmt.encoding not in (Encoding.PCMU, Encoding.PCMA):  # whole 16-bit samples only
                payload = payload[: len(payload) // 2 * 2]
            samples = decode(fmt, payload)
            levels[leg_id] = round(rms_dbfs(samples), 1)
            if leg_id in keep:
                self.kept[leg_id] = (samples, fmt.sample_rate)
        return levels
