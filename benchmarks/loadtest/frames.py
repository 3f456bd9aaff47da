"""The load test's per-frame rules, shared by ``checker.AudioChecker`` (every leg of a load test,
on a clock) and ``judge.judge`` (one listener of an end-to-end test, no clock).

What each leg says and how a received frame is classified (clean, absent, misrouted by own tone,
foreign tone, level or foreign energy) is explained in ``checker.py``'s docstring; this module
holds the tone arithmetic and ``classify``, one ``rfft`` over a batch of frames.

**Turning frames** (paths that resample). A speaker's marker turn (its sign flip) lands on a
frame boundary only when the path delays its audio by whole frames, as G.711 paths do. Any
resampling on the way (the simulator's 8 <-> 16 kHz filter for G.722, callbridge's resample
bank) delays it by a fraction of a frame, so one received frame holds the end of one sign and
the start of the other: its bin reads anywhere from the full level to nothing, and the sign
step splatters the tone's energy over every other bin (measured: -6 dB on the adjacent bin).
The same goes for the edges of a gap (callbridge leaving a late speaker's frame out of a mix,
then resampling): two received frames each hold part of the speaker. A caller that knows the
path resamples passes ``turns`` (``find_turns``): from the bin values, which rows are within
the level tolerance and which are gone, it names the frames a turn falls in (the last frame
before within tolerance and the next one of opposite signs) and the candidate gap edges (frames
touching one out of tolerance). Such a (frame, speaker) is judged by what a step can and cannot
do. The splatter at a bin ``D`` away is at most ``A * 2 / (N sin(pi |D| / N))`` (the DFT of a
sign step at any sample, and of its mirror at ``-k``; ``SPLATTER_MARGIN`` above that): only
what stands above that envelope counts as a foreign tone, the own tone or foreign energy. The
speaker's power is its bin's plus its splatter, which holds no more than the bin lacks (more is
foreign energy). A turn conserves power: it is held to the level tolerance (with nothing on its
bin it is a mid-frame turn or a gap over the turn, never a wrong level). A candidate edge is
kept when its reading fits a speaker present for a share ``p`` of the frame (``p`` of the level
on its bin, ``p`` of its power: a merely quieter frame reads ``p`` and ``p^2`` and is judged as
usual) or a turn the next frame cannot confirm; it is heard when ``p >= 1/2`` (so a one-frame gap
spread over two frames is one frame lost), else a gap. A turning frame's sign is a marker phase
only when its bin holds ``PHASE_MIN`` of the level (the same frame sides the same way at every
turn: the delay is fixed). What these frames cannot see: a foreign tone under the splatter next
to the speaker's bin, noise ~15 dB below the speakers, and on a gap's edge a level off by less
than ``EDGE_FIT`` allows; every other frame is judged exactly, and rooms of 8 kHz legs only as on
G.711 paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
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
    "TurnFinder",
    "amplitude_for",
    "classify",
    "find_turns",
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
Complexes = npt.NDArray[np.complex128]
# (bin values of every row and expected speaker, which of them are within the level tolerance,
# which are gone) -> the (row, speaker) pairs whose frame holds that speaker's marker turn, and
# those whose frame holds the edge of a gap (where the speaker stops or starts again).
TurnFinder = Callable[[Complexes, Bools, Bools], tuple[Bools, Bools]]
# Per run of a listener's rows, what the run before it left: the last in-tolerance bin value
# and whether there was one, and whether the row just before was within tolerance.
TurnState = tuple[Complexes, Bools, Bools]
HALF: Final = np.sqrt(0.5)  # a gap's edge frame holding half the speaker's power counts as heard
# A speaker present for a share p of a frame reads p of its level on its bin and p of its power
# with its splatter; a frame that is merely quieter (a wrong level) reads p on its bin and p^2.
EDGE_FIT: Final = 0.08

PHASE_MIN: Final = 0.25  # a turning frame's bin below this share of the level carries no sign
SPLATTER_MARGIN: Final = 1.5  # measured G.722 paths reach 0.99 of the bound; noise adds a little
# Bin plus splatter power of a turning speaker measured 0.08 dB under to 0.05 dB over its level.
TURN_SLACK: Final = 0.03


def _splatter_bound() -> Floats:
    """Per unit amplitude, the most a sign step anywhere in a frame puts ``D`` bins away:
    ``|(2/N) sum_{n<d} exp(-2 pi i D n / N)| <= 2 / (N sin(pi |D| / N))`` (0 at ``D = 0``)."""
    bound = np.zeros(FRAME_SAMPLES)
    delta = np.arange(1, FRAME_SAMPLES)
    bound[1:] = 2 / (FRAME_SAMPLES * np.sin(np.pi * delta / FRAME_SAMPLES))
    return bound


_SPLATTER: Final = _splatter_bound()
# Power of a unit amplitude read on each bin: a sine's is 1/2; DC and Nyquist read twice theirs.
_BIN_POWER: Final = np.r_[0.25, np.full(_NBINS - 2, 0.5), 0.25]


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

    xe: Complexes  # each expected speaker's bin, as heard (for the markers)
    clean: Bools  # (rows, speakers): within the level tolerance
    absent: Bools  # (rows, speakers): more than absent_db below its level
    level: Bools  # (rows, speakers): neither: someone else's audio on that bin
    own: Bools  # (rows,): the listener's own bin is audible
    foreign_tone: Bools  # (rows,): a bin nobody expected stands out
    foreign_energy: Bools  # (rows,): broadband energy the expected tones do not explain
    others: Floats  # (rows, bins): amplitudes left once the expected and own bins are removed
    turning: Bools  # (rows, speakers): the speaker turns, stops or starts inside this frame
    phase: Bools  # (rows, speakers): clean, with a bin that tells the speaker's sign

    def select(self, rows: Ints) -> FrameClasses:
        """The same classes for ``rows`` alone."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})

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
    turns: TurnFinder | None = None,
) -> FrameClasses:
    """Judge each 160-sample row against its listener's expected speakers and own tone (see
    the module docstring): one ``rfft`` over every row, whoever's they are. ``turns``: where
    the path resamples, which frames hold a speaker's marker turn (judged as turning frames)."""
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
    lo, hi = 10 ** (-t.level_tolerance_db / 20), 10 ** (t.level_tolerance_db / 20)
    bin_ratio = heard / eamp
    absent_ratio = 10 ** (-t.absent_db / 20)
    turning = edge = np.zeros_like(valid)
    if turns is not None:
        ok = valid & (bin_ratio >= lo) & (bin_ratio <= hi)
        turning, edge = turns(xe, ok, valid & (bin_ratio < absent_ratio))
        turning = turning & valid
        edge = edge & valid & ~turning
    own_heard = amp[rows, own_bins]
    if edge.any():
        edge = _edges_that_fit(amp, own_heard, own_bins, ebin, eamp, valid, turning, edge, t)
    turning |= edge
    # What is left once the expected tones and the own bin are taken out: foreign tones.
    others = amp
    others[rows[:, None], np.where(valid, ebin, 0)] = 0.0
    others[rows, own_bins] = 0.0
    power = np.where(valid, heard * heard / 2, 0.0)  # each speaker's power, as heard
    if turning.any():
        _take_splatter(others, power, own_heard, own_bins, ebin, eamp, turning)
    others[:, 0] = 0.0  # a DC offset or a Nyquist whine is nobody's voice
    others[:, -1] = 0.0
    ratio = np.sqrt(power * 2) / eamp
    clean = valid & (ratio >= lo) & (ratio <= hi)
    absent = valid & (ratio < absent_ratio)
    # A gap's edge frame holds part of the speaker: heard when at least half, else a gap.
    clean = np.where(edge, (ratio >= HALF) & (ratio <= hi), clean)
    absent = np.where(edge, ratio < HALF, absent)
    # A turn with nothing on its bin: mid-frame (all in the splatter, so at its level) or a
    # gap over the turn (a late speaker's frame left out): never a wrong level.
    absent |= turning & ~edge & (bin_ratio < absent_ratio) & ~clean
    level = valid & ~clean & ~absent
    own = own_heard > own_amplitudes * absent_ratio
    foreign_tone = others.max(axis=1) > amplitude_for(t.foreign_floor_dbfs)
    residual = np.einsum("ij,ij->i", pcm, pcm) / FRAME_SAMPLES - power.sum(axis=1)
    nominal = np.where(valid, eamp * eamp / 2, 0.0).sum(axis=1)
    limit = np.maximum(
        amplitude_for(t.residual_floor_dbfs) ** 2 / 2, nominal * 10 ** (t.residual_db / 10)
    )
    foreign_energy = residual > limit
    phase = clean & (bin_ratio >= PHASE_MIN)
    return FrameClasses(
        xe, clean, absent, level, own, foreign_tone, foreign_energy, others, turning, phase
    )


def _edges_that_fit(
    amp: Floats,
    own_heard: Floats,
    own_bins: Ints,
    ebin: Ints,
    eamp: Floats,
    valid: Bools,
    turning: Bools,
    edge: Bools,
    t: Thresholds,
) -> Bools:
    """The candidate gap edges whose speaker reads as present for part of the frame (its power
    with its splatter, as a share of its level, matches its bin's amplitude share) or as a turn
    the next frame cannot confirm, being a gap (its power with its splatter within tolerance)."""
    hit = np.flatnonzero(edge.any(axis=1))
    others = amp[hit].copy()
    sub_rows = np.arange(hit.size)
    others[sub_rows[:, None], np.where(valid[hit], ebin[hit], 0)] = 0.0
    others[sub_rows, own_bins[hit]] = 0.0
    heard = np.take_along_axis(amp[hit], ebin[hit], axis=1)
    power = np.where(valid[hit], heard * heard / 2, 0.0)
    changing = turning[hit] | edge[hit]
    _take_splatter(others, power, own_heard[hit].copy(), own_bins[hit], ebin[hit], eamp[hit],
                   changing)  # fmt: skip
    share = power * 2 / (eamp[hit] ** 2)
    in_tolerance = np.abs(10 * np.log10(np.maximum(share, 1e-12))) <= t.level_tolerance_db
    fits = (np.abs(share - heard / eamp[hit]) <= EDGE_FIT) | in_tolerance
    edge = edge.copy()
    edge[hit] &= fits
    return edge


def _take_splatter(
    others: Floats,
    power: Floats,
    own_heard: Floats,
    own_bins: Ints,
    ebin: Ints,
    eamp: Floats,
    turning: Bools,
) -> None:
    """In the rows where a speaker turns, give back to the turning speakers what their sign
    step can have put on the other bins (at most the splatter bound): it leaves ``others`` and
    the own bin, and joins the speakers' ``power`` (each its share of the bound). In place."""
    hit = np.flatnonzero(turning.any(axis=1))
    bins = np.arange(others.shape[1])
    k = ebin[hit][:, :, None]
    # (rows, speakers, bins): each turning speaker's bound, from its tone at +k and its mirror.
    bound = _SPLATTER[np.abs(bins - k)] + _SPLATTER[(bins + k) % FRAME_SAMPLES]
    bound *= (SPLATTER_MARGIN * eamp[hit] * turning[hit])[:, :, None]
    envelope = bound.sum(axis=1)
    moved = np.minimum(others[hit], envelope)
    others[hit] -= moved
    share = bound / np.where(envelope > 0, envelope, 1.0)[:, None, :]
    taken = np.einsum("rsb,rb,b->rs", share, moved * moved, _BIN_POWER)
    # A sign step only moves the tone's power: its splatter holds at most what its bin lacks.
    # The rest stays unexplained (foreign energy: noise hidden under the bound, or too loud).
    # Two speakers turning in one frame share the splatter as their bounds do; what one cannot
    # hold goes to the others that still lack power.
    lacking = np.maximum((eamp[hit] ** 2 / 2) * (1 + TURN_SLACK) - power[hit], 0.0) * turning[hit]
    held = np.minimum(taken, lacking)
    overflow = (taken - held).sum(axis=1, keepdims=True)
    room = lacking - held
    total_room = room.sum(axis=1, keepdims=True)
    extra = np.minimum(room, overflow * room / np.where(total_room > 0, total_room, 1.0))
    power[hit] += held + extra
    own_rows = envelope[np.arange(hit.size), own_bins[hit]]
    own_heard[hit] = np.maximum(own_heard[hit] - own_rows, 0.0)


def find_turns(
    x: Complexes, ok: Bools, gone: Bools, starts: Ints, ends: Ints, state: TurnState
) -> tuple[Bools, Bools, TurnState]:
    """Per speaker, in runs of one listener's consecutive rows (``starts``/``ends``; before a
    run, what ``state`` says the previous one left):

    - the frames a marker turn falls in: the next row and the last earlier row within tolerance
      (``ok``) are of opposite signs (a late speaker's frame left out before the turn does not
      hide it; with no turn inside a frame, a delay of whole frames, this names the frame after
      the turn, harmlessly);
    - the frames a gap's edge may fall in (candidates: ``classify`` keeps those whose reading
      fits a speaker present for part of the frame): the speaker is not ``gone`` and this frame,
      the one before or the one after is out of tolerance.

    The frame itself may read anything; a run's last row has no next row, so no turn. Returns
    both and the state for the run that continues each one, as of the row before its last."""
    last_x, last_ok, prev_ok = state
    runs, width = starts.size, x.shape[1]
    lengths = ends - starts
    # One state row in front of each run, then its rows.
    state_at = starts + np.arange(runs)
    pos = np.arange(x.shape[0]) + np.repeat(np.arange(runs) + 1, lengths)
    size = x.shape[0] + runs
    ext_x = np.zeros((size, width), dtype=np.complex128)
    ext_ok = np.zeros((size, width), dtype=bool)
    ext_x[state_at], ext_ok[state_at] = last_x, last_ok
    ext_x[pos], ext_ok[pos] = x, ok
    marks = ext_ok.copy()
    marks[state_at] = True  # a run never looks back past its own state row
    index = np.arange(size)[:, None]
    last = np.maximum.accumulate(np.where(marks, index, 0), axis=0)
    before = last[pos - 1]
    before_x = np.take_along_axis(ext_x, before, axis=0)
    before_ok = np.take_along_axis(ext_ok, before, axis=0)
    after_x, after_ok = np.zeros_like(x), np.zeros_like(ok)
    after_x[:-1], after_ok[:-1] = x[1:], ok[1:]
    after_ok[ends - 1] = False
    turns = before_ok & after_ok & ((after_x * np.conj(before_x)).real < 0)
    row_ok = np.zeros_like(ok)  # the row just before
    row_ok[1:] = ok[:-1]
    row_ok[starts] = prev_ok
    edges = ~gone & ~(ok & row_ok & after_ok)
    kept = last[state_at + lengths - 1]  # the last in tolerance before each run's last row
    penultimate = ends - 2
    longer = (lengths >= 2)[:, None]
    return (
        turns,
        edges,
        (
            np.take_along_axis(ext_x, kept, axis=0),
            np.take_along_axis(ext_ok, kept, axis=0),
            np.where(longer, ok[np.maximum(penultimate, 0)], prev_ok),
        ),
    )
