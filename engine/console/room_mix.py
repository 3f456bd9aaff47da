"""A listened room's audio: its members' samples summed, as the console sends it to the page."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from engine.media_plane.levels import rms_dbfs
from media.codecs import resample

__all__ = ["MIX_RATE", "audio_message", "room_mix"]

#: The rate of the audio sent to the page (the telephone band; a wideband member is resampled).
MIX_RATE = 8000


def room_mix(parts: Iterable[tuple[NDArray[np.int16], int]]) -> NDArray[np.int16]:
    """The members' samples (each at its own rate) summed at ``MIX_RATE``, clipped; a member
    that sent less than the others is silent for the rest."""
    at_rate = [s if rate == MIX_RATE else resample(s, rate, MIX_RATE) for s, rate in parts]
    total = np.zeros(max((len(s) for s in at_rate), default=0), dtype=np.int32)
    for samples in at_rate:
        total[: len(samples)] += samples
    return np.clip(total, -32768, 32767).astype(np.int16)


def audio_message(mix: NDArray[np.int16]) -> dict[str, object]:
    return {
        "rate": MIX_RATE,
        "pcm": base64.b64encode(mix.astype("<i2").tobytes()).decode("ascii"),
        "level": round(rms_dbfs(mix), 1),
    }
