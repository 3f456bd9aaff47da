"""8 <-> 16 kHz resampling of many legs' frames at once, one matrix product per format group.

``media.codecs.Resampler`` filters one stream with ``np.convolve``; the mixer used one per
wideband leg, so each such leg cost a Python loop iteration and two small convolutions per tick.
A ``ResamplerBank`` keeps the same filter state (the last input samples) for every slot as a row
of one array, and runs the same FIR filter over a whole (legs, samples) block as one product
with a banded matrix built once per frame length: the filter taps laid out so that
``extended @ matrix`` gives, per row, what ``Resampler.process`` gives for that leg's frame. The
sums are the same products in another order, so a sample may differ from ``Resampler``'s by one
rounding step.

Frames are whole 20 ms (or any even-length) frames: downsampling keeps every other output
sample starting from the first, which is what ``Resampler`` does for a stream fed in even-length
pieces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from media.codecs import _LOWPASS, _UP_EVEN, _UP_ODD

__all__ = ["ResamplerBank"]

_RATES = frozenset({8000, 16000})


def _banded(taps: NDArray[np.float64], inputs: int, outputs: int, step: int) -> NDArray[np.float64]:
    """(inputs, outputs): column j holds the taps reversed from row ``step * j`` (a valid
    convolution's output ``step * j``)."""
    matrix = np.zeros((inputs, outputs))
    width = taps.size
    for j in range(outputs):
        matrix[step * j : step * j + width, j] = taps[::-1]
    return matrix


class ResamplerBank:
    """Per-slot filter state for one conversion (``from_rate`` -> ``to_rate``)."""

    def __init__(self, from_rate: int, to_rate: int, capacity: int = 0) -> None:
        for rate in (from_rate, to_rate):
            if rate not in _RATES:
                raise ValueError(f"can only resample between 8000 and 16000 Hz, not {rate}")
        if from_rate == to_rate:
            raise ValueError("a bank converts between two different rates")
        self.from_rate, self.to_rate = from_rate, to_rate
        self._up = to_rate > from_rate
        self._history_len = _UP_EVEN.size - 1 if self._up else _LOWPASS.size - 1
        self._history = np.zeros((capacity, self._history_len))
        self._matrices: dict[int, NDArray[np.float64]] = {}

    def ensure_capacity(self, rows: int) -> None:
        if rows > self._history.shape[0]:
            grown = np.zeros((rows, self._history_len))
            grown[: self._history.shape[0]] = self._history
            self._history = grown

    def reset(self, rows: NDArray[np.intp] | list[int]) -> None:
        """These slots start from silence (a new leg, or one coming back to the mix)."""
        self._history[rows] = 0.0

    def _matrix(self, samples: int) -> NDArray[np.float64]:
        matrix = self._matrices.get(samples)
        if matrix is None:
            inputs = self._history_len + samples
            if self._up:
                # Output 2j is the even polyphase branch at input j, output 2j + 1 the odd one.
                matrix = np.zeros((inputs, 2 * samples))
                matrix[:, 0::2] = _banded(_UP_EVEN, inputs, samples, 1)
                matrix[:, 1::2] = _banded(_UP_ODD, inputs, samples, 1)
            else:
                if samples % 2:
                    raise ValueError(f"downsampling takes even-length frames, not {samples}")
                matrix = _banded(_LOWPASS, inputs, samples // 2, 2)
            self._matrices[samples] = matrix
        return matrix

    def process(self, rows: NDArray[np.intp], frames: NDArray[np.int16]) -> NDArray[np.int16]:
        """Resample one frame per row: (len(rows), n) int16 in, (len(rows), n * to / from) out."""
        if frames.ndim != 2 or frames.shape[0] != rows.size:
            raise ValueError(f"expected ({rows.size}, n) frames, got shape {frames.shape}")
        extended = np.concatenate((self._history[rows], frames), axis=1, dtype=np.float64)
        self._history[rows] = extended[:, frames.shape[1] :]
        out = extended @ self._matrix(frames.shape[1])
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)
        return out.astype(np.int16)
