"""Generated audio sources: ringback per country, silence, comfort noise, playback of a clip.

Every source here is a ``ToneSource``: called with a sample count ``n`` it returns the next ``n``
int16 samples, so the mixer can overlay any of them on a leg without knowing which one it is.
Sources are stateful and continuous: consecutive calls concatenate into one clean signal, whatever
frame sizes the caller uses.

Nothing is synthesised per frame: a ringback's whole cadence cycle, and a stretch of comfort
noise, is rendered once per set of parameters (cached, read-only, shared by every leg that plays
it) and each call returns the next slice of it, wrapping around. A frame that does not wrap is a
read-only view, not a copy: the mixer only adds it in.

Levels are in dBFS where a full-scale sine is 0 dBFS (AES17): a tone at ``level_dbfs`` has a peak
amplitude of ``32767 * 10 ** (level_dbfs / 20)``.

Ringback data (frequencies, modulation, cadence) comes from ``media/data/ringback-tones.json``,
one entry per ``ringtone`` value of the Call Control bridge command; ``data/README.md`` in the
shared docs records its sources and the choices made where they disagree.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError

__all__ = [
    "HOLD_TONE",
    "RINGTONE_COUNTRIES",
    "ComfortNoise",
    "HoldTone",
    "Playback",
    "Ringback",
    "RingtoneSpec",
    "Silence",
    "ToneSource",
    "UnknownRingtone",
    "burst_envelope",
    "dbfs_to_amplitude",
    "ringback_cycle",
    "ringtone_spec",
    "ringtone_specs",
]

#: Every ``ringtone`` value the bridge command accepts, in the order Telnyx documents them.
RINGTONE_COUNTRIES: tuple[str, ...] = (
    "at", "au", "be", "bg", "br", "ch", "cl", "cn", "cz", "de", "dk", "ee", "es", "fi",
    "fr", "gr", "hu", "il", "in", "it", "jp", "lt", "mx", "my", "nl", "no", "nz", "ph",
    "pl", "pt", "ru", "se", "sg", "th", "tw", "uk", "us-old", "us", "ve", "za",
)  # fmt: skip

FULL_SCALE = 32767.0
#: Depth of the amplitude modulation of "f1*f2" tones: 90 %, the depth Asterisk's tone generator
#: uses for the same table, so the sidebands f1±f2 sit 7 dB under the carrier.
MODULATION_DEPTH = 0.9
#: Tone bursts fade in and out over this long (raised cosine) so cadence edges do not click.
RAMP_S = 0.002

_DATA_FILE = "data/ringback-tones.json"
#: Samples of comfort noise rendered once and looped.
NOISE_LOOP = 1 << 16
_ZEROS = np.zeros(1 << 12, dtype=np.int16)
_ZEROS.setflags(write=False)


class ToneSource(Protocol):
    """Anything the mixer can overlay: called with ``n``, returns the next ``n`` int16 samples."""

    def __call__(self, n: int, /) -> NDArray[np.int16]: ...


class UnknownRingtone(MediaError):
    """A ``ringtone`` value that is not one of ``RINGTONE_COUNTRIES``."""

    def __init__(self, value: str) -> None:
        super().__init__(
            f"unknown ringtone {value!r}; valid values: {', '.join(RINGTONE_COUNTRIES)}"
        )
        self.value = value


@dataclass(frozen=True, slots=True)
class RingtoneSpec:
    """One country's ringback: what it sounds like and when.

    ``frequencies_hz`` are summed, unless ``modulated``: then they are (carrier, modulator) and
    the carrier is amplitude-modulated by the modulator. ``cadence_ms`` alternates on and off,
    starting with on, and repeats.
    """

    code: str
    country: str
    frequencies_hz: tuple[float, ...]
    modulated: bool
    cadence_ms: tuple[int, ...]


def dbfs_to_amplitude(level_dbfs: float) -> float:
    """Peak amplitude, in int16 units, of a sine at ``level_dbfs``."""
    return FULL_SCALE * math.pow(10.0, level_dbfs / 20.0)


def _parse_spec(code: str, entry: Mapping[str, object]) -> RingtoneSpec:
    frequencies = entry["frequencies_hz"]
    cadence = entry["cadence_ms"]
    if not isinstance(frequencies, list) or not isinstance(cadence, list):
        raise ValueError(f"{_DATA_FILE}: {code}: frequencies_hz and cadence_ms must be lists")
    modulated = "modulation" in entry
    freqs = tuple(float(f) for f in frequencies)
    steps = tuple(int(ms) for ms in cadence)
    if not 1 <= len(freqs) <= 2 or (modulated and len(freqs) != 2):
        raise ValueError(f"{_DATA_FILE}: {code}: bad frequencies_hz {frequencies!r}")
    if not steps or len(steps) % 2 or min(steps) <= 0:
        raise ValueError(f"{_DATA_FILE}: {code}: cadence must be positive on/off pairs")
    return RingtoneSpec(code, str(entry["country"]), freqs, modulated, steps)


@functools.cache
def ringtone_specs() -> Mapping[str, RingtoneSpec]:
    """All ringtones, read once from the package data and checked against the enum."""
    text = resources.files("media").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    if set(raw) != set(RINGTONE_COUNTRIES):
        raise ValueError(f"{_DATA_FILE}: codes differ from RINGTONE_COUNTRIES")
    return MappingProxyType({code: _parse_spec(code, raw[code]) for code in RINGTONE_COUNTRIES})


def ringtone_spec(country: str) -> RingtoneSpec:
    """The ringtone for one ``ringtone`` value; ``UnknownRingtone`` for anything else."""
    try:
        return ringtone_specs()[country]
    except KeyError:
        raise UnknownRingtone(country) from None


def _ramp_gain(edge_distance: NDArray[np.int64], ramp: int) -> NDArray[np.float64]:
    """Gain for samples ``edge_distance`` samples from the nearest burst edge (0 = the edge)."""
    if ramp <= 0:
        return np.ones(edge_distance.shape)
    ramped = 0.5 - 0.5 * np.cos(np.pi * (edge_distance + 0.5) / ramp)
    return np.where(edge_distance < ramp, ramped, 1.0)


def burst_envelope(n: int, sample_rate: int) -> NDArray[np.float64]:
    """Gains for an ``n``-sample tone burst: 1.0 with short raised-cosine fades at both ends."""
    k = np.arange(n, dtype=np.int64)
    edge = np.minimum(k, n - 1 - k)
    return _ramp_gain(edge, min(round(RAMP_S * sample_rate), n // 2))


def _to_int16(signal: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _read_only(samples: NDArray[np.int16]) -> NDArray[np.int16]:
    samples.setflags(write=False)
    return samples


def _wrapped(loop: NDArray[np.int16], position: int, n: int) -> NDArray[np.int16]:
    """``n`` samples of ``loop`` played round and round, from ``position``."""
    end = position + n
    if end <= loop.size:
        return loop[position:end]
    return loop.take(np.arange(position, end), mode="wrap")


class _Loop:
    """A precomputed signal played round and round: the state of one leg's source."""

    def __init__(self, loop: NDArray[np.int16]) -> None:
        self._loop = loop
        self._position = 0

    def __call__(self, n: int) -> NDArray[np.int16]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        frame = _wrapped(self._loop, self._position, n)
        self._position = (self._position + n) % self._loop.size
        return frame


@functools.cache
def _cadence_cycle(spec: RingtoneSpec, sample_rate: int, level_dbfs: float) -> NDArray[np.int16]:
    """One whole cadence cycle of a ringback: its bursts with their ramps, then its silences.

    Each cycle starts its oscillators at phase 0, so every burst starts the same way; the cycle
    ends in silence (cadences are on/off pairs), so the restart is inaudible.
    """
    # Cumulative edges rounded once, so a cadence at a rate where a segment is not a whole
    # number of samples still keeps its period exactly over time.
    ends = np.rint(np.cumsum(spec.cadence_ms) * sample_rate / 1000.0).astype(np.int64)
    starts = np.concatenate(([0], ends[:-1]))
    position = np.arange(int(ends[-1]), dtype=np.int64)
    segment = np.searchsorted(ends, position, side="right")
    edge = np.minimum(position - starts[segment], ends[segment] - 1 - position)
    ramp = round(RAMP_S * sample_rate)
    gain = np.where(segment % 2 == 0, _ramp_gain(edge, ramp), 0.0)
    cycles = np.asarray(spec.frequencies_hz)[:, None] / sample_rate * position
    waves = np.sin(2.0 * np.pi * (cycles % 1.0))
    modulated = waves[0] * (1.0 + MODULATION_DEPTH * waves[1]) if spec.modulated else None
    wave = waves.sum(axis=0) if modulated is None else modulated
    return _read_only(_to_int16(dbfs_to_amplitude(level_dbfs) * gain * wave))


@functools.cache
def _noise(level_dbfs: float, seed: int) -> NDArray[np.int16]:
    rms = dbfs_to_amplitude(level_dbfs) / math.sqrt(2.0)
    return _read_only(_to_int16(np.random.default_rng(seed).standard_normal(NOISE_LOOP) * rms))


def ringback_cycle(
    country: str, sample_rate: int = 8000, level_dbfs: float = -16.0
) -> NDArray[np.int16]:
    """One whole cadence cycle of a country's ringback (read-only): a ``loop`` of it."""
    return _cadence_cycle(ringtone_spec(country), sample_rate, float(level_dbfs))


class Ringback(_Loop):
    """The ringback tone of one country, as a continuous stream of frames.

    The cadence cycle is rendered once per (country, rate, level) and played round and round,
    indexed by the absolute sample count, so frames of any size concatenate into exactly the
    signal one long call would have produced.
    """

    def __init__(
        self, country: str = "us", sample_rate: int = 8000, level_dbfs: float = -16.0
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.spec = ringtone_spec(country)
        self.sample_rate = sample_rate
        self.level_dbfs = level_dbfs
        super().__init__(_cadence_cycle(self.spec, sample_rate, float(level_dbfs)))

    def next_frame(self, n: int = 160) -> NDArray[np.int16]:
        """The next ``n`` samples of the tone."""
        return self(n)


#: What a held leg hears (``hold_after_unbridge``): a tone on hold, as PBXs play without a music
#: source, so the caller knows the line is alive. Call Control documents no hold audio for a
#: plain call; callbridge's choice: 440 Hz for 300 ms every 4 s, soft-edged.
HOLD_TONE = RingtoneSpec("hold", "callbridge tone on hold", (440.0,), False, (300, 3700))


class HoldTone(_Loop):
    """``HOLD_TONE`` as a continuous stream of frames (like ``Ringback``)."""

    def __init__(self, sample_rate: int = 8000, level_dbfs: float = -20.0) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        super().__init__(_cadence_cycle(HOLD_TONE, sample_rate, float(level_dbfs)))


class Silence:
    """Digital silence."""

    def __call__(self, n: int) -> NDArray[np.int16]:
        if n <= _ZEROS.size:
            return _ZEROS[:n]
        return np.zeros(n, dtype=np.int16)


class ComfortNoise(_Loop):
    """Low-level white noise, so a parked or muted leg does not sound dead.

    Seeded, so a run is reproducible; ``level_dbfs`` is the RMS level on the same scale as the
    tones (a full-scale sine is 0 dBFS). It loops every ``NOISE_LOOP`` samples (8 s at 8 kHz):
    at -70 dBFS nobody hears a repeat that long.
    """

    def __init__(self, level_dbfs: float = -70.0, seed: int = 0) -> None:
        self.level_dbfs = level_dbfs
        super().__init__(_noise(float(level_dbfs), seed))


class Playback:
    """Plays an int16 clip ``loops`` times (``None``: until stopped), then silence.

    ``ended`` turns true on the call that plays the last sample; ``on_end``, if given, is called
    once at that moment, from the caller's thread (the runtime turns it into
    ``call.playback.ended``). ``stop()`` ends playback early without calling ``on_end``: whoever
    stops it already knows.
    """

    def __init__(
        self,
        samples: NDArray[np.int16],
        *,
        loops: int | None = 1,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        if samples.ndim != 1 or samples.dtype != np.int16:
            raise ValueError("Playback takes a 1-D int16 array (mono, already at the mix rate)")
        if loops is not None and loops < 1:
            raise ValueError(f"loops must be >= 1 or None, got {loops}")
        # A read-only clip (a cached download every leg plays) is shared, not copied per leg.
        self._samples = samples if not samples.flags.writeable else _read_only(samples.copy())
        self._loops = loops
        self._on_end = on_end
        self._position = 0
        self._plays = 0
        self._ended = False
        self._stopped = False

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def stopped(self) -> bool:
        """True when playback ended because of ``stop()``, not by reaching its end."""
        return self._stopped

    def stop(self) -> None:
        if not self._ended:
            self._ended = True
            self._stopped = True

    def __call__(self, n: int) -> NDArray[np.int16]:
        length = len(self._samples)
        end = self._position + n
        if end < length and not self._ended:  # the usual frame: a view of the clip
            frame = self._samples[self._position : end]
            self._position = end
            return frame
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and not self._ended:
            take = min(n - filled, length - self._position)
            out[filled : filled + take] = self._samples[self._position : self._position + take]
            filled += take
            self._position += take
            if self._position == length:
                self._position = 0
                self._plays += 1
                # An empty clip ends at once even when looping forever; it has nothing to repeat.
                if length == 0 or (self._loops is not None and self._plays >= self._loops):
                    self._finish()
        return out

    def _finish(self) -> None:
        self._ended = True
        if self._on_end is not None:
            self._on_end()
