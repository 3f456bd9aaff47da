"""send_dtmf queued per leg, through the app (issue 14, point 5).

What a leg's far end receives is judged per 20 ms frame: a frame carries a digit when both of its
tones are at least ``HEARD_DBFS``; a frame carrying two rows or two columns at once is two
digits overlapping. The far end's receiver is ``media.dtmf.DtmfDetector`` run over the frames
the leg's output received, one frame per tick as the media tick sent them. Nothing waits on time:
the test waits for frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.config import Settings
from media.dtmf import COLUMN_HZ, KEYPAD, ROW_HZ, DtmfDetector
from media.dtmf_out import GAP_MS
from tests.call_fakes import CollectingOutput, Harness

RATE = 8000
N = 160
FRAME_MS = 20
HEARD_DBFS = -30.0  # each tone at least this loud: the frame carries it
SENT_DBFS = -10.0  # the level of each tone of a sent digit
OVERLAP_DB = 6.0


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def _dbfs(frame: NDArray[np.int16], hz: float) -> float:
    window = np.hanning(frame.size)
    n = np.arange(frame.size)
    amplitude = 2 * abs(np.sum(frame * window * np.exp(-2j * np.pi * hz * n / RATE)))
    return float(20 * np.log10(max(amplitude / window.sum(), 1e-3) / 32767))


def digits_per_frame(output: CollectingOutput, frames: list[bytes]) -> list[str | None]:
    """The digit each frame carries (None: none); fails on a frame carrying two at once: two
    row or two column tones each within ``OVERLAP_DB`` of a digit's full level (one digit's
    own tone leaks about 14 dB into its neighbour's bin over a 20 ms window; a frame holding
    only a tone's edge spreads wider, but far under the full level)."""
    found: list[str | None] = []
    for i, frame in enumerate(frames):
        samples = output.samples([frame])
        picked = []
        for group in (ROW_HZ, COLUMN_HZ):
            levels = sorted((_dbfs(samples, hz), k) for k, hz in enumerate(group))
            (second, _), (loudest, k) = levels[-2:]
            overlap = second >= SENT_DBFS - OVERLAP_DB
            assert not overlap, f"frame {i}: two digits at once ({levels})"
            picked.append(k if loudest >= HEARD_DBFS else None)
        row, col = picked
        found.append(KEYPAD[4 * row + col] if row is not None and col is not None else None)
    return found


def detected(output: CollectingOutput, frames: list[bytes]) -> str:
    """What a DTMF receiver at the leg's far end decodes from these frames."""
    detector = DtmfDetector()
    return "".join(
        digit for frame in frames for _, digit in detector.process(output.samples([frame])[None])
    )


async def frames_from(output: CollectingOutput, start: int, n: int) -> list[bytes]:
    """The ``n`` frames the output received from index ``start`` on, once it has them."""
    missing = start + n - len(output.frames)
    if missing > 0:
        await output.collect(missing)
    return output.frames[start : start + n]


def frames_for(ms: int) -> int:
    return ms // FRAME_MS + 10  # and a few silent ones after


async def test_two_sends_in_a_row_play_one_after_the_other(h: Harness) -> None:
    a = await h.up()
    out = h.outputs[a]
    start = len(out.frames)
    async with h.sdk() as client:
        await client.calls.actions.send_dtmf(a, digits="147", duration_millis=100)
        await client.calls.actions.send_dtmf(a, digits="4#0", duration_millis=100)
    got = await frames_from(out, start, frames_for(6 * (100 + GAP_MS)))
    heard = digits_per_frame(out, got)  # none overlapping
    assert detected(out, got) == "1474#0"
    # Each digit is heard for its 100 ms, in whole frames give or take the edges.
    runs = [d for i, d in enumerate(heard) if d is not None and (i == 0 or heard[i - 1] != d)]
    assert runs == list("1474#0")


async def test_digits_sent_before_the_media_attaches_play_once_it_does(h: Harness) -> None:
    a = await h.up(media=None)
    await h.ok(a, "send_dtmf", digits="58", duration_millis=100)
    await h.ok(a, "send_dtmf", digits="*")
    out = await h.media(a)
    got = await frames_from(out, 0, frames_for(100 + GAP_MS + 100 + GAP_MS + 250 + GAP_MS))
    digits_per_frame(out, got)
    assert detected(out, got) == "58*"


def silent_runs(heard: list[str | None]) -> list[int]:
    """The lengths, in frames, of the silences between digits."""
    runs: list[int] = []
    length = None
    for digit in heard:
        if digit is None:
            length = None if length is None else length + 1
            continue
        if length:
            runs.append(length)
        length = 0
    return runs


async def test_pauses_w_and_W_last_half_a_second_and_a_second(h: Harness) -> None:
    a = await h.up()
    out = h.outputs[a]
    start = len(out.frames)
    await h.ok(a, "send_dtmf", digits="1w2W3", duration_millis=100)
    await h.ok(a, "send_dtmf", digits="4", duration_millis=100)
    got = await frames_from(out, start, frames_for(4 * 100 + 500 + 1000 + GAP_MS))
    heard = digits_per_frame(out, got)
    assert detected(out, got) == "1234"
    # Silences of 500 ms, 1000 ms and a gap of 100 ms, in frames; a tone's edge frame may
    # count as silent (its tone too short to reach the level), hence one frame either way.
    between = silent_runs(heard)
    expected = [500 // FRAME_MS, 1000 // FRAME_MS, GAP_MS // FRAME_MS]
    assert len(between) == 3
    for got_frames, want in zip(between, expected, strict=True):
        assert want - 1 <= got_frames <= want + 1, (between, expected)


async def test_a_hangup_mid_queue_stops_the_digits(h: Harness) -> None:
    a = await h.up()
    out = h.outputs[a]
    start = len(out.frames)
    await h.ok(a, "send_dtmf", digits="123456789", duration_millis=500)
    await h.ok(a, "send_dtmf", digits="0")
    got = await frames_from(out, start, 40)  # "1" (25 frames), the gap, part of "2"
    assert detected(out, got) == "12"
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    after = await frames_from(out, len(out.frames), 50)
    assert set(digits_per_frame(out, after)) == {None}, "digits after the hangup"
    assert a not in h.runtime.plane.digits_out


async def test_a_stream_that_breaks_mid_digit_plays_that_digit_again_then_the_rest(
    h: Harness,
) -> None:
    a = await h.up()
    first = h.outputs[a]
    start = len(first.frames)
    await h.ok(a, "send_dtmf", digits="36", duration_millis=300)
    got = await frames_from(first, start, 5)  # 100 ms of the 300 ms "3"
    assert digits_per_frame(first, got)[-1] == "3"
    await h.runtime.media_stopped(a)
    second = await h.media(a)
    again = await frames_from(second, 0, frames_for(2 * (300 + GAP_MS)))
    heard = digits_per_frame(second, again)
    assert detected(second, again) == "36"
    assert heard.count("3") >= 300 // FRAME_MS - 1, "the cut digit whole, from its start"
