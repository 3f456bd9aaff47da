"""Tone sources play precomputed loops: rendered once, sliced per frame, shared by every leg."""

from __future__ import annotations

import numpy as np
import pytest

from media.tones import NOISE_LOOP, ComfortNoise, Playback, Ringback, Silence, ringtone_spec

RATE = 8000


def test_every_ringback_of_a_country_shares_one_rendered_cycle() -> None:
    a, b = Ringback("uk"), Ringback("uk")
    first_a, first_b = a(160), b(160)
    assert np.shares_memory(first_a, first_b)  # one cycle in memory, whatever the leg count
    assert not first_a.flags.writeable  # shared: nobody may write into it


@pytest.mark.parametrize("country", ["us", "uk", "de"])
def test_the_cycle_repeats_exactly_and_a_frame_across_its_end_wraps(country: str) -> None:
    cycle = sum(ringtone_spec(country).cadence_ms) * RATE // 1000
    tone = Ringback(country)
    whole = np.concatenate([tone(160) for _ in range(-(-2 * cycle // 160) + 1)])
    assert np.array_equal(whole[:cycle], whole[cycle : 2 * cycle])
    late = Ringback(country)
    late(cycle - 50)
    assert np.array_equal(late(160), np.concatenate((whole[cycle - 50 : cycle], whole[:110])))


def test_ringback_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Ringback()(-1)


def test_comfort_noise_loops_after_its_rendered_stretch() -> None:
    noise = ComfortNoise(-60.0, seed=1)
    first = noise(1000).copy()
    noise(NOISE_LOOP - 1000)
    assert np.array_equal(noise(1000), first)


def test_silence_longer_than_its_shared_zeros_is_still_zeros() -> None:
    assert not Silence()(100_000).any()
    assert Silence()(100_000).shape == (100_000,)


def test_playback_frames_are_views_of_its_own_copy_of_the_clip() -> None:
    clip = np.arange(1, 1001, dtype=np.int16)
    playback = Playback(clip)
    frame = playback(160)
    clip[:] = 0  # the caller's array is not what plays
    assert np.array_equal(frame, np.arange(1, 161))
    with pytest.raises(ValueError, match="read-only"):
        frame[0] = 5
