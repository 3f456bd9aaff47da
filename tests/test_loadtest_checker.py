"""The load test's audio checker, fed synthetic received audio: it must flag what it should.

Each test builds what a listener would receive from its room (each speaker's tone, with its
phase markers, through a G.711 round trip as on the wire) and spoils it in one known way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.loadtest.checker import AudioChecker, SendLog, Tally
from benchmarks.loadtest.frames import FRAME_S, amplitude_for, marker_sign, tone_frame
from benchmarks.loadtest.judge import Voice, VoiceSource, judge
from benchmarks.loadtest.plan import MARKER_PERIOD, Plan, make_plan
from media.codecs import PCMU_8K, decode, encode

FRAMES = 300  # six seconds
LATENCY_S = 0.004
BUDGET_S = 0.020
Frame = npt.NDArray[np.int16]


def spoken(plan: Plan, leg: int, n: int) -> npt.NDArray[np.float64]:
    """Frame ``n`` of what ``leg`` says, before encoding."""
    spec = plan.legs[leg]
    sign = marker_sign(n, spec.marker_offset, plan.marker_period)
    return sign * tone_frame(spec.bin, spec.amplitude).astype(np.float64)


def wire(samples: npt.NDArray[np.float64]) -> Frame:
    clipped = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return decode(PCMU_8K, encode(PCMU_8K, clipped))


class Scene:
    """One plan, its send log (frame n of every leg sent at n * 20 ms) and a checker."""

    def __init__(
        self, room_size: int = 2, legs: int = 8, *, wideband: bool = False, told: bool = True
    ) -> None:
        """``wideband``: the Telnyx legs are G.722 (their rooms resample); ``told``: the
        checker is told which rooms do."""
        self.plan = make_plan(legs, room_size, "mixed", telnyx_codec="G722" if wideband else "PCMU")
        self.log = SendLog(len(self.plan.legs))
        for leg in range(len(self.plan.legs)):
            for n in range(FRAMES + 50):
                self.log.record(leg, n, n * FRAME_S)
        self.checker = AudioChecker(
            self.plan.speakers(),
            [room.legs for room in self.plan.rooms],
            self.log,
            marker_period=self.plan.marker_period,
            budget_s=BUDGET_S,
            thresholds=self.plan.thresholds(),
            resampled=self.plan.wideband_rooms() if told else None,
        )

    def heard(self, listener: int, n: int) -> npt.NDArray[np.float64]:
        """What ``listener`` should hear in frame ``n``: the sum of its peers' frame n."""
        return sum((spoken(self.plan, p, n) for p in self.plan.peers(listener)), np.zeros(160))

    def stream(
        self,
        listener: int,
        spoil: Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]
        | None = None,
        delay: Callable[[int], float] = lambda n: 0.0,
    ) -> tuple[list[int], list[float], list[Frame]]:
        """The frames ``listener`` receives; ``spoil(n, audio)`` may change or drop (None) one."""
        legs, arrivals, frames = [], [], []
        for n in range(FRAMES):
            clean: npt.NDArray[np.float64] = self.heard(listener, n)
            audio = clean if spoil is None else spoil(n, clean)
            if audio is None:
                continue
            legs.append(listener)
            arrivals.append(n * FRAME_S + LATENCY_S + delay(n))
            frames.append(wire(audio))
        return legs, arrivals, frames

    def run(self, *streams: tuple[list[int], list[float], list[Frame]], batch: int = 0) -> Tally:
        legs = [leg for s in streams for leg in s[0]]
        self.checker.open_window(0.0, sorted(set(legs)))
        arrivals = [a for s in streams for a in s[1]]
        frames = [f for s in streams for f in s[2]]
        step = batch or len(legs)
        # Interleave streams by arrival, as the generator delivers them.
        order = np.argsort(np.asarray(arrivals), kind="stable")
        all_legs, all_arrivals, all_frames = (
            np.asarray(legs),
            np.asarray(arrivals),
            np.stack(frames),
        )
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            self.checker.process(all_legs[chunk], all_arrivals[chunk], all_frames[chunk])
        return self.checker.close_window((FRAMES - 1) * FRAME_S + 0.1, allowance_s=0.1)


def frames_in(start: int, stop: int) -> Callable[[int], bool]:
    return lambda n: start <= n < stop


def test_a_clean_stream_passes_with_exact_counts_and_latency() -> None:
    scene = Scene()
    tally = scene.run(scene.stream(0), scene.stream(1))
    assert tally.misrouted_frames == 0
    assert tally.gap_frames == 0
    assert tally.speaker_frames_lost == 0
    assert tally.speaker_frames_duplicated == 0
    assert tally.late_frames == 0
    assert tally.frames_received == 2 * FRAMES
    assert tally.markers >= 2 * (FRAMES // MARKER_PERIOD - 1)
    latencies = tally.latencies()
    assert latencies.size > 2 * (FRAMES - 2 * MARKER_PERIOD)
    assert np.allclose(latencies, LATENCY_S, atol=1e-6)
    assert tally.unarmed_legs == []


def test_rooms_of_three_hear_both_peers_mixed() -> None:
    scene = Scene(room_size=3, legs=9)
    tally = scene.run(*(scene.stream(leg) for leg in range(3)))
    assert (tally.misrouted_frames, tally.gap_frames, tally.speaker_frames_lost) == (0, 0, 0)
    assert tally.latencies().size > 3 * 2 * (FRAMES - 2 * MARKER_PERIOD)


def test_own_tone_is_misrouted() -> None:
    scene = Scene()
    echo = frames_in(100, 105)

    def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return audio + spoken(scene.plan, 0, n) if echo(n) else audio

    tally = scene.run(scene.stream(0, spoil))
    assert tally.misrouted_frames == 5
    assert tally.misrouted_by_reason == {"own": 5}
    assert {m.listener for m in tally.examples} == {0}


def test_a_tone_from_another_room_is_misrouted() -> None:
    scene = Scene()
    intruder = 2  # room 1
    assert scene.plan.legs[intruder].room != scene.plan.legs[0].room
    leak = frames_in(120, 123)

    def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return audio + spoken(scene.plan, intruder, n) if leak(n) else audio

    tally = scene.run(scene.stream(0, spoil))
    assert tally.misrouted_by_reason == {"foreign-tone": 3}
    freq = scene.plan.legs[intruder].freq_hz
    assert all(f"{freq:.0f} Hz" in m.detail for m in tally.examples)
    assert tally.speaker_frames_lost == 0


def test_another_room_on_the_same_bin_is_caught_by_its_level() -> None:
    scene = Scene(legs=200)
    peer = scene.plan.legs[1]
    twin = next(leg for leg in scene.plan.legs if leg.bin == peer.bin and leg.index != peer.index)
    assert twin.level_dbfs != peer.level_dbfs
    swapped = frames_in(60, 64)

    def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # The twin replaces the peer: same frequency, another level.
        return spoken(scene.plan, twin.index, n) if swapped(n) else audio

    tally = scene.run(scene.stream(0, spoil))
    assert tally.misrouted_by_reason == {"level": 4}


def test_broadband_foreign_audio_is_misrouted() -> None:
    scene = Scene()
    noisy = frames_in(200, 206)
    rng = np.random.default_rng(3)

    def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return audio + rng.normal(0, 1500, 160) if noisy(n) else audio

    tally = scene.run(scene.stream(0, spoil))
    assert tally.misrouted_frames == 6
    assert set(tally.misrouted_by_reason) <= {"foreign-energy", "foreign-tone"}


def test_a_gap_is_lost_audio() -> None:
    scene = Scene()
    silent = frames_in(50, 60)

    def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.zeros(160) if silent(n) else audio

    tally = scene.run(scene.stream(0, spoil))
    assert tally.gap_frames == 10
    assert tally.speaker_frames_lost == 10
    assert tally.misrouted_frames == 0


def test_frames_never_delivered_are_lost_by_count() -> None:
    scene = Scene()
    dropped = frames_in(70, 75)
    tally = scene.run(scene.stream(0, lambda n, audio: None if dropped(n) else audio))
    assert tally.gap_frames == 0
    assert tally.speaker_frames_lost == 5
    assert tally.frames_received == FRAMES - 5


def test_a_gap_spanning_a_marker_is_still_counted_exactly() -> None:
    scene = Scene()
    offset = scene.plan.legs[1].marker_offset
    around = frames_in(offset + 5 * MARKER_PERIOD - 3, offset + 5 * MARKER_PERIOD + 4)
    tally = scene.run(scene.stream(0, lambda n, audio: None if around(n) else audio))
    assert tally.speaker_frames_lost == 7


def test_late_frames_are_flagged() -> None:
    scene = Scene()
    tally = scene.run(scene.stream(0, delay=lambda n: 0.1 if n >= FRAMES - 40 else 0.0))
    assert tally.late_frames == 40
    assert tally.percentiles_ms()["max"] == pytest.approx((LATENCY_S + 0.1) * 1000, abs=0.01)
    assert tally.misrouted_frames == 0


def test_a_speaker_that_goes_quiet_is_charged_when_the_window_closes() -> None:
    scene = Scene()
    # From frame 200 on the listener receives nothing: no marker closes the last segment.
    tally = scene.run(scene.stream(0, lambda n, audio: None if n >= 200 else audio))
    assert tally.speaker_frames_lost == pytest.approx(FRAMES - 200 + 10 - 5, abs=6)


def test_a_listener_whose_room_never_comes_together_is_unarmed_and_lost() -> None:
    scene = Scene()
    tally = scene.run(scene.stream(0, lambda n, audio: np.zeros(160)))
    assert tally.unarmed_legs == [0]
    assert tally.frames_received == 0
    assert tally.speaker_frames_lost == tally.speaker_frames_expected > 0


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_batches_of_any_size_give_the_same_tally(batch: int) -> None:
    def run(batch: int) -> Tally:
        scene = Scene(room_size=3, legs=6)
        gap = frames_in(90, 95)

        def spoil(n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
            return None if gap(n) else audio

        return scene.run(*(scene.stream(leg, spoil) for leg in range(6)), batch=batch)

    whole, split = run(0), run(batch)
    assert split.speaker_frames_lost == whole.speaker_frames_lost == 6 * 2 * 5
    assert split.markers == whole.markers
    assert np.array_equal(np.sort(split.latencies()), np.sort(whole.latencies()))


def test_a_closed_window_keeps_its_counts() -> None:
    scene = Scene()
    tally = scene.run(scene.stream(0))
    counted = tally.frames_received
    legs, arrivals, frames = scene.stream(0)
    scene.checker.process(np.asarray(legs), np.asarray(arrivals) + 10, np.stack(frames))
    assert tally.frames_received == counted


def test_identities_are_unique_within_the_plan_limit() -> None:
    plan = make_plan(400, 2, "mixed")
    identities = {(leg.bin, leg.level_dbfs) for leg in plan.legs}
    assert len(identities) == plan.unique_identities == 400
    for room in plan.rooms:
        bins = sorted(plan.legs[leg].bin for leg in room.legs)
        assert all(b - a >= 2 for a, b in itertools.pairwise(bins))  # >= 100 Hz
    assert {plan.legs[0].provider, plan.legs[1].provider} == {"twilio", "telnyx"}


def test_the_loudest_mix_of_a_room_stays_below_full_scale() -> None:
    for size in (2, 3, 5, 10):
        plan = make_plan(size, size, "twilio")
        total = sum(plan.legs[leg].amplitude for leg in plan.peers(0))
        assert total < amplitude_for(0)


def _levels(plan: Plan) -> Sequence[float]:
    return sorted({leg.level_dbfs for leg in plan.legs})


# --- judge: one listener's frames, no clock (what the end-to-end tests use) --------------------

ME = Voice(bin=9, level_dbfs=-18.0)  # 450 Hz
PEERS = (Voice(bin=14, level_dbfs=-18.0, marker_offset=3), Voice(bin=34, level_dbfs=-18.0))
JUDGED = 200


def received(
    voices: Sequence[Voice] = PEERS,
    spoil: Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None] | None = None,
) -> list[Frame]:
    """What a listener of ``voices`` receives: their mix per frame through G.711, ``spoil(n,
    audio)`` changing or dropping (None) frame n."""
    sources = [VoiceSource(v) for v in voices]
    frames: list[Frame] = []
    for n in range(JUDGED):
        audio: npt.NDArray[np.float64] | None = sum(
            (s.next_frame().astype(np.float64) for s in sources), np.zeros(160)
        )
        if spoil is not None and audio is not None:
            audio = spoil(n, audio)
        if audio is not None:
            frames.append(wire(audio))
    return frames


def without(voice: Voice, n: int, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Frame ``n`` of ``audio`` with ``voice``'s frame n taken out."""
    sign = marker_sign(n, voice.marker_offset, voice.marker_period)
    return audio - sign * tone_frame(voice.bin, voice.amplitude).astype(np.float64)


def test_judge_passes_a_clean_mix_and_counts_its_markers() -> None:
    hearing = judge(received(), PEERS, ME)
    assert hearing.problems() == []
    assert hearing.established_at == 0
    # Every marker turn of each speaker is heard: one per 20 frames.
    assert hearing.markers == (JUDGED // 20, JUDGED // 20 - 1)


def test_judge_finds_silence_before_the_room_is_established_harmless() -> None:
    late = received(spoil=lambda n, audio: np.zeros(160) if n < 30 else audio)
    hearing = judge(late, PEERS, ME)
    assert hearing.established_at == 30
    assert hearing.problems() == []


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda n, a: a + tone_frame(ME.bin, ME.amplitude) if n == 40 else a, "1 misrouted"),
        (lambda n, a: a + tone_frame(50, amplitude_for(-30)) if n == 40 else a, "1 misrouted"),
        (lambda n, a: a * 10 ** (2 / 20) if n == 40 else a, "1 misrouted"),
        (lambda n, a: without(PEERS[1], n, a) if n == 40 else a, "1 frames"),
        # A frame never delivered loses both voices' frame, here and on a marker frame.
        (lambda n, a: None if n == 40 else a, "2 speaker frames lost"),
        (lambda n, a: None if n == 60 else a, "2 speaker frames lost"),
    ],
    ids=["own-tone", "foreign-tone", "level-2dB", "gap", "dropped", "dropped-marker"],
)
def test_judge_flags_one_spoilt_frame(
    spoil: Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None],
    expected: str,
) -> None:
    problems = judge(received(spoil=spoil), PEERS, ME).problems()
    assert [p for p in problems if p.startswith(expected)], problems


def test_judge_never_accepts_a_silent_frame_once_established() -> None:
    # Every voice gone from one frame (silence sent in place of late frames) is a problem
    # whatever gaps the caller accepts; a frame missing one voice of two is only a gap.
    silent = received(spoil=lambda n, a: np.zeros(160) if n in (50, 51) else a)
    hearing = judge(silent, PEERS, ME)
    assert hearing.silent == (50, 51)
    assert [p for p in hearing.problems(max_gap_run=9, max_lost=9) if "silent" in p] == [
        "2 silent frames after frame 0: [50, 51]"
    ]
    one_gone = judge(
        received(spoil=lambda n, a: without(PEERS[1], n, a) if n == 50 else a), PEERS, ME
    )
    assert one_gone.silent == () and one_gone.gaps == (50,)


def test_judge_flags_a_duplicated_frame() -> None:
    frames = received()
    frames.insert(45, frames[44])
    hearing = judge(frames, PEERS, ME)
    assert hearing.duplicated == 2  # both voices of the frame
    assert hearing.lost == 0
    assert [p for p in hearing.problems() if "duplicated" in p]


def test_judge_without_every_voice_is_never_established() -> None:
    hearing = judge(received(PEERS[:1]), PEERS, ME)
    assert hearing.established_at is None
    assert hearing.gaps == () and hearing.duplicated == hearing.lost == 0
    assert hearing.problems() == [f"never heard every expected speaker cleanly in {JUDGED} frames"]


def test_judge_of_a_listener_who_should_hear_nobody_flags_any_voice() -> None:
    silence = [np.zeros(160, dtype=np.int16)] * 50
    assert judge(silence, [], ME).problems() == []
    problems = judge(received(PEERS[:1]), [], ME).problems()
    assert problems and problems[0].startswith(f"{JUDGED} misrouted frames")


def test_judge_tolerates_only_the_gaps_and_loss_it_is_told_to() -> None:
    short = frames_in(50, 53)  # 60 ms without the second voice
    long = frames_in(120, 127)  # 140 ms without it
    gapped = received(spoil=lambda n, a: without(PEERS[1], n, a) if short(n) or long(n) else a)
    hearing = judge(gapped, PEERS, ME)
    assert (len(hearing.gaps), hearing.longest_gap) == (10, 7)
    assert hearing.problems(max_gap_run=7, max_lost=10) == []
    (gap,) = hearing.problems(max_gap_run=6, max_lost=10)
    assert gap.startswith("10 frames missing a speaker") and "up to 7 in a row" in gap
    assert hearing.problems(max_gap_run=7, max_lost=9) == ["10 speaker frames lost"]
    duplicated = received()
    duplicated.insert(45, duplicated[44])
    assert judge(duplicated, PEERS, ME).problems(max_gap_run=99, max_lost=99) != []


@pytest.mark.parametrize(
    ("fields", "match"),
    [({"bin": 0}, "bin 0"), ({"bin": 80}, "bin 80"), ({"bin": 9, "marker_period": 1}, "period")],
    ids=["dc", "nyquist", "period"],
)
def test_a_voice_must_be_a_tone_with_markers(fields: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Voice(level_dbfs=-12.0, **fields)
