"""What a simulated caller says, and tools to judge what it heard.

Sources produce the caller's voice one 20 ms frame (160 int16 samples at 8 kHz) at a time:
``ToneSource`` (a steady sine), ``SilenceSource`` and ``WavSource`` (a 16-bit PCM file, 8 or
16 kHz, mono). Sources are continuous across frames, so a tone has no phase jump at frame edges
that would smear its spectrum.

The analysis helpers let an end-to-end test say "the other caller's tone is at least 20 dB above
my own and above the noise" about ``SimulatedCall.received_audio()``:

- ``tone_level_db``: the level of one frequency in dBFS (a full-scale sine reads 0 dB), measured
  with a Hann window at exactly that frequency, so it needs no FFT bin alignment;
- ``dominant_frequencies``: the strongest spectral peaks, with their levels;
- ``noise_floor_db``: the median level of the spectrum away from given tones, on the same scale
  as the peak levels, so "tone minus floor" is a per-bin signal-to-noise ratio;
- ``rms_dbfs``: the overall level, to tell silence from sound.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from adapters.simulators.codecs import resample

__all__ = [
    "DTMF_FREQS",
    "FLOOR_DB",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioSource",
    "Peak",
    "SilenceSource",
    "ToneSource",
    "WavSource",
    "dominant_frequencies",
    "dtmf_frames",
    "noise_floor_db",
    "rms_dbfs",
    "tone_level_db",
]

SAMPLE_RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
FULL_SCALE: Final = 32767.0
# Level reported for a signal with no energy at all, instead of -inf, so comparisons stay finite.
FLOOR_DB: Final = -200.0

Samples = npt.NDArray[np.int16]


class AudioSource(Protocol):
    """A caller's voice: each call returns the next 20 ms frame (``FRAME_SAMPLES`` samples)."""

    def next_frame(self) -> Samples: ...


class SilenceSource:
    def next_frame(self) -> Samples:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)


class ToneSource:
    """A continuous sine at ``freq_hz`` whose peak is ``level_dbfs`` below full scale."""

    def __init__(self, freq_hz: float, level_dbfs: float = -12.0) -> None:
        if not 0 < freq_hz < SAMPLE_RATE / 2:
            raise ValueError(f"tone frequency must be between 0 and {SAMPLE_RATE // 2} Hz")
        if level_dbfs > 0:
            raise ValueError("a tone cannot be louder than full scale (0 dBFS)")
        self.freq_hz = freq_hz
        self.level_dbfs = level_dbfs
        self._amplitude = FULL_SCALE * 10 ** (level_dbfs / 20)
        self._step = 2 * math.pi * freq_hz / SAMPLE_RATE
        self._n = 0

    def next_frame(self) -> Samples:
        n = np.arange(self._n, self._n + FRAME_SAMPLES, dtype=np.float64)
        self._n += FRAME_SAMPLES
        # The phase is taken modulo 2*pi from an integer counter, so precision does not decay
        # over a long call the way an accumulated float phase would.
        phase = np.mod(n * self._step, 2 * math.pi)
        frame: Samples = np.rint(self._amplitude * np.sin(phase)).astype(np.int16)
        return frame


class WavSource:
    """A 16-bit PCM WAV file (8 or 16 kHz, mono), played once then silence, or looped."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ValueError(f"{path}: only 16-bit mono WAV files are supported")
            rate = wav.getframerate()
            if rate not in (8000, 16000):
                raise ValueError(f"{path}: sample rate {rate} Hz is not 8000 or 16000")
            raw = wav.readframes(wav.getnframes())
        # WAV stores little-endian samples whatever the host's byte order.
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        self.samples: Samples = resample(samples, rate, SAMPLE_RATE) if rate != 8000 else samples
        self.loop = loop
        self._position = 0

    @property
    def finished(self) -> bool:
        return not self.loop and self._position >= len(self.samples)

    def next_frame(self) -> Samples:
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and len(self.samples):
            if self._position >= len(self.samples):
                if not self.loop:
                    break
                self._position = 0
            take = min(FRAME_SAMPLES - filled, len(self.samples) - self._position)
            frame[filled : filled + take] = self.samples[self._position : self._position + take]
            filled += take
            self._position += take
        return frame


# DTMF: each key is one low-group and one high-group frequency (ITU-T Q.23).
DTMF_FREQS: Final = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def dtmf_frames(digit: str, duration_ms: int, level_dbfs: float = -10.0) -> list[Samples]:
    """The key press ``digit`` as whole 20 ms frames covering ``duration_ms`` (the last frame
    padded with silence), each of the two tones at ``level_dbfs``."""
    if digit not in DTMF_FREQS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    if duration_ms <= 0:
        raise ValueError("a key press lasts a positive number of milliseconds")
    n = np.arange(duration_ms * SAMPLE_RATE // 1000, dtype=np.float64)
    amplitude = FULL_SCALE * 10 ** (level_dbfs / 20)
    low, high = DTMF_FREQS[digit]
    press = amplitude * (
        np.sin(2 * math.pi * low / SAMPLE_RATE * n) + np.sin(2 * math.pi * high / SAMPLE_RATE * n)
    )
    frames = -(-len(n) // FRAME_SAMPLES)
    padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.float64)
    padded[: len(n)] = press
    clipped = np.clip(np.rint(padded), -32768, 32767).astype(np.int16)
    return list(clipped.reshape(frames, FRAME_SAMPLES))


# --- analysis -----------------------------------------------------------------------------------


class Peak(NamedTuple):
    freq_hz: float
    level_db: float


def _db(amplitude: float) -> float:
    return 20 * math.log10(amplitude / FULL_SCALE) if amplitude > 0 else FLOOR_DB


def _as_float(samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(samples, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError("expected a 1-D array of samples")
    return array


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level relative to a full-scale sine (a full-scale sine reads 0 dB)."""
    x = _as_float(samples)
    if x.size == 0:
        return FLOOR_DB
    return _db(math.sqrt(float(np.mean(x * x))) * math.sqrt(2))


def tone_level_db(samples: npt.ArrayLike, freq_hz: float, sample_rate: int = SAMPLE_RATE) -> float:
    """Level in dBFS of the component of ``samples`` at ``freq_hz`` (a full-scale sine: 0 dB).

    The Hann-windowed DTFT is evaluated at exactly ``freq_hz`` (a Goertzel-style single-frequency
    transform), so a tone between FFT bins is measured at its true level; the window keeps other
    tones' leakage more than 60 dB down once they are 10 window-bins away (10 Hz for 1 s of audio).
    """
    x = _as_float(samples)
    if x.size == 0:
        return FLOOR_DB
    window = np.hanning(x.size)
    n = np.arange(x.size)
    basis = np.exp(-2j * math.pi * freq_hz / sample_rate * n)
    spectrum = complex(np.dot(x * window, basis))
    # A sine of peak A gives |X| = A * sum(w) / 2 at its own frequency.
    return _db(2 * abs(spectrum) / float(window.sum()))


def _spectrum_db(
    samples: npt.ArrayLike, sample_rate: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = _as_float(samples)
    if x.size < 2:
        raise ValueError("need at least two samples for a spectrum")
    window = np.hanning(x.size)
    magnitude = 2 * np.abs(np.fft.rfft(x * window)) / float(window.sum())
    with np.errstate(divide="ignore"):
        levels = 20 * np.log10(magnitude / FULL_SCALE)
    levels = np.maximum(levels, FLOOR_DB)
    freqs = np.fft.rfftfreq(x.size, 1 / sample_rate).astype(np.float64)
    return freqs, levels.astype(np.float64)


def dominant_frequencies(
    samples: npt.ArrayLike,
    n: int = 3,
    sample_rate: int = SAMPLE_RATE,
    min_separation_hz: float = 25.0,
) -> list[Peak]:
    """The ``n`` strongest spectral peaks, loudest first, at least ``min_separation_hz`` apart.

    A peak's frequency is refined by parabolic interpolation over its bin and neighbours; its
    level is then measured with ``tone_level_db`` at that frequency.
    """
    freqs, levels = _spectrum_db(samples, sample_rate)
    inner = levels[1:-1]
    is_peak = (inner > levels[:-2]) & (inner >= levels[2:])
    candidates = np.flatnonzero(is_peak) + 1
    order = candidates[np.argsort(levels[candidates])[::-1]]
    bin_hz = float(freqs[1])
    peaks: list[Peak] = []
    for index in order:
        if len(peaks) == n or levels[index] <= FLOOR_DB:
            break
        left, centre, right = levels[index - 1], levels[index], levels[index + 1]
        curvature = left - 2 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature else 0.0
        freq = float(freqs[index]) + offset * bin_hz
        if all(abs(freq - peak.freq_hz) >= min_separation_hz for peak in peaks):
            peaks.append(Peak(freq, tone_level_db(samples, freq, sample_rate)))
    return peaks


def noise_floor_db(
    samples: npt.ArrayLike,
    exclude_hz: Iterable[float] = (),
    guard_hz: float = 50.0,
    sample_rate: int = SAMPLE_RATE,
    band_hz: Sequence[float] = (100.0, 3500.0),
) -> float:
    """Median spectral level over the telephone band, leaving out ``guard_hz`` around each
    frequency in ``exclude_hz`` (the tones being measured).

    It is on the same scale as ``tone_level_db``: a tone's level minus this floor is its
    signal-to-noise ratio per analysis bin.
    """
    freqs, levels = _spectrum_db(samples, sample_rate)
    keep = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    for freq in exclude_hz:
        keep &= np.abs(freqs - freq) > guard_hz
    if not keep.any():
        raise ValueError("no spectrum left once the excluded tones are removed")
    return float(np.median(levels[keep]))
