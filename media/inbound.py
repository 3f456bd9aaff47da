"""What a provider says it streams, and how its bytes become something the mixer takes.

A media stream announces its format in its ``start`` frame (``MediaFormat``: the provider's
encoding spelling, rate and channels). ``inbound_decoder`` turns that announcement into an
``InboundDecoder``: the ``AudioFormat`` the mixer is given for the leg's input, and, for codecs
the mixer does not take directly, a stateful converter applied to each payload at the edge.

- PCMU, PCMA and L16 go to the mixer as they are (``convert`` is None).
- G.722 (wideband, 16 kHz audio in 64 kbit/s) is decoded here, payload by payload, with the
  ITU-T reference decoder of the ``G722`` package (sippy/libg722, bit-exact with the ITU test
  vectors), into little-endian L16 at 16 kHz, which the mixer resamples like any wideband leg.
  Telnyx streams a G.722 call in G.722 even when asked for PCMU: it transcodes only between PCMU
  and PCMA (PROTOCOLS.md 3.4). The decoder keeps ADPCM state across payloads, so one decoder
  serves exactly one stream, and payloads must come in order (the media session reorders first).
- Everything else (OPUS, AMR-WB, stereo, other rates) raises ``UnsupportedEncoding``: the engine
  then retries the stream or ends the leg cleanly; it never leaves a silent leg up.

G.722's RTP clock rate is 8000 although its audio is sampled at 16 kHz (RFC 3551 4.5.2), so a
provider may announce either; both mean the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import G722
import numpy as np

from media.codecs import AudioFormat, ByteOrder, Encoding, parse_format
from media.errors import InvalidFrame, UnsupportedEncoding

__all__ = ["G722_RATES", "G722Decoder", "InboundDecoder", "MediaFormat", "inbound_decoder"]

G722_RATES: Final = frozenset({8000, 16000})
_G722_NAMES: Final = frozenset({"g722", "audio/g722"})
_G722_BITRATE: Final = 64000  # the only rate G.722 runs at on the PSTN and in RTP (RFC 3551)
_WIDEBAND_OUT: Final = AudioFormat(Encoding.L16, 16000, "little")


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """A stream's announced format, as the provider spelled it, not yet judged."""

    encoding: str
    sample_rate: int = 8000
    channels: int = 1
    byte_order: ByteOrder = "big"  # L16 only; a per-leg setting, not on the wire

    def label(self) -> str:
        return f"{self.encoding}/{self.sample_rate}"


class G722Decoder:
    """One stream's G.722 decoder: G.722 payloads in, little-endian 16 kHz L16 bytes out."""

    __slots__ = ("_codec",)

    def __init__(self) -> None:
        self._codec = G722.G722(16000, _G722_BITRATE)

    def __call__(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        # Two 16 kHz samples per G.722 byte; the decoder returns native int16, which is
        # little-endian on every platform the wheel exists for.
        samples = np.asarray(self._codec.decode(payload), dtype="<i2")
        if samples.size != 2 * len(payload):
            raise InvalidFrame(f"G.722 payload of {len(payload)} bytes decoded to {samples.size}")
        return samples.tobytes()


@dataclass(frozen=True, slots=True)
class InboundDecoder:
    """The mixer's view of one stream's input: its format, and the edge conversion if any."""

    announced: MediaFormat
    mixer_format: AudioFormat
    convert: Callable[[bytes], bytes] | None = None


def inbound_decoder(announced: MediaFormat) -> InboundDecoder:
    """How to take a stream announced as ``announced``; ``UnsupportedEncoding`` if we cannot."""
    name = announced.encoding.strip().lower()
    if name in _G722_NAMES:
        if announced.channels != 1:
            raise UnsupportedEncoding(announced.encoding, channels=announced.channels)
        if announced.sample_rate not in G722_RATES:
            raise UnsupportedEncoding(announced.encoding, sample_rate=announced.sample_rate)
        return InboundDecoder(announced, _WIDEBAND_OUT, G722Decoder())
    fmt = parse_format(
        announced.encoding,
        announced.sample_rate,
        announced.channels,
        byte_order=announced.byte_order,
    )
    return InboundDecoder(announced, fmt)
