"""The simulators' audio pieces on their own: sources, analysis, playout, real-time pacing.

Timing is tested against a fake clock, so these tests assert exact schedules without waiting.
"""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from adapters.simulators.audio import (
    FLOOR_DB,
    FRAME_SAMPLES,
    SilenceSource,
    ToneSource,
    WavSource,
    dominant_frequencies,
    dtmf_frames,
    noise_floor_db,
    rms_dbfs,
    tone_level_db,
)
from adapters.simulators.codecs import Resampler, decoder, encoder, resample
from adapters.simulators.pacing import Impairments, PacedSender, Playout, run_ticks
from media.codecs import PCMU_8K, decode, encode


def frames(source: object, n: int) -> np.ndarray:
    return np.concatenate([source.next_frame() for _ in range(n)])  # type: ignore[attr-defined]


class FakeClock:
    """A clock whose sleeps advance time by the delay plus a fixed overshoot."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.t = 1000.0
        self.overshoot = overshoot

    def now(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.t += delay + self.overshoot


# --- sources and analysis ------------------------------------------------------------------------


def test_tone_source_has_its_frequency_and_level() -> None:
    heard = frames(ToneSource(440, level_dbfs=-12), 50)
    assert heard.dtype == np.int16
    assert len(heard) == 50 * FRAME_SAMPLES
    assert tone_level_db(heard, 440) == pytest.approx(-12, abs=0.1)
    (peak,) = dominant_frequencies(heard, 1)
    assert peak.freq_hz == pytest.approx(440, abs=1)
    assert peak.level_db == pytest.approx(-12, abs=0.2)


def test_tone_is_continuous_across_frames() -> None:
    # A phase jump at each 20 ms frame edge would spread energy over the whole spectrum.
    heard = frames(ToneSource(1000), 50)
    assert noise_floor_db(heard, exclude_hz=[1000]) < -100


def test_levels_of_two_tones_are_measured_apart() -> None:
    loud, quiet = frames(ToneSource(1000, -6), 50), frames(ToneSource(440, -36), 50)
    mix = (loud.astype(np.int32) + quiet).astype(np.int16)
    assert tone_level_db(mix, 1000) == pytest.approx(-6, abs=0.2)
    assert tone_level_db(mix, 440) == pytest.approx(-36, abs=0.5)
    assert [round(p.freq_hz) for p in dominant_frequencies(mix, 2)] == [1000, 440]


def test_a_loud_tone_does_not_leak_into_another_frequency() -> None:
    heard = frames(ToneSource(1000, 0), 50)
    assert tone_level_db(heard, 440) < -80


def test_analysis_tolerates_mu_law_noise() -> None:
    tone = frames(ToneSource(440), 50)
    heard = decode(PCMU_8K, encode(PCMU_8K, tone))
    assert tone_level_db(heard, 440) == pytest.approx(-12, abs=0.3)
    assert tone_level_db(heard, 440) - noise_floor_db(heard, exclude_hz=[440]) > 40


def test_silence_reads_as_the_floor() -> None:
    silence = frames(SilenceSource(), 10)
    assert not silence.any()
    assert rms_dbfs(silence) == FLOOR_DB
    assert tone_level_db(silence, 440) == FLOOR_DB
    assert rms_dbfs(frames(ToneSource(440, -20), 10)) == pytest.approx(-20, abs=0.1)


def test_tone_source_refuses_impossible_tones() -> None:
    with pytest.raises(ValueError, match="frequency"):
        ToneSource(4000)
    with pytest.raises(ValueError, match="full scale"):
        ToneSource(440, 3)


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def test_wav_source_plays_once_then_silence(tmp_path: Path) -> None:
    clip = np.arange(1, 241, dtype=np.int16)  # one and a half frames
    source = WavSource(write_wav(tmp_path / "clip.wav", clip))
    first, second, third = (source.next_frame() for _ in range(3))
    assert np.array_equal(first, clip[:160])
    assert np.array_equal(second[:80], clip[160:])
    assert not second[80:].any()
    assert not third.any()
    assert source.finished


def test_wav_source_loops(tmp_path: Path) -> None:
    clip = np.arange(1, 101, dtype=np.int16)
    source = WavSource(write_wav(tmp_path / "clip.wav", clip), loop=True)
    heard = frames(source, 5)
    assert np.array_equal(heard, np.tile(clip, 8))
    assert not source.finished


def test_wav_source_resamples_16_khz(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    tone = np.rint(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    heard = frames(WavSource(write_wav(tmp_path / "wide.wav", tone, rate=16000)), 50)
    assert tone_level_db(heard, 440) == pytest.approx(tone_level_db(tone, 440, 16000), abs=0.5)


def test_wav_source_refuses_stereo(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "stereo.wav", np.zeros(320, dtype=np.int16), channels=2)
    with pytest.raises(ValueError, match="mono"):
        WavSource(path)


# --- playout -------------------------------------------------------------------------------------


def test_playout_plays_queued_audio_then_silence() -> None:
    playout = Playout()
    audio = np.arange(1, 241, dtype=np.int16)
    playout.queue_audio(audio)
    first, _ = playout.tick()
    second, _ = playout.tick()
    third, _ = playout.tick()
    assert np.array_equal(first, audio[:160])
    # A short tail is padded with silence: a provider does not wait for more.
    assert np.array_equal(second, np.concatenate([audio[160:], np.zeros(80, np.int16)]))
    assert not third.any()
    assert playout.queued_samples == 0


def test_mark_with_nothing_queued_comes_back_at_once() -> None:
    assert Playout().queue_mark("now") == ["now"]


def test_mark_comes_back_after_its_audio_has_played() -> None:
    playout = Playout()
    playout.queue_audio(np.ones(320, dtype=np.int16))
    assert playout.queue_mark("two-frames") == []
    assert playout.tick()[1] == []  # frame 1 plays
    assert playout.tick()[1] == []  # frame 2 plays: the mark's audio is playing now
    assert playout.tick()[1] == ["two-frames"]  # frame 2 has finished


def test_mark_behind_audio_playing_now_waits_for_the_frame_to_end() -> None:
    playout = Playout()
    playout.queue_audio(np.ones(160, dtype=np.int16))
    playout.tick()
    assert playout.queue_mark("late") == []
    assert playout.tick()[1] == ["late"]


def test_clear_drops_audio_and_returns_pending_marks() -> None:
    playout = Playout()
    playout.queue_audio(np.ones(8000, dtype=np.int16))
    playout.queue_mark("a")
    playout.queue_audio(np.ones(8000, dtype=np.int16))
    playout.queue_mark("b")
    playout.tick()
    assert playout.clear() == ["a", "b"]
    frame, marks = playout.tick()
    assert not frame.any()
    assert marks == []


def test_playout_refuses_audio_past_its_limit() -> None:
    playout = Playout(max_queued_samples=400)
    assert playout.queue_audio(np.ones(300, dtype=np.int16))
    assert not playout.queue_audio(np.ones(200, dtype=np.int16))
    assert playout.queued_samples == 300


# --- pacing --------------------------------------------------------------------------------------


async def run_sender(impairments: Impairments, clock: FakeClock, frames_wanted: int) -> list:
    sent: list[tuple[int, float]] = []

    async def send(n: int) -> None:
        sent.append((n, clock.now()))
        if len(sent) >= frames_wanted:
            raise StopAsyncIteration

    sender = PacedSender(
        ToneSource(440), lambda n, samples: n, send, impairments,
        origin=clock.now(), now=clock.now, sleep=clock.sleep,
    )  # fmt: skip
    with pytest.raises(StopAsyncIteration):
        await sender.run()
    return sent


async def test_sender_sends_one_frame_per_20_ms_without_drift() -> None:
    clock = FakeClock(overshoot=0.007)  # every sleep wakes 7 ms late
    origin = clock.now()
    sent = await run_sender(Impairments(), clock, 500)
    assert [n for n, _ in sent] == list(range(500))
    lateness = [at - (origin + n * 0.020) for n, at in sent]
    # Late wake-ups never add up: frame 499 is as late as frame 1.
    assert max(lateness) <= 0.007 + 1e-9
    assert min(lateness) >= 0


async def test_jitter_is_bounded_and_keeps_order() -> None:
    clock = FakeClock()
    origin = clock.now()
    sent = await run_sender(Impairments(jitter_ms=35, seed=3), clock, 300)
    assert [n for n, _ in sent] == list(range(300))
    lateness = [at - (origin + n * 0.020) for n, at in sent]
    assert max(lateness) <= 0.035 + 1e-9
    assert max(lateness) > 0.020  # frames really are delayed and bunch behind each other
    assert all(b >= a for (_, a), (_, b) in itertools.pairwise(sent))


async def test_loss_is_seeded() -> None:
    first = await run_sender(Impairments(loss=0.2, seed=7), FakeClock(), 400)
    again = await run_sender(Impairments(loss=0.2, seed=7), FakeClock(), 400)
    numbers = [n for n, _ in first]
    assert numbers == [n for n, _ in again]
    lost = numbers[-1] + 1 - len(numbers)
    assert 40 <= lost <= 160  # about 20 % of ~500 frames


async def test_reorder_swaps_neighbours() -> None:
    sent = await run_sender(Impairments(reorder=0.2, seed=1), FakeClock(), 200)
    numbers = [n for n, _ in sent]
    assert sorted(numbers) == list(range(200))
    swaps = [i for i in range(199) if numbers[i] > numbers[i + 1]]
    assert swaps
    for i in swaps:
        assert numbers[i] == numbers[i + 1] + 1  # only neighbours trade places


async def test_scheduled_disconnect_ends_the_sender() -> None:
    clock = FakeClock()
    origin = clock.now()
    sent: list[int] = []

    async def send(n: int) -> None:
        sent.append(n)

    sender = PacedSender(
        SilenceSource(), lambda n, samples: n, send, Impairments(disconnect_after_ms=100),
        origin=origin, now=clock.now, sleep=clock.sleep,
    )  # fmt: skip
    assert await sender.run() is True
    assert sent == [0, 1, 2, 3, 4]
    assert clock.now() == pytest.approx(origin + 0.100)


def test_impairments_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="probability"):
        Impairments(loss=1.5)
    with pytest.raises(ValueError, match="jitter"):
        Impairments(jitter_ms=-1)


async def test_playout_ticks_catch_up_without_skipping() -> None:
    clock = FakeClock()
    origin = clock.now()
    ticks: list[tuple[int, float]] = []

    async def on_tick(k: int) -> None:
        ticks.append((k, clock.now()))
        if k == 3:
            clock.t += 0.1  # the event loop stalls for five ticks
        if k == 12:
            raise StopAsyncIteration

    with pytest.raises(StopAsyncIteration):
        await run_ticks(on_tick, origin=origin, now=clock.now, sleep=clock.sleep)
    assert [k for k, _ in ticks] == list(range(13))
    assert ticks[12][1] == pytest.approx(origin + 12 * 0.020)


# --- the simulators' own codecs ------------------------------------------------------------------


def test_g711_matches_the_standards_reference_points() -> None:
    # ITU-T G.711 tables: silence is 0xFF in mu-law and 0xD5 in A-law (even bits inverted);
    # the largest positive sample is 0x80 and 0xAA.
    samples = np.array([0, 32767, -32768], dtype=np.int16)
    assert encoder("PCMU").encode(samples) == bytes([0xFF, 0x80, 0x00])
    assert encoder("PCMA").encode(samples) == bytes([0xD5, 0xAA, 0x2A])
    assert decoder("PCMU").decode(bytes([0xFF, 0x80])).tolist() == [0, 32124]
    assert decoder("PCMA").decode(bytes([0xD5, 0xAA])).tolist() == [8, 32256]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "L16"])
def test_8_khz_codecs_round_trip_a_tone(codec: str) -> None:
    audio = frames(ToneSource(440), 50)
    back = decoder(codec).decode(encoder(codec).encode(audio))
    assert tone_level_db(back, 440) == pytest.approx(-12, abs=0.1)


def test_l16_byte_order_is_honoured() -> None:
    samples = np.array([1, -2], dtype=np.int16)
    assert encoder("L16", "big").encode(samples) == b"\x00\x01\xff\xfe"
    assert encoder("L16", "little").encode(samples) == b"\x01\x00\xfe\xff"
    assert decoder("L16", "little").decode(b"\x01\x00\xfe\xff").tolist() == [1, -2]
    with pytest.raises(ValueError, match="odd"):
        decoder("L16").decode(b"\x00")


def test_g722_streams_keep_state_across_frames() -> None:
    wide = resample(frames(ToneSource(1000), 50), 8000, 16000)
    encode, decode = encoder("G722"), decoder("G722")
    chunks = [encode.encode(wide[i : i + 320]) for i in range(0, len(wide), 320)]
    assert {len(chunk) for chunk in chunks} == {160}  # 64 kbit/s: 8 bytes a millisecond
    back = np.concatenate([decode.decode(chunk) for chunk in chunks])
    assert tone_level_db(back[1600:], 1000, 16000) == pytest.approx(-12, abs=0.5)


def test_opus_is_opaque_and_not_decodable() -> None:
    assert encoder("OPUS").encode(np.zeros(160, dtype=np.int16)).startswith(b"SIMULATED")
    with pytest.raises(ValueError, match="cannot decode"):
        decoder("OPUS")


def test_resampling_keeps_the_band_and_stops_images() -> None:
    tone = frames(ToneSource(1000), 50)
    up = resample(tone, 8000, 16000)
    assert len(up) == 2 * len(tone)
    assert tone_level_db(up, 1000, 16000) == pytest.approx(-12, abs=0.2)
    assert tone_level_db(up, 7000, 16000) < -80  # the image of 1 kHz at 8 kHz
    back = resample(up, 16000, 8000)
    # No delay and no loss away from the clip's edges (where the filter meets silence).
    assert np.abs(back[100:-100].astype(int) - tone[100:-100]).max() <= 2


def test_streaming_resampler_matches_the_whole_clip() -> None:
    tone = frames(ToneSource(440), 20)
    streaming = Resampler(8000, 16000)
    pieces = np.concatenate([streaming.process(tone[i : i + 160]) for i in range(0, 3200, 160)])
    whole = Resampler(8000, 16000).process(tone)
    assert np.array_equal(pieces, whole)
    down = Resampler(16000, 8000)
    odd = [down.process(pieces[i : i + 161]) for i in range(0, len(pieces), 161)]
    assert np.array_equal(np.concatenate(odd), Resampler(16000, 8000).process(pieces))


def test_dtmf_frames_hold_the_two_tones_of_the_key() -> None:
    press = np.concatenate(dtmf_frames("9", 100))
    assert len(press) == 5 * FRAME_SAMPLES
    assert tone_level_db(press, 852) == pytest.approx(-10, abs=0.5)
    assert tone_level_db(press, 1477) == pytest.approx(-10, abs=0.5)
    assert tone_level_db(press, 697) < -40
    last = dtmf_frames("9", 90)[-1]
    assert not last[80:].any()  # 90 ms: the last frame ends in silence
    with pytest.raises(ValueError, match="not a DTMF digit"):
        dtmf_frames("E", 100)
