"""The Telnyx media-stream frames the generator sends, rendered once and stamped per frame.

The shapes are the Telnyx simulator's (``adapters/simulators/telnyx_stream.py``): ``connected``,
then ``start`` (``sequence_number`` "1"), then one ``media`` frame every 20 ms whose
``sequence_number``, ``chunk`` and ``timestamp`` count up from "2", "1" and "0" (milliseconds).
What changes per frame is three counters, so a frame is one f-string over a template holding the
stream id and the leg's payload: a leg says the same 20 ms of PCMU every frame (a tone on an exact
DFT bin of the frame, so the frame repeats seamlessly), which keeps the generator cheap enough to
drive 150 legs from one core. tests/test_bench_forwarder.py checks the rendering against the
simulator's own ``media_message``.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import numpy as np
import orjson
import pybase64

from adapters.simulators.codecs import decoder, encoder
from benchmarks.loadtest.frames import tone_frame
from benchmarks.loadtest.plan import LegPlan

__all__ = [
    "FRAME_MS",
    "MEDIA_PREFIX",
    "MediaTemplate",
    "carries_payload",
    "connected_frame",
    "leg_payload",
    "start_frame",
]

FRAME_MS: Final = 20
#: How every media frame starts, the engine's and the forwarder's alike (orjson, compact).
MEDIA_PREFIX: Final = '{"event":"media"'
_PCMU_ENCODER: Final = encoder("PCMU")
_PCMU_DECODER: Final = decoder("PCMU")


def leg_payload(leg: LegPlan) -> str:
    """The base64 PCMU of one 20 ms frame of ``leg``'s tone (the plan's bin and level)."""
    return pybase64.b64encode_as_string(_PCMU_ENCODER.encode(tone_frame(leg.bin, leg.amplitude)))


class MediaTemplate:
    """One leg's ``media`` frames: ``render(n)`` is frame ``n`` (0 first) as the simulator
    would send it."""

    __slots__ = ("_middle", "_tail")

    def __init__(self, stream_id: str, payload_b64: str) -> None:
        self._middle = f'","stream_id":"{stream_id}","media":{{"track":"inbound","chunk":"'
        self._tail = f'","payload":"{payload_b64}"}}}}'

    def render(self, n: int) -> str:
        # The start frame took sequence number 1; chunks count from 1; timestamps are in ms.
        return (
            f'{MEDIA_PREFIX},"sequence_number":"{n + 2}{self._middle}{n + 1}",'
            f'"timestamp":"{n * FRAME_MS}{self._tail}'
        )


def connected_frame() -> str:
    return orjson.dumps({"event": "connected", "version": "1.0.0"}).decode()


def start_frame(leg: LegPlan, stream_id: str) -> str:
    """A ``start`` frame for a leg no simulator placed (the forwarder's run), in the shape of
    ``TelnyxStream.start_message`` stamped with its sequence number as ``MediaStream.send`` does."""
    message: dict[str, Any] = {
        "event": "start",
        "stream_id": stream_id,
        "start": {
            "user_id": str(uuid.uuid4()),
            "call_control_id": f"v3:bench-{leg.index}",
            "call_session_id": str(uuid.uuid4()),
            "from": leg.caller,
            "to": leg.number,
            "tags": [],
            "client_state": None,
            "custom_parameters": {},
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
        "sequence_number": "1",
    }
    return orjson.dumps(message).decode()


def carries_payload(frame: str, payload_b64: str) -> bool:
    """Whether the media ``frame`` a leg received holds the audio of ``payload_b64``.

    Compared as samples: a server that decodes and re-encodes G.711 may turn mu-law's negative
    zero into its positive one, the same sound in another byte.
    """
    received = orjson.loads(frame)["media"]["payload"]
    heard = _PCMU_DECODER.decode(pybase64.b64decode(received))
    said = _PCMU_DECODER.decode(pybase64.b64decode(payload_b64))
    return bool(np.array_equal(heard, said))
