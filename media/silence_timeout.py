"""When a recording's silence timeout runs out: ``timeout_secs`` of silence once speech was heard.

Telnyx's ``record_start`` documents ``timeout_secs`` as "The number of seconds that Telnyx will
wait for the recording to be stopped if silence is detected. The timer only starts when the
speech is detected." (telnyx SDK, ``types/calls/action_start_recording_params.py``; bridge's
``record_timeout_secs`` the same). Telnyx detects speech with its transcription; callbridge
judges each 20 ms frame by level instead, with the one silence test recordings use
(``media.recording_format.is_silent``: RMS under ``SILENCE_DBFS``, -50 dBFS), so a frame is
speech when any recorded direction is louder than that. Pure: frames in, a verdict out; it
counts samples, so the media tick's frames are its clock.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from media.recording_format import is_silent

__all__ = ["SilenceTimeout"]


class SilenceTimeout:
    """Counts silence after the first speech; ``feed`` says True once, when it reaches
    ``timeout_s``. The first ``ignore_s`` of audio never count as speech (a recording's own
    start beep is loud, and it is not speech)."""

    __slots__ = ("_ignore", "_limit", "_silent", "expired", "heard_speech")

    def __init__(self, timeout_s: float, sample_rate: int, *, ignore_s: float = 0.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._limit = round(timeout_s * sample_rate)
        self._ignore = round(ignore_s * sample_rate)
        self._silent = 0
        self.heard_speech = False
        self.expired = False

    def feed(self, *directions: NDArray[np.int16]) -> bool:
        """One frame of each recorded direction (of one length). True on the frame that
        completes ``timeout_s`` of silence after speech; False before and after it."""
        if self.expired:
            return False
        n = len(directions[0])
        if self._ignore > 0:
            self._ignore -= n
            return False
        if not all(is_silent(frame) for frame in directions):
            self.heard_speech = True
            self._silent = 0
            return False
        if not self.heard_speech:
            return False
        self._silent += n
        self.expired = self._silent >= self._limit
        return self.expired
