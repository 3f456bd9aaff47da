"""Every frame heard exactly once across forward <-> mix switches, through the engine (issue 13,
point 3).

Two PCMU legs bridged: their room forwards frames untouched until something needs the mixer (a
recording, a playback on either leg, a digit's DTMF mute), and forwards again once it is over.
Leg a says numbered frames (frame n is 160 samples of the one mu-law code of n), one per media
tick as a provider streams in real time (a pump on the engine's own tick); what leg b hears is
read back to numbers. Across every switch in both directions b must hear a's frames in order,
none twice and none missing; a silent frame in between (a tick with nothing to mix yet) is not a
frame of a's and is allowed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.config import Settings
from media.codecs import ULAW_DECODE
from tests.call_fakes import Harness

# Mu-law codes whose decoded values differ and are not 0 (0x7F and 0xFF both decode to 0).
CODES = [code for code in range(256) if ULAW_DECODE[code] != 0]
NUMBER_OF = {int(ULAW_DECODE[code]): n for n, code in enumerate(CODES)}
SILENCE = bytes([0xFF]) * 160


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def numbers_heard(frames: list[bytes]) -> list[int]:
    """The numbers of a's frames in what b heard, silent frames left out."""
    heard: list[int] = []
    for frame in frames:
        samples = ULAW_DECODE[np.frombuffer(frame, dtype=np.uint8)]
        if not samples.any():
            continue
        assert (samples == samples[0]).all(), "a frame was cut, mixed or overlaid"
        heard.append(NUMBER_OF[int(samples[0])])
    return heard


async def test_each_frame_is_heard_once_across_every_switch(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    said = iter(range(10_000))

    def speak() -> None:  # one frame each per tick, as providers stream
        h.runtime.media_frame(a, bytes([CODES[next(said) % len(CODES)]]) * 160)
        h.runtime.media_frame(b, SILENCE)

    stop = h.runtime.tick.pace(speak)
    heard = h.outputs[b]
    start = len(heard.frames)
    try:
        await heard.collect(10)
        for action, body in [
            ("record_start", {"format": "wav", "channels": "single"}),  # a: forward -> mix
            ("record_stop", {}),  # mix -> forward
            ("playback_start", {"media_name": "tone-440"}),  # an overlay on a
            ("playback_stop", {}),
        ]:
            await h.ok(a, action, **body)
            await heard.collect(12)
        for action, body in [
            ("record_start", {"format": "wav", "channels": "single"}),  # now on b
            ("record_stop", {}),
        ]:
            await h.ok(b, action, **body)
            await heard.collect(12)
    finally:
        stop()
    numbers = numbers_heard(heard.frames[start:])
    assert len(numbers) >= 60
    first = numbers[0]
    assert numbers == list(range(first, first + len(numbers))), "a frame repeated or lost"
