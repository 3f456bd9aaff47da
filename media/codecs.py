"""Wire codecs of the media plane: G.711 (PCMU, PCMA), 16-bit linear PCM, 8 <-> 16 kHz resampling.

Everything here is vectorised numpy. G.711 is two lookups: decoding indexes a 256-entry table by
the code byte, encoding indexes a 65,536-entry table by the int16 sample viewed as uint16. The
tables are computed at import from the G.711 segment algorithm, with the bit-level choices
(14-bit mu-law input, 13-bit A-law input, clipping) that make them bit-exact with the stdlib
``audioop`` that providers' reference code uses. The functions take arrays of any shape, so the
mixer decodes every leg of a tick with one ``np.take`` on a (legs, samples) block.

A leg's format is an ``AudioFormat``; ``parse_format`` turns a provider's ``mediaFormat`` into
one and refuses anything the mixer cannot take (G.722, Opus, AMR-WB, stereo, other rates).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from media.errors import InvalidFrame, UnsupportedEncoding

with warnings.catch_warnings():
    # Deprecated on 3.11/3.12 and gone from 3.13, where ``audioop-lts`` provides the same module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ALAW_DECODE",
    "ALAW_ENCODE",
    "L16_8K",
    "L16_16K",
    "PCMA_8K",
    "PCMU_8K",
    "ULAW_DECODE",
    "ULAW_ENCODE",
    "AudioFormat",
    "Encoding",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "decode_joined",
    "decode_rows",
    "encode",
    "parse_format",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]

ByteOrder = Literal["big", "little"]


class Encoding(enum.Enum):
    PCMU = "PCMU"
    PCMA = "PCMA"
    L16 = "L16"


_RATES: Final[dict[Encoding, frozenset[int]]] = {
    Encoding.PCMU: frozenset({8000}),
    Encoding.PCMA: frozenset({8000}),
    Encoding.L16: frozenset({8000, 16000}),
}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The format of one leg's media stream, in one direction.

    ``byte_order`` only matters for L16: RTP's L16 is big-endian, but whether Telnyx's websocket
    follows it is unconfirmed (PROTOCOLS.md 3.4), so it stays a per-leg setting.
    """

    encoding: Encoding
    sample_rate: int = 8000
    byte_order: ByteOrder = "big"

    def __post_init__(self) -> None:
        if self.sample_rate not in _RATES[self.encoding]:
            raise UnsupportedEncoding(self.encoding.value, sample_rate=self.sample_rate)
        if self.byte_order not in ("big", "little"):
            raise ValueError(f"byte_order must be 'big' or 'little', not {self.byte_order!r}")

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is Encoding.L16 else 1

    @property
    def samples_per_ms(self) -> int:
        return self.sample_rate // 1000

    def frame_bytes(self, ms: int = 20) -> int:
        """Bytes in ``ms`` milliseconds of audio: 160 for a 20 ms G.711 frame."""
        return self.samples_per_ms * ms * self.bytes_per_sample


PCMU_8K: Final = AudioFormat(Encoding.PCMU)
PCMA_8K: Final = AudioFormat(Encoding.PCMA)
L16_8K: Final = AudioFormat(Encoding.L16, 8000)
L16_16K: Final = AudioFormat(Encoding.L16, 16000)

# Every spelling providers use, lower-cased: codec names (Telnyx, SDP) and MIME types (Twilio,
# older Telnyx docs).
_ALIASES: Final[dict[str, Encoding]] = {
    "pcmu": Encoding.PCMU,
    "audio/pcmu": Encoding.PCMU,
    "audio/x-mulaw": Encoding.PCMU,
    "mulaw": Encoding.PCMU,
    "ulaw": Encoding.PCMU,
    "pcma": Encoding.PCMA,
    "audio/pcma": Encoding.PCMA,
    "audio/x-alaw": Encoding.PCMA,
    "alaw": Encoding.PCMA,
    "l16": Encoding.L16,
    "audio/l16": Encoding.L16,
}


def parse_format(
    encoding: str, sample_rate: int = 8000, channels: int = 1, *, byte_order: ByteOrder = "big"
) -> AudioFormat:
    """The ``AudioFormat`` of a provider's media-format announcement.

    Raises ``UnsupportedEncoding`` naming the provider's spelling for any codec, rate or channel
    count the mixer cannot take.
    """
    found = _ALIASES.get(encoding.strip().lower())
    if found is None:
        raise UnsupportedEncoding(encoding)
    if channels != 1:
        raise UnsupportedEncoding(encoding, channels=channels)
    if sample_rate not in _RATES[found]:
        raise UnsupportedEncoding(encoding, sample_rate=sample_rate)
    return AudioFormat(found, sample_rate, byte_order)


# --- G.711 tables -------------------------------------------------------------------------------

_QUANT: Final = 0x0F
_MULAW_BIAS: Final = 0x84
# Largest magnitude of the 14-bit mu-law input after adding the bias (BIAS >> 2); louder samples
# saturate to the top code.
_MULAW_MAX: Final = 0x1FFF
# Upper end of each segment's magnitude range.
_MULAW_SEGMENT_ENDS: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


_Scalar = TypeVar("_Scalar", bound=np.generic)


def _read_only(table: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
    table.flags.writeable = False
    return table


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, at the position of its uint16 view, widened so negation cannot wrap."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = (((code & _QUANT) << 3) + _MULAW_BIAS) << segment
    linear = np.where(code & 0x80, _MULAW_BIAS - magnitude, magnitude - _MULAW_BIAS)
    return linear.astype(np.int16)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    value = _all_samples() >> 2
    negative = value < 0
    magnitude = np.minimum(np.abs(value) + (_MULAW_BIAS >> 2), _MULAW_MAX)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude).astype(np.int32)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & _QUANT)
    # mu-law transmits every bit inverted; negative samples keep the sign bit clear.
    table: npt.NDArray[np.uint8] = (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)
    return table


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code >> 4) & 0x07
    magnitude = ((code & _QUANT) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude <<= np.maximum(segment - 1, 0)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    value = _all_samples() >> 3
    negative = value < 0
    # One's complement for negatives: -1 and 0 land in the same step on either side of zero.
    magnitude = np.where(negative, ~value, value)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude).astype(np.int32)
    step = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((magnitude >> step) & _QUANT)
    # A-law inverts the even bits; the sign bit is set for non-negative samples.
    return (code ^ np.where(negative, 0x55, 0xD5)).astype(np.uint8)


ULAW_DECODE: Final[npt.NDArray[np.int16]] = _read_only(_build_ulaw_decode())
ULAW_ENCODE: Final[npt.NDArray[np.uint8]] = _read_only(_build_ulaw_encode())
ALAW_DECODE: Final[npt.NDArray[np.int16]] = _read_only(_build_alaw_decode())
ALAW_ENCODE: Final[npt.NDArray[np.uint8]] = _read_only(_build_alaw_encode())


_INT16: Final = np.dtype(np.int16)
# Fancy indexing has less fixed cost than np.take (about 1.1 vs 1.7 us for one 160-sample frame);
# np.take costs less per element, up to half on large blocks. They cross at a few hundred.
_TAKE_ABOVE: Final = 640


def _lookup(table: npt.NDArray[_Scalar], index: npt.NDArray[Any]) -> npt.NDArray[_Scalar]:
    if index.size > _TAKE_ABOVE:
        return np.take(table, index)
    looked_up: npt.NDArray[_Scalar] = table[index]
    return looked_up


def _require_int16(samples: npt.NDArray[np.int16]) -> None:
    # Encoding anything else would reinterpret or truncate it silently (an int32 mix viewed as
    # uint16 doubles in length), so it is a caller bug: clip the mix to int16 first.
    if samples.dtype is not _INT16 and samples.dtype != _INT16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")


def _as_uint16(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.uint16]:
    _require_int16(samples)
    return samples.view(np.uint16)


def ulaw_decode(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    return _lookup(ULAW_DECODE, codes)


def ulaw_encode(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    return _lookup(ULAW_ENCODE, _as_uint16(samples))


def alaw_decode(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    return _lookup(ALAW_DECODE, codes)


def alaw_encode(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    return _lookup(ALAW_ENCODE, _as_uint16(samples))


# --- payloads -----------------------------------------------------------------------------------

_L16_DTYPES: Final[dict[str, np.dtype[np.int16]]] = {
    "big": np.dtype(">i2"),
    "little": np.dtype("<i2"),
}


def decode(fmt: AudioFormat, payload: bytes) -> npt.NDArray[np.int16]:
    """The samples of one payload, at ``fmt.sample_rate``, as a new writable int16 array."""
    if fmt.encoding is Encoding.PCMU:
        return ulaw_decode(np.frombuffer(payload, dtype=np.uint8))
    if fmt.encoding is Encoding.PCMA:
        return alaw_decode(np.frombuffer(payload, dtype=np.uint8))
    if len(payload) % 2:
        raise InvalidFrame(f"L16 payload of {len(payload)} bytes is not whole 16-bit samples")
    return np.frombuffer(payload, dtype=_L16_DTYPES[fmt.byte_order]).astype(np.int16)


def decode_joined(fmt: AudioFormat, payload: bytes) -> npt.NDArray[np.int16]:
    """The samples of many whole payloads joined, as a read-only int16 array: the cheapest decode
    of a batch that arrives as bytes (G.711 by ``audioop``'s C loop, about three times faster
    than the table lookup on 16,000 bytes, and bit-exact with it: tests/test_codecs.py)."""
    if fmt.encoding is Encoding.PCMU:
        return np.frombuffer(audioop.ulaw2lin(payload, 2), dtype=np.int16)
    if fmt.encoding is Encoding.PCMA:
        return np.frombuffer(audioop.alaw2lin(payload, 2), dtype=np.int16)
    return decode(fmt, payload)


def decode_rows(fmt: AudioFormat, raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """(legs, payload bytes) of one format, as (legs, samples) int16: the mixer's batch decode."""
    if fmt.encoding is Encoding.PCMU:
        return ulaw_decode(raw)
    if fmt.encoding is Encoding.PCMA:
        return alaw_decode(raw)
    return raw.view(_L16_DTYPES[fmt.byte_order]).astype(np.int16)


def encode(fmt: AudioFormat, samples: npt.NDArray[np.int16]) -> bytes:
    """The payload of ``samples`` (at ``fmt.sample_rate``), in row-major order for 2-D input."""
    if fmt.encoding is Encoding.PCMU:
        return ulaw_encode(samples).tobytes()
    if fmt.encoding is Encoding.PCMA:
        return alaw_encode(samples).tobytes()
    _require_int16(samples)
    return samples.astype(_L16_DTYPES[fmt.byte_order], copy=False).tobytes()


# --- resampling ---------------------------------------------------------------------------------

# One linear-phase low-pass at 16 kHz serves both directions: it removes the 8 kHz stream's images
# when upsampling and the content that would alias when downsampling. 65 taps (4k + 1) keep each
# direction's delay a whole number of output samples; a 3.8 kHz cutoff with a Kaiser window is
# flat to 0.1 dB over the telephone band (300-3400 Hz) and at least 65 dB down above 4.6 kHz.
_TAPS: Final = 65
_CUTOFF_HZ: Final = 3800.0
_KAISER_BETA: Final = 5.65


def _design_lowpass() -> npt.NDArray[np.float64]:
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    taps = np.sinc(2 * _CUTOFF_HZ / 16000 * n) * np.kaiser(_TAPS, _KAISER_BETA)
    return _read_only(taps / taps.sum())


_LOWPASS: Final = _design_lowpass()
# Polyphase halves for upsampling, scaled by 2 to restore the energy of the inserted zeros; the
# odd half is one tap short and padded so both produce one output per input sample.
_UP_EVEN: Final = _read_only(2 * _LOWPASS[0::2])
_UP_ODD: Final = _read_only(np.append(2 * _LOWPASS[1::2], 0.0))
_SUPPORTED_RATES: Final = frozenset({8000, 16000})


class Resampler:
    """Stateful 8 <-> 16 kHz resampler for one stream of frames.

    The filter history is carried across ``process`` calls, so a stream cut into frames of any
    length gives the same samples as the whole stream at once: no clicks at frame edges. The output
    lags the input by ``delay`` output samples (2 ms). Equal rates pass samples through.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        for rate in (from_rate, to_rate):
            if rate not in _SUPPORTED_RATES:
                raise ValueError(f"can only resample between 8000 and 16000 Hz, not {rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        if to_rate > from_rate:
            self.delay = (_TAPS - 1) // 2
            history = len(_UP_EVEN) - 1
        elif to_rate < from_rate:
            self.delay = (_TAPS - 1) // 4
            history = _TAPS - 1
        else:
            self.delay = 0
            history = 0
        self._history = np.zeros(history)
        # Parity of the input samples consumed so far, which decides which of the next
        # samples fall on the 8 kHz grid when downsampling.
        self._phase = 0

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError(f"expected 1-D int16 samples, got {samples.ndim}-D {samples.dtype}")
        if self.from_rate == self.to_rate:
            return samples.copy()
        if samples.size == 0:
            return np.empty(0, dtype=np.int16)
        extended = np.concatenate((self._history, samples), dtype=np.float64)
        self._history = extended[len(extended) - len(self._history) :]
        if self.to_rate > self.from_rate:
            even = np.convolve(extended, _UP_EVEN, "valid")
            odd = np.convolve(extended, _UP_ODD, "valid")
            out = np.column_stack((even, odd)).ravel()
        else:
            out = np.convolve(extended, _LOWPASS, "valid")[self._phase :: 2]
            self._phase = (self._phase + samples.size) % 2
        resampled: npt.NDArray[np.int16] = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return resampled


def resample(samples: npt.NDArray[np.int16], from_rate: int, to_rate: int) -> npt.NDArray[np.int16]:
    """Resample a whole signal at once, time-aligned with the input (the filter delay removed).

    The output has ``len(samples) * to_rate / from_rate`` samples (rounded up).
    """
    resampler = Resampler(from_rate, to_rate)
    if from_rate == to_rate or samples.ndim != 1:
        return resampler.process(samples)
    length = -(-samples.size * to_rate // from_rate)
    flush = np.zeros(-(-resampler.delay * from_rate // to_rate), dtype=np.int16)
    out = resampler.process(np.concatenate((samples, flush)))
    return out[resampler.delay : resampler.delay + length]
