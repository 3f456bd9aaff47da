"""Errors raised by the media package.

``media`` imports nothing from ``engine``, so it has its own small root; the engine decides how a
media error maps onto its own families (a leg whose stream announces an unsupported format is
refused with a clear close reason, a malformed frame is dropped and counted).

    MediaError
    +-- UnsupportedEncoding   a codec, rate or channel count callbridge cannot mix
    +-- InvalidFrame          a payload that cannot be a frame of its format
"""

from __future__ import annotations


class MediaError(Exception):
    """Root of every error the media package raises on purpose."""


class UnsupportedEncoding(MediaError):
    """A media format callbridge cannot decode, named in the message.

    ``encoding`` is the spelling the provider used (e.g. ``"G729"``); ``sample_rate`` and
    ``channels`` are set when they, not the codec name, are the reason.
    """

    def __init__(
        self, encoding: str, *, sample_rate: int | None = None, channels: int | None = None
    ) -> None:
        message = f"unsupported encoding {encoding!r}"
        if sample_rate is not None:
            message += f" at {sample_rate} Hz"
        if channels is not None:
            message += f" with {channels} channels"
        super().__init__(message)
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels


class InvalidFrame(MediaError):
    """A payload that cannot be a whole number of samples of its format."""
