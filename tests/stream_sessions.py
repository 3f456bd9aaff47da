"""A Telnyx media stream session fed by hand, for tests that need the engine busy (its lock
held) while a stream's ``start`` and media arrive."""

from __future__ import annotations

import orjson

from adapters.stream_session import StreamSession
from adapters.telnyx.stream import TelnyxStreamCodec
from adapters.wiring import ADAPTERS
from tests.call_fakes import Harness

PCMU = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
START = orjson.dumps(
    {"event": "start", "stream_id": "s1",
     "start": {"call_control_id": "v3:x", "media_format": PCMU}}
)  # fmt: skip


class CollectingStreamOutput:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, payload: bytes) -> None:
        self.frames.append(payload)

    @property
    def queued(self) -> int:
        return 0

    async def close(self) -> None:
        return None


def telnyx_session(h: Harness, leg: str) -> tuple[StreamSession, list[tuple[int, str]]]:
    """A session whose stream names ``leg``, and the closes it asked for (code, reason)."""
    closed: list[tuple[int, str]] = []

    async def close(code: int, reason: str) -> None:
        closed.append((code, reason))

    session = (
        h.client.app[ADAPTERS]
        .require_sessions()
        .session(
            TelnyxStreamCodec(),
            lambda start, connected_token: leg,
            make_output=lambda codec, stream_id, stats: CollectingStreamOutput(),
            close=close,
            context={"provider": "telnyx"},
        )
    )
    return session, closed
