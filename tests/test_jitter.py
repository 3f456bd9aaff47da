from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.jitter import JitterBuffer, JitterStats


def frame(seq: int) -> bytes:
    return seq.to_bytes(4, "big")


def push_all(buffer: JitterBuffer, seqs: list[int]) -> None:
    for seq in seqs:
        buffer.push(seq, frame(seq))


def played(buffer: JitterBuffer, ticks: int) -> list[int | None]:
    out: list[int | None] = []
    for _ in range(ticks):
        payload = buffer.pop()
        out.append(None if payload is None else int.from_bytes(payload, "big"))
    return out


def in_real_time(buffer: JitterBuffer, seqs: list[int]) -> list[int | None]:
    """One frame arrives per tick, as a steady provider delivers them."""
    out: list[int | None] = []
    for seq in seqs:
        buffer.push(seq, frame(seq))
        out += played(buffer, 1)
    return out


def test_nothing_plays_until_depth_frames_are_buffered() -> None:
    buffer = JitterBuffer(depth=3)
    push_all(buffer, [1, 2])
    assert played(buffer, 2) == [None, None]
    push_all(buffer, [3])
    assert played(buffer, 4) == [1, 2, 3, None]
    # Building the first cushion is not starvation; running dry afterwards is.
    assert buffer.stats.starved == 1
    assert buffer.stats.played == 3


def test_prefill_overrides_depth_for_the_start() -> None:
    buffer = JitterBuffer(depth=3, prefill=1)
    push_all(buffer, [7])
    assert played(buffer, 1) == [7]


def test_the_first_frame_may_carry_any_number() -> None:
    buffer = JitterBuffer(depth=2)
    push_all(buffer, [1_000_001, 1_000_000])
    assert played(buffer, 2) == [1_000_000, 1_000_001]


def test_frames_out_of_order_are_played_in_order() -> None:
    buffer = JitterBuffer(depth=3)
    push_all(buffer, [2, 1, 3])
    assert played(buffer, 1) == [1]
    push_all(buffer, [5, 4])
    assert played(buffer, 4) == [2, 3, 4, 5]
    assert buffer.stats.reordered == 2
    assert buffer.stats.late == 0


def test_a_frame_behind_the_playout_point_is_late_and_dropped() -> None:
    buffer = JitterBuffer(depth=2)
    push_all(buffer, [1, 2, 3])
    assert played(buffer, 2) == [1, 2]
    push_all(buffer, [2, 1])
    assert buffer.stats.late == 2
    assert played(buffer, 2) == [3, None]


def test_a_duplicate_of_a_buffered_frame_is_counted_and_ignored() -> None:
    buffer = JitterBuffer(depth=2)
    buffer.push(1, b"first")
    buffer.push(1, b"again")
    buffer.push(2, b"second")
    assert len(buffer) == 2
    assert [buffer.pop(), buffer.pop()] == [b"first", b"second"]
    assert buffer.stats.duplicate == 1


def test_a_gap_in_the_numbering_costs_no_silent_tick() -> None:
    # Twilio's sequenceNumber also counts marks and DTMF, so media numbers can jump.
    buffer = JitterBuffer(depth=2)
    push_all(buffer, [1, 2, 4, 5, 9])
    assert played(buffer, 5) == [1, 2, 4, 5, 9]
    assert buffer.stats.skipped == 4
    assert buffer.stats.starved == 0


def test_after_running_dry_it_rebuilds_the_cushion_before_playing_again() -> None:
    buffer = JitterBuffer(depth=2)
    push_all(buffer, [1, 2])
    assert played(buffer, 3) == [1, 2, None]
    push_all(buffer, [3])
    assert played(buffer, 1) == [None]
    push_all(buffer, [4])
    assert played(buffer, 3) == [3, 4, None]
    assert buffer.stats.starved == 3


def test_overflow_drops_the_oldest_and_keeps_the_capacity() -> None:
    buffer = JitterBuffer(depth=2, capacity=4)
    push_all(buffer, list(range(1, 11)))
    assert len(buffer) == 4
    assert buffer.stats.dropped == 6
    assert played(buffer, 5) == [7, 8, 9, 10, None]
    # The dropped frames were received, so they must not be counted as missing numbers too.
    assert buffer.stats.skipped == 0


def test_overflow_moves_playout_past_numbers_that_never_came() -> None:
    buffer = JitterBuffer(depth=2, capacity=3)
    push_all(buffer, [1, 2])
    assert played(buffer, 1) == [1]
    push_all(buffer, [5, 6, 7, 8])
    assert buffer.stats.dropped == 2
    # 3 and 4 never arrived before the drops pushed playout beyond them: now they are late.
    assert buffer.stats.skipped == 2
    push_all(buffer, [3, 4])
    assert buffer.stats.late == 2
    assert played(buffer, 3) == [6, 7, 8]


def test_default_capacity_bounds_a_long_burst() -> None:
    buffer = JitterBuffer()
    push_all(buffer, list(range(500)))
    assert len(buffer) == buffer.capacity == 9


def test_a_large_jump_backwards_starts_a_new_stream() -> None:
    # A reconnect restarts the counter; treating the new frames as late would mute the leg.
    buffer = JitterBuffer(depth=2, restart_window=50)
    assert in_real_time(buffer, list(range(400, 501)))[-1] == 499
    assert in_real_time(buffer, [1, 2, 3, 4]) == [None, 1, 2, 3]
    assert buffer.stats.late == 0
    # The old stream's last frame was still buffered when the new one began.
    assert buffer.stats.dropped == 1


def test_a_jump_backwards_within_the_window_is_just_late() -> None:
    buffer = JitterBuffer(depth=2, restart_window=50)
    assert in_real_time(buffer, list(range(100, 111)))[-1] == 109
    push_all(buffer, [60])
    assert buffer.stats.late == 1
    assert played(buffer, 1) == [110]


def test_reset_forgets_the_stream_and_keeps_the_counters() -> None:
    buffer = JitterBuffer(depth=2)
    push_all(buffer, [10, 11, 12])
    played(buffer, 1)
    buffer.reset()
    assert len(buffer) == 0
    assert buffer.stats.dropped == 2
    push_all(buffer, [5])
    assert played(buffer, 1) == [None]
    # A fresh stream is prefilling again, so its silent tick is not starvation.
    assert buffer.stats.starved == 0
    push_all(buffer, [6])
    assert played(buffer, 2) == [5, 6]


def test_stats_are_a_snapshot() -> None:
    buffer = JitterBuffer()
    snapshot = buffer.stats
    push_all(buffer, [1])
    assert snapshot == JitterStats()
    assert buffer.stats.received == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 0}, {"prefill": 0}, {"depth": 3, "capacity": 2}, {"restart_window": 0}],
)
def test_impossible_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        JitterBuffer(**kwargs)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.one_of(st.integers(min_value=0, max_value=120), st.none()),
        max_size=300,
    )
)
def test_every_frame_is_accounted_for_and_playout_never_goes_backwards(
    ops: list[int | None],
) -> None:
    # None is a tick; an int is an arriving frame. Small numbers make reorders, late frames,
    # duplicates, overflow and restarts all likely.
    buffer = JitterBuffer(depth=3, capacity=8, restart_window=40)
    newest: int | None = None
    last_played: int | None = None
    for op in ops:
        if op is None:
            payload = buffer.pop()
            if payload is not None:
                seq = int.from_bytes(payload, "big")
                assert last_played is None or seq > last_played
                last_played = seq
        else:
            if newest is not None and newest - op > 40:
                # The documented restart rule: only a new stream may play lower numbers.
                newest = last_played = None
            newest = op if newest is None else max(newest, op)
            buffer.push(op, frame(op))
        assert len(buffer) <= 8
    s = buffer.stats
    assert s.received == s.played + s.late + s.duplicate + s.dropped + len(buffer)
