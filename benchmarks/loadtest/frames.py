"""The load test's per-frame rules, shared by ``checker.AudioChecker`` (every leg of a load test,
on a clock) and ``judge.judge`` (one listener of an end-to-end test, no clock).

What each leg says and how a received frame is classified (clean, absent, misrouted by own tone,
foreign tone, level or foreign energy) is explained in ``checker.py``'s docstring; this module
holds the tone arithmetic and ``classify``, one ``rfft`` over a batch of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BIN_HZ",
    "DEFAULT_THRESHOLDS",
    "FRAME_S",
    "FRAME_SAMPLES",
    "REASONS",
    "SAMPLE_RATE",
    "Expected",
    "FrameClasses",
    "Speaker",
    "Thresholds",
    "amplitude_for",
    "classify",
    "marker_sign",
    "tone_frame",
]

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160
BIN_HZ: Final = SAMPLE_RATE / FRAME_SAMPLES  # 50 Hz: the bin spacing of one 20 ms frame
FRAME_S: Final = FRAME_SAMPLES / SAMPLE_RATE
FULL_SCALE: Final = 32768.0  # a sine of this peak reads 0 dBFS
_NBINS: Final = FRAME_SAMPLES // 2 + 1

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def amplitude_for(level_dbfs: float) -> float:
    """Peak amplitude (int16 units) of a sine at ``level_dbfs``."""
    return FULL_SCALE * 10 ** (level_dbfs / 20)


def tone_frame(bin_index: int, amplitude: float) -> npt.NDArray[np.int16]:
    """One 20 ms frame of a tone at ``bin_index * 50 Hz``: the same samples in every frame."""
    n = np.arange(FRAME_SAMPLES)
    wave = amplitude * np.sin(2 * np.pi * bin_index * n / FRAME_SAMPLES)
    return np.rint(wave).astype(np.int16)


def marker_sign(n: int, offset: int, period: int) -> int:
    """The sign of frame ``n``: it flips at frames ``offset + m * period`` (the markers)."""
    return 1 if ((n - offset) // period) % 2 == 0 else -1


@dataclass(frozen=True, slots=True)
class Speaker:
    """What the checker knows of one leg: its bin, its peak amplitude, its marker offset."""

    bin: int
    amplitude: float
    marker_offset: int


@dataclass(frozen=True, slots=True)
class Thresholds:
    level_tolerance_db: float = 1.5
    absent_db: float = 20.0
    foreign_floor_dbfs: float = -42.0
    residual_db: float = -20.0
    residual_floor_dbfs: float = -50.0


DEFAULT_THRESHOLDS: Final = Thresholds()  # frozen: one instance serves every caller


REASONS: Final = ("own", "foreign-tone", "level", "foreign-energy")


@dataclass(frozen=True, slots=True)
class Expected:
    """Row i's expected speakers: their bins and peak amplitudes, ``valid`` False for padding."""

    bins: Ints
    amplitudes: Floats
    valid: Bools


@dataclass(frozen=True, slots=True)
class FrameClasses:
    """What ``classify`` found in each frame (row) and, per row and expected speaker, column."""

    xe: npt.NDArray[np.complex128]  # each expected speaker's bin, as heard (for the markers)
    clean: Bools  # (rows, speakers): within the level tolerance
    absent: Bools  # (rows, speakers): more than absent_db below its level
    level: Bools  # (rows, speakers): neither: someone else's audio on that bin
    own: Bools  # (rows,): the listener's own bin is audible
    foreign_tone: Bools  # (rows,): a bin nobody expected stands out
    foreign_energy: Bools  # (rows,): broadband energy the expected tones do not explain
    others: Floats  # (rows, bins): amplitudes left once the expected and own bins are removed

    @property
    def misrouted(self) -> Bools:
        return self.own | self.foreign_tone | self.level.any(axis=1) | self.foreign_energy

    def reasons(self) -> dict[str, Bools]:
        """Each misrouted row under one reason, the first that applies in ``REASONS`` order."""
        level_any = self.level.any(axis=1)
        return {
            "own": self.own,
            "foreign-tone": self.foreign_tone & ~self.own,
            "level": level_any & ~self.own & ~self.foreign_tone,
            "foreign-energy": self.foreign_energy & ~self.own & ~self.foreign_tone & ~level_any,
        }

    def foreign_detail(self, row: int) -> str:
        peak = int(np.argmax(self.others[row]))
        return f"strongest foreign bin {peak * BIN_HZ:.0f} Hz"


def classify(
    frames: npt.ArrayLike,
    expected: Expected,
    own_bins: Ints,
    own_amplitudes: Floats,
    t: Thresholds,
) -> FrameClasses:
    """Judge each 160-sample row against its listener's expected speakers and own tone (see
    the module docstring): one ``rfft`` over every row, whoever's they are."""
    pcm = np.asarray(frames).astype(np.float32)
    if pcm.ndim != 2 or pcm.shape[1] != FRAME_SAMPLES:
        raise ValueError(f"frames must be (n, {FRAME_SAMPLES}), not {pcm.shape}")
    rows = np.arange(pcm.shape[0])
    valid, ebin, eamp = expected.valid, expected.bins, expected.amplitudes
    spectrum = np.fft.rfft(pcm, axis=1)
    amp = np.abs(spectrum)
    amp *= 2 / FRAME_SAMPLES
    xe = np.take_along_axis(spectrum, ebin, axis=1).astype(np.complex128)
    heard = np.abs(xe) * (2 / FRAME_SAMPLES)
    ratio = heard / eamp
    lo, hi = 10 ** (-t.level_tolerance_db / 20), 10 ** (t.level_tolerance_db / 20)
    absent_ratio = 10 ** (-t.absent_db / 20)
    clean = valid & (ratio >= lo) & (ratio <= hi)
    absent = valid & (ratio < absent_ratio)
    level = valid & ~clean & ~absent
    own = amp[rows, own_bins] > own_amplitudes * absent_ratio
    # What is left once the expected tones and the own bin are taken out: foreign tones.
    others = amp
    others[:, 0] = 0.0
    others[:, -1] = 0.0
    others[rows[:, None], np.where(valid, ebin, 0)] = 0.0
    others[rows, own_bins] = 0.0
    foreign_tone = others.max(axis=1) > amplitude_for(t.foreign_floor_dbfs)
    explained = np.where(valid, heard * heard / 2, 0.0).sum(axis=1)
    residual = np.einsum("ij,ij->i", pcm, pcm) / FRAME_SAMPLES - explained
    nominal = np.where(valid, eamp * eamp / 2, 0.0).sum(axis=1)
    limit = np.maximum(
        amplitude_for(t.residual_floor_dbfs) ** 2 / 2, nominal * 10 ** (t.residual_db / 10)
    )
    foreign_energy = residual > limit
    return FrameClasses(xe, clean, absent, level, own, foreign_tone, foreign_energy, others)
