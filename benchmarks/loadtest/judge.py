"""One listener's received frames judged by the load test's rules, with no clock: what an
end-to-end test asserts about the audio a simulated caller or bot received
(``tests/e2e_checks.py``).

Callers speak a ``Voice`` (``VoiceSource``: a tone on an exact bin, its sign turned every
``marker_period`` frames). ``judge`` classifies every frame (``frames.classify``), finds where the
listener's room was established, and counts loss and duplication between marker turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from benchmarks.loadtest.frames import (
    BIN_HZ,
    DEFAULT_THRESHOLDS,
    FRAME_SAMPLES,
    Complexes,
    Expected,
    Thresholds,
    amplitude_for,
    classify,
    find_turns,
    marker_sign,
    tone_frame,
)

__all__ = ["Hearing", "Voice", "VoiceSource", "judge"]

Bools = npt.NDArray[np.bool_]
_NBINS: Final = FRAME_SAMPLES // 2 + 1


@dataclass(frozen=True, slots=True)
class Voice:
    """One leg's voice as ``judge`` knows it: a tone on an exact bin of a 20 ms frame, at
    ``level_dbfs``, its sign flipped every ``marker_period`` frames from ``marker_offset``."""

    bin: int
    level_dbfs: float
    marker_offset: int = 0
    marker_period: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.bin < _NBINS - 1:
            raise ValueError(f"bin {self.bin} is not strictly between 0 and {_NBINS - 1}")
        if self.marker_period < 2:
            raise ValueError("markers need a period of at least 2 frames")

    @property
    def freq_hz(self) -> float:
        return self.bin * BIN_HZ

    @property
    def amplitude(self) -> float:
        return amplitude_for(self.level_dbfs)


class VoiceSource:
    """A ``Voice`` as an audio source (``next_frame``, one 20 ms frame per call), for the
    provider simulators' callers."""

    def __init__(self, voice: Voice) -> None:
        frame = tone_frame(voice.bin, voice.amplitude)
        self._frames = {1: frame, -1: (-frame.astype(np.int32)).astype(np.int16)}
        self.voice = voice
        self.sent = 0

    def next_frame(self) -> npt.NDArray[np.int16]:
        n = self.sent
        self.sent += 1
        return self._frames[marker_sign(n, self.voice.marker_offset, self.voice.marker_period)]


@dataclass(frozen=True, slots=True)
class Hearing:
    """What one listener heard, frame by frame (indices into the frames judged).

    ``established_at``: the first frame with every expected speaker clean (None: never).
    ``gaps``: frames from then on missing an expected speaker; ``silent``: those of them missing
    every expected speaker (silence sent in place of late frames). ``misrouted``: (frame,
    reason, detail) for every frame with the own tone, a foreign tone, a wrong level or foreign
    energy, from the first frame. ``markers``: per expected speaker, the marker turns heard once
    established; between two of them a speaker must be heard in exactly ``marker_period``
    frames: more is ``duplicated``, fewer ``lost``.
    """

    frames: int
    established_at: int | None
    gaps: tuple[int, ...]
    silent: tuple[int, ...]
    misrouted: tuple[tuple[int, str, str], ...]
    markers: tuple[int, ...]
    duplicated: int
    lost: int

    @property
    def longest_gap(self) -> int:
        """The longest run of consecutive frames missing a speaker."""
        longest = run = 0
        previous = -2
        for frame in self.gaps:
            run = run + 1 if frame == previous + 1 else 1
            longest, previous = max(longest, run), frame
        return longest

    def problems(self, *, max_gap_run: int = 0, max_lost: int = 0) -> list[str]:
        """Everything wrong with what was heard, in words; empty when it was all clean.

        Strict by default. ``max_gap_run`` and ``max_lost`` let a caller whose engine shares a
        busy machine accept what late arrivals explain: a speaker missing for at most that many
        consecutive frames, at most ``max_lost`` speaker frames dropped to catch up. Misrouted,
        duplicated and silent frames are never accepted: a late frame explains a frame that
        arrives without one voice, never a frame of silence sent in its place."""
        found: list[str] = []
        if self.established_at is None:
            found.append(f"never heard every expected speaker cleanly in {self.frames} frames")
        if self.misrouted:
            found.append(f"{len(self.misrouted)} misrouted frames, first {self.misrouted[:3]}")
        if self.longest_gap > max_gap_run:
            found.append(
                f"{len(self.gaps)} frames missing a speaker after frame {self.established_at}"
                f" (up to {self.longest_gap} in a row): {list(self.gaps[:10])}"
            )
        if self.silent:
            found.append(
                f"{len(self.silent)} silent frames after frame {self.established_at}:"
                f" {list(self.silent[:10])}"
            )
        if self.duplicated:
            found.append(f"{self.duplicated} speaker frames duplicated")
        if self.lost > max_lost:
            found.append(f"{self.lost} speaker frames lost")
        return found


def judge(
    frames: npt.ArrayLike,
    hears: Sequence[Voice],
    own: Voice,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    resampled: bool = False,
) -> Hearing:
    """Judge the frames one listener received, in order (rows of 160 samples), against the
    voices it should hear and its own; no timing is involved, only what each frame holds.
    ``resampled``: the path resamples (a 16 kHz leg on it), so a marker turn may fall inside
    a frame (``frames.py``, turning frames)."""
    pcm = np.asarray(frames).reshape(-1, FRAME_SAMPLES)
    rows, width = pcm.shape[0], len(hears)
    expected = Expected(
        np.tile(np.array([v.bin for v in hears], dtype=np.int64), (rows, 1)),
        np.tile(np.array([v.amplitude for v in hears], dtype=np.float64), (rows, 1)),
        np.ones((rows, width), dtype=bool),
    )
    classes = classify(
        pcm,
        expected,
        np.full(rows, own.bin, dtype=np.int64),
        np.full(rows, own.amplitude, dtype=np.float64),
        thresholds,
        _turns_in_order if resampled else None,
    )
    complete = np.flatnonzero(classes.clean.all(axis=1))  # with no voice expected: every row
    established = int(complete[0]) if complete.size else None
    misrouted = sorted(
        (int(i), reason, classes.foreign_detail(int(i)))
        for reason, mask in classes.reasons().items()
        for i in np.flatnonzero(mask)
    )
    if established is None:
        return Hearing(rows, None, (), (), tuple(misrouted), (0,) * width, 0, 0)
    absent = classes.absent[established:]
    gaps = np.flatnonzero(absent.any(axis=1)) + established
    silent = np.flatnonzero(absent.all(axis=1)) + established if width else gaps
    counts = [
        _marker_segments(
            classes.xe[established:, s],
            classes.phase[established:, s],
            classes.clean[established:, s],
            voice,
        )
        for s, voice in enumerate(hears)
    ]
    return Hearing(
        frames=rows,
        established_at=established,
        gaps=tuple(int(g) for g in gaps),
        silent=tuple(int(g) for g in silent),
        misrouted=tuple(misrouted),
        markers=tuple(c[0] for c in counts),
        duplicated=sum(c[1] for c in counts),
        lost=sum(c[2] for c in counts),
    )


def _turns_in_order(x: Complexes, ok: Bools, gone: Bools) -> tuple[Bools, Bools]:
    """Turning and gap-edge frames of one listener's rows, all in order (``find_turns``)."""
    one = np.zeros(1, dtype=np.int64)
    none = np.zeros((1, x.shape[1]), dtype=bool)
    state = (np.zeros((1, x.shape[1]), dtype=np.complex128), none, none)
    turns, edges, _ = find_turns(x, ok, gone, one, one + x.shape[0], state)
    return turns, edges


def _marker_segments(
    x: npt.NDArray[np.complex128], phase: Bools, clean: Bools, voice: Voice
) -> tuple[int, int, int]:
    """(marker turns, frames duplicated, frames lost) of one speaker: its clean frames are
    counted between sign turns of its bin (read on the frames whose bin tells the sign; as in
    ``AudioChecker._markers``)."""
    signed = np.flatnonzero(phase)
    values = x[signed]
    turns = signed[np.flatnonzero((values[1:] * np.conj(values[:-1])).real < 0) + 1]
    counted = np.concatenate(([0], np.cumsum(clean)))
    between = np.diff(counted[turns])  # clean frames from one turn to the next
    period = voice.marker_period
    duplicated = int(np.maximum(between - period, 0).sum())
    lost = int(np.maximum(period - between, 0).sum())
    return int(turns.size), duplicated, lost
