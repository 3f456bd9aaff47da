"""Batched resampling (``media.resample_bank``) against the per-stream ``Resampler``."""

from __future__ import annotations

import numpy as np
import pytest

from media.codecs import L16_16K, PCMU_8K, Resampler, decode, encode
from media.mixer import Mixer
from media.resample_bank import ResamplerBank

N = 160


@pytest.mark.parametrize(("from_rate", "to_rate"), [(16000, 8000), (8000, 16000)])
def test_each_row_is_its_own_stream_as_a_resampler_would_filter_it(
    from_rate: int, to_rate: int
) -> None:
    rng = np.random.default_rng(5)
    n = N * from_rate // 8000
    bank = ResamplerBank(from_rate, to_rate, capacity=6)
    rows = np.array([4, 0, 2])
    streams = [Resampler(from_rate, to_rate) for _ in rows]
    for _ in range(12):
        frames = rng.integers(-32768, 32768, (rows.size, n)).astype(np.int16)
        out = bank.process(rows, frames)
        assert out.shape == (rows.size, n * to_rate // from_rate)
        for i, stream in enumerate(streams):
            want = stream.process(frames[i]).astype(np.int32)
            assert np.abs(out[i].astype(np.int32) - want).max() <= 1


def test_a_reset_row_starts_from_silence_and_the_others_keep_their_history() -> None:
    bank = ResamplerBank(8000, 16000, capacity=2)
    loud = np.full((2, N), 20000, dtype=np.int16)
    bank.process(np.array([0, 1]), loud)
    bank.reset([0])
    out = bank.process(np.array([0, 1]), np.zeros((2, N), dtype=np.int16))
    assert not out[0].any()
    assert out[1].any()  # the filter's tail of row 1's loud frame


def test_the_bank_refuses_what_it_cannot_convert() -> None:
    with pytest.raises(ValueError, match="between 8000 and 16000"):
        ResamplerBank(8000, 48000)
    with pytest.raises(ValueError, match="two different rates"):
        ResamplerBank(8000, 8000)
    with pytest.raises(ValueError, match="even-length"):
        ResamplerBank(16000, 8000, 1).process(np.array([0]), np.zeros((1, 321), dtype=np.int16))


def test_many_wideband_legs_in_one_tick_each_hear_their_own_peer() -> None:
    # Five wideband legs, each with a narrowband peer in its own room: one batch per direction,
    # and each leg's audio goes through its own filter state (compared with a fresh Resampler).
    rng = np.random.default_rng(9)
    mixer = Mixer(passthrough=False)
    for i in range(5):
        mixer.add_leg(f"wide-{i}", L16_16K)
        mixer.add_leg(f"phone-{i}", PCMU_8K)
        mixer.join(f"wide-{i}", f"r{i}")
        mixer.join(f"phone-{i}", f"r{i}")
    down = [Resampler(16000, 8000) for _ in range(5)]
    up = [Resampler(8000, 16000) for _ in range(5)]
    for _ in range(6):
        wide = rng.integers(-8000, 8000, (5, 2 * N)).astype(np.int16)
        phone = decode(PCMU_8K, encode(PCMU_8K, rng.integers(-8000, 8000, 5 * N).astype(np.int16)))
        for i in range(5):
            mixer.put_frame(f"wide-{i}", encode(L16_16K, wide[i]))
            mixer.put_frame(f"phone-{i}", encode(PCMU_8K, phone[i * N : (i + 1) * N]))
        frames = dict(mixer.tick().frames)
        for i in range(5):
            heard_wide = decode(L16_16K, frames[f"wide-{i}"]).astype(np.int32)
            want_wide = up[i].process(phone[i * N : (i + 1) * N]).astype(np.int32)
            assert np.abs(heard_wide - want_wide).max() <= 1
            heard_phone = decode(PCMU_8K, frames[f"phone-{i}"])
            want_phone = decode(PCMU_8K, encode(PCMU_8K, down[i].process(wide[i])))
            assert np.array_equal(heard_phone, want_phone)
