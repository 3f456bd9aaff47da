"""Digits sent to one leg, as one tone source: every send after the previous one, in order.

``send_dtmf`` strings follow Telnyx's Call Control reference (POST /v2/calls/{id}/actions/
send_dtmf, https://developers.telnyx.com/api/call-control/send-dtmf, and the official SDK's
``types/calls/action_send_dtmf_params.py``): digits 0-9, A-D, ``*`` and ``#``; ``w`` a pause of
0.5 s and ``W`` of 1 s; ``duration_millis`` each digit's tone, 100 to 500 ms, 250 by default.

A far end's DTMF receiver hears one pair of tones at a time, so a leg's digits never overlap:
``push`` appends a send's digits behind whatever is still waiting, and the source plays them one
segment at a time (a digit's tone, the gap after it, or a pause). A tone is followed by a gap of
``GAP_MS`` unless a pause comes next (the pause replaces it, so ``1w2`` leaves exactly 0.5 s
between the tones); the gap after the last tone is played too, so a send queued later never
joins its first digit to the previous one (the same digit twice would be heard as one press).
A pause that opens a send queued after that closing gap started follows the gap.

``restart_current`` is for a stream that broke: the segment it cut plays again from its start on
the next stream. A digit cut short may be too short for the far end to accept (ITU-T Q.24: under
23 ms is rejected, 40 ms accepted) and the frames in flight when a stream breaks may be lost
with it, so continuing where it stopped could lose the digit silently; playing it whole again
risks only a repeat of a digit the far end had already accepted before the break.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from media.dtmf import DTMF_DIGITS, InvalidDtmfDigit, dtmf_tone

__all__ = ["GAP_MS", "PAUSES_MS", "DigitQueue"]

#: Pause characters of ``send_dtmf`` strings and their length.
PAUSES_MS = {"w": 500, "W": 1000}
#: Silence after each digit's tone, unless a pause follows.
GAP_MS = 100
_GAP = ""  # the segment name of a gap


class DigitQueue:
    """One leg's outgoing digits, played in the order they were pushed, one at a time.

    A segment is ``(character, milliseconds)``: a digit, a pause (``w``/``W``) or a gap (``""``).
    Called with ``n``, it returns the next ``n`` samples; on the call that plays the last sample
    of the last segment it calls ``on_end`` once (then silence, until something is pushed again,
    which the owner must start anew: an ended queue calls ``on_end`` again when it empties).
    """

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        level_dbfs: float = -10.0,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.level_dbfs = level_dbfs
        self._on_end = on_end
        self._waiting: deque[tuple[str, int]] = deque()
        self._current: NDArray[np.int16] | None = None
        self._current_segment: tuple[str, int] | None = None
        self._position = 0

    @property
    def idle(self) -> bool:
        """Nothing playing and nothing waiting."""
        return self._current is None and not self._waiting

    def push(self, digits: str, tone_ms: int) -> None:
        """Queue ``digits`` (each tone ``tone_ms`` long) behind everything already queued; an
        invalid character refuses the whole string (``InvalidDtmfDigit``)."""
        segments = []
        for char in digits:
            if char in PAUSES_MS:
                segments.append((char, PAUSES_MS[char]))
            elif char in DTMF_DIGITS:
                segments.append((char, tone_ms))
            else:
                raise InvalidDtmfDigit(char)
        self._waiting.extend(segments)

    def restart_current(self) -> None:
        """The segment being played starts again from its beginning (the stream broke)."""
        self._position = 0

    def clear(self) -> None:
        """Drop everything, playing or waiting; ``on_end`` is not called (the caller knows)."""
        self._waiting.clear()
        self._current = self._current_segment = None
        self._position = 0

    def __call__(self, n: int) -> NDArray[np.int16]:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n:
            if self._current is None and not self._next_segment():
                break  # ended before this call: silence
            assert self._current is not None
            take = min(n - filled, self._current.size - self._position)
            out[filled : filled + take] = self._current[self._position : self._position + take]
            filled += take
            self._position += take
            if self._position == self._current.size:
                self._finish_segment()
                if self.idle:  # the last sample: end now, not on the next call
                    if self._on_end is not None:
                        self._on_end()
                    break
        return out

    def _next_segment(self) -> bool:
        if not self._waiting:
            return False
        char, ms = self._current_segment = self._waiting.popleft()
        if char in PAUSES_MS or char == _GAP:
            self._current = np.zeros(ms * self.sample_rate // 1000, dtype=np.int16)
        else:
            self._current = dtmf_tone(char, ms, self.sample_rate, self.level_dbfs)
        self._position = 0
        return True

    def _finish_segment(self) -> None:
        finished = self._current_segment
        self._current = self._current_segment = None
        self._position = 0
        assert finished is not None
        is_tone = finished[0] not in PAUSES_MS and finished[0] != _GAP
        if is_tone and not (self._waiting and self._waiting[0][0] in PAUSES_MS):
            self._waiting.appendleft((_GAP, GAP_MS))
