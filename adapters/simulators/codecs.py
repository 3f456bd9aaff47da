"""The simulators' own audio codecs, written apart from callbridge's ``media.codecs`` so that a
mistake there cannot be repeated here and go unnoticed.

G.711 comes from the standard library's ``audioop`` (Python 3.11/3.12; the ``audioop-lts``
package provides the same module from 3.13), which implements ITU-T G.711 in C and has nothing in
common with callbridge's numpy tables. G.722 comes from the ``G722`` package (PyPI ``g722``, a
binding of the ITU-T reference-derived C codec), one stateful encoder or decoder per stream as the
codec requires. L16 is 16-bit linear PCM in either byte order. Rate changes between 8 and 16 kHz
use a windowed-sinc low-pass FIR (numpy), keeping its history between calls so a stream of
frames has no clicks at frame edges.

Opus and AMR-WB are not encoded: a simulated call in those codecs sends opaque bytes (see
``OpaqueEncoder``); nobody here can check their content, and callbridge does not decode them.
"""

from __future__ import annotations

import warnings
from typing import Final, Literal, Protocol

import G722
import numpy as np
import numpy.typing as npt

with warnings.catch_warnings():
    # Deprecated on 3.11/3.12 and gone from 3.13, where ``audioop-lts`` provides the same module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "CODEC_RATES",
    "ByteOrder",
    "Decoder",
    "Encoder",
    "Resampler",
    "decoder",
    "encoder",
    "resample",
]

Samples = npt.NDArray[np.int16]
ByteOrder = Literal["big", "little"]

#: The audio rate each codec carries (G.722 is wideband, 16 kHz, ITU-T G.722 section 1).
CODEC_RATES: Final = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "OPUS": 48000, "AMR-WB": 16000}
_G722_BITRATE: Final = 64000
_WIDTH: Final = 2  # bytes per int16 sample, for audioop


class Encoder(Protocol):
    def encode(self, samples: Samples) -> bytes: ...


class Decoder(Protocol):
    def decode(self, payload: bytes) -> Samples: ...


def _pcm_bytes(samples: Samples) -> bytes:
    # audioop works on native-endian machine words.
    return np.ascontiguousarray(samples, dtype=np.int16).tobytes()


def _pcm_samples(data: bytes) -> Samples:
    return np.frombuffer(data, dtype=np.int16).copy()


class _G711:
    def __init__(self, law: Literal["PCMU", "PCMA"]) -> None:
        self._to = audioop.lin2ulaw if law == "PCMU" else audioop.lin2alaw
        self._from = audioop.ulaw2lin if law == "PCMU" else audioop.alaw2lin

    def encode(self, samples: Samples) -> bytes:
        return self._to(_pcm_bytes(samples), _WIDTH)

    def decode(self, payload: bytes) -> Samples:
        return _pcm_samples(self._from(payload, _WIDTH))


class _L16:
    def __init__(self, byte_order: ByteOrder) -> None:
        self._dtype = np.dtype(">i2" if byte_order == "big" else "<i2")

    def encode(self, samples: Samples) -> bytes:
        return np.asarray(samples, dtype=np.int16).astype(self._dtype).tobytes()

    def decode(self, payload: bytes) -> Samples:
        if len(payload) % 2:
            raise ValueError("L16 payload has an odd number of bytes")
        return np.frombuffer(payload, dtype=self._dtype).astype(np.int16)


class _G722Encoder:
    def __init__(self) -> None:
        self._codec = G722.G722(16000, _G722_BITRATE)

    def encode(self, samples: Samples) -> bytes:
        return bytes(self._codec.encode(np.asarray(samples, dtype=np.int16)))


class _G722Decoder:
    def __init__(self) -> None:
        self._codec = G722.G722(16000, _G722_BITRATE)

    def decode(self, payload: bytes) -> Samples:
        return np.asarray(self._codec.decode(payload), dtype=np.int16)


class OpaqueEncoder:
    """Opus/AMR-WB stand-in: one opaque byte string per frame, never decodable audio. Its first
    bytes say so, to make a mistaken decode obvious in a failing test's output."""

    def encode(self, samples: Samples) -> bytes:
        return b"SIMULATED-NOT-ENCODED" + bytes(max(len(samples) // 16, 1))


def encoder(codec: str, byte_order: ByteOrder = "big") -> Encoder:
    """A fresh (per stream) encoder of 8 kHz/16 kHz int16 into ``codec``'s payload bytes."""
    if codec in ("PCMU", "PCMA"):
        return _G711(codec)  # type: ignore[arg-type]
    if codec == "L16":
        return _L16(byte_order)
    if codec == "G722":
        return _G722Encoder()
    if codec in ("OPUS", "AMR-WB"):
        return OpaqueEncoder()
    raise ValueError(f"no encoder for {codec!r}")


def decoder(codec: str, byte_order: ByteOrder = "big") -> Decoder:
    """A fresh (per stream) decoder of ``codec``'s payload bytes into int16 samples."""
    if codec in ("PCMU", "PCMA"):
        return _G711(codec)  # type: ignore[arg-type]
    if codec == "L16":
        return _L16(byte_order)
    if codec == "G722":
        return _G722Decoder()
    raise ValueError(f"the simulator cannot decode {codec!r}")


# --- rate conversion -----------------------------------------------------------------------------

_TAPS: Final = 65  # odd, with an even group delay (32): whole samples at 8 kHz too
# Pass band edge at 16 kHz: keeps the telephone band (to 3.4 kHz) and stops images above 4 kHz.
_CUTOFF_HZ: Final = 3700.0


def _lowpass() -> npt.NDArray[np.float64]:
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    ideal = 2 * _CUTOFF_HZ / 16000 * np.sinc(2 * _CUTOFF_HZ / 16000 * n)
    window = np.blackman(_TAPS)
    taps = ideal * window
    return np.asarray(taps / taps.sum(), dtype=np.float64)


_LOWPASS: Final = _lowpass()


class Resampler:
    """Streaming 8 kHz <-> 16 kHz conversion (or a pass-through at equal rates)."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if {src_rate, dst_rate} - {8000, 16000}:
            raise ValueError("the simulator converts only between 8000 and 16000 Hz")
        self.src_rate, self.dst_rate = src_rate, dst_rate
        # The FIR runs at 16 kHz: the last TAPS-1 input samples at that rate carry over.
        self._history = np.zeros(_TAPS - 1, dtype=np.float64)
        self._phase = 0  # down-sampling: offset of the next kept sample in the next chunk

    def process(self, samples: Samples) -> Samples:
        if self.src_rate == self.dst_rate:
            return np.asarray(samples, dtype=np.int16)
        x = np.asarray(samples, dtype=np.float64)
        if self.src_rate == 8000:
            # Zero-stuff to 16 kHz (gain 2 restores the level), then remove the images.
            wide = np.zeros(2 * len(x), dtype=np.float64)
            wide[::2] = 2 * x
            return self._clip(self._filter(wide))
        filtered = self._filter(x)
        kept = filtered[self._phase :: 2]
        self._phase = (self._phase + len(filtered)) % 2
        return self._clip(kept)

    def _filter(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        joined = np.concatenate([self._history, x])
        self._history = joined[len(joined) - (_TAPS - 1) :]
        return np.convolve(joined, _LOWPASS, mode="valid")

    @staticmethod
    def _clip(x: npt.NDArray[np.float64]) -> Samples:
        return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def resample(samples: Samples, src_rate: int, dst_rate: int) -> Samples:
    """A whole clip at another rate (8 or 16 kHz), delayed by nothing: the filter's group delay
    is removed so sample ``i`` of the result is the same moment as in the input."""
    if src_rate == dst_rate:
        return np.asarray(samples, dtype=np.int16)
    delay_16k = (_TAPS - 1) // 2
    pad = delay_16k + 2  # input samples enough to flush the delay at either rate
    padded = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
    out = Resampler(src_rate, dst_rate).process(padded)
    skip = delay_16k if dst_rate == 16000 else delay_16k // 2
    length = len(samples) * dst_rate // src_rate
    return out[skip : skip + length]
