"""What the media plane writes a leg's audio to: the transport seam, as protocols.

Apart from ``engine.media_plane.plane`` so that the plane can be compiled (engine/hot_path.py):
mypyc compiles a class into a C type, and a runtime-checkable ``Protocol`` must stay a Python
class, which a compiled module cannot derive one from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["FlushableOutput", "KeyPressOutput", "MediaOutput"]


class MediaOutput(Protocol):
    """Where a leg's outgoing audio goes: one encoded frame at a time, never blocking."""

    def send_frame(self, payload: bytes) -> None: ...


@runtime_checkable
class KeyPressOutput(MediaOutput, Protocol):
    """An output whose far end reads key presses as messages, not as tones in the audio."""

    def send_key_press(self, digit: str) -> None:
        """Tell the far end a peer pressed ``digit``; never blocking."""


@runtime_checkable
class FlushableOutput(MediaOutput, Protocol):
    """An output whose far end queues audio ahead of playing it (a provider's playout)."""

    def flush(self) -> None:
        """Drop the audio queued for the far end, here and there; never blocking."""
