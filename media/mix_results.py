"""What the mixer hands back and counts: each tick's frames, taps and digits, its counters, and
the shapes of the overlays and taps it takes and gives (``media.mixer`` uses them).

``SHED_AFTER_TICKS`` is the input-queue policy the counters report on: how long two whole extra
frames may stand in a leg's queue before the oldest is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["SHED_AFTER_TICKS", "MixerCounters", "Overlay", "Tap", "TickResult"]

Overlay = Callable[[int], NDArray[np.int16]]
"""Called once per tick with the frame's sample count; returns int16 samples at the mixer's rate
(shorter arrays are padded with silence, longer ones truncated)."""

Tap = tuple[str, NDArray[np.int16], NDArray[np.int16]]


@dataclass(frozen=True, slots=True)
class TickResult:
    # (leg id, one encoded frame), every mixed leg, any order; also, at a switch to passthrough,
    # the frames a leg had queued that its peer had not heard yet (the peer's id, as sent)
    frames: list[tuple[str, bytes]]
    taps: list[Tap]  # (leg id, heard, spoken), int16 at the mixer's rate, copies
    digits: list[tuple[str, str]] = field(default_factory=list)  # (leg id, DTMF digit) starting


# How long two whole extra frames may stand in a leg's input queue before one is dropped:
# long enough to ride out arrival jitter, short enough that a burst's latency does not stay.
SHED_AFTER_TICKS = 25


@dataclass(slots=True)
class MixerCounters:
    ticks: int = 0
    frames_mixed: int = 0  # leg frames consumed by ticks
    frames_missing: int = 0  # leg-ticks with less than a frame queued (played as silence)
    frames_shed: int = 0  # frames dropped because they stood queued too long (latency)
    bytes_dropped: int = 0  # queued input discarded because a queue overflowed
