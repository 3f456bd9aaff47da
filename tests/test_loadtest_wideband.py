"""The load test's checker on wideband paths: audio that went through the simulator's 8 <-> 16 kHz
resampler and G.722, so every marker turn falls inside a received frame (``frames.py``, turning
frames). Such a stream must pass as clean with exact counts and latency, and every spoiler that
``test_loadtest_checker.py`` catches on G.711 paths must still be caught, on a turning frame too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from adapters.simulators.codecs import Resampler, decoder, encoder
from benchmarks.loadtest.checker import Tally
from benchmarks.loadtest.frames import FRAME_S, amplitude_for, tone_frame
from benchmarks.loadtest.judge import Voice, VoiceSource, judge
from benchmarks.loadtest.plan import make_plan
from tests.test_loadtest_checker import FRAMES, LATENCY_S, Frame, Scene, spoken

WARMUP = 3  # frames sent before any is received: the path's delay line is full by then
# The first frame received: not one that holds a turn (a listener's first frame has no frame
# before it to tell that it does; in a load test it arrives before any measurement window).
FIRST = 2
Spoil = Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]


class WidebandPath:
    """8 kHz frames up to 16 kHz, through G.722 and back down, one 20 ms frame at a time (as a
    Telnyx G.722 leg's audio goes through the simulator); stateful like a stream."""

    def __init__(self, extra_delay: int = 0) -> None:
        self._up, self._down = Resampler(8000, 16000), Resampler(16000, 8000)
        self._encoder, self._decoder = encoder("G722"), decoder("G722")
        self._pending = np.zeros(extra_delay, dtype=np.int16)  # another path's delay

    def frame(self, audio: npt.NDArray[np.float64]) -> Frame:
        samples = np.clip(np.rint(audio), -32768, 32767).astype(np.int16)
        wide = self._decoder.decode(self._encoder.encode(self._up.process(samples)))
        self._pending = np.concatenate((self._pending, self._down.process(wide)))
        out, self._pending = self._pending[:160], self._pending[160:]
        return out


def turn_level() -> float:
    """The level at which the path delivers the frame holding a sign turn, as a share of the
    tone's (1.0: the turn is on a frame boundary, as on G.711 paths)."""
    path = WidebandPath()
    tone = tone_frame(20, amplitude_for(-12)).astype(np.float64)
    heard = [path.frame(sign * tone) for sign in (1, 1, 1, -1, -1)]
    spectrum = np.abs(np.fft.rfft(np.stack(heard).astype(np.float64), axis=1))[:, 20]
    return float(spectrum[3] / spectrum[2])


class WideScene(Scene):
    """Pairs with a G.722 leg in each room: every listener's audio went through the path."""

    def __init__(
        self, legs: int = 8, resampled: bool = True, room_size: int = 2, extra_delay: int = 0
    ) -> None:
        super().__init__(room_size, legs, wideband=True, told=resampled)
        self.extra_delay = extra_delay

    def turn(self, listener: int, m: int = 5) -> int:
        """The received frame that holds the ``m``-th marker turn of ``listener``'s first peer."""
        peer = self.plan.legs[self.plan.peers(listener)[0]]
        return peer.marker_offset + m * self.plan.marker_period

    def stream(
        self,
        listener: int,
        spoil: Spoil | None = None,
        delay: Callable[[int], float] = lambda n: 0.0,
        *,
        left_out: Callable[[int, int], bool] = lambda leg, n: False,
    ) -> tuple[list[int], list[float], list[Frame]]:
        """What ``listener`` receives; ``spoil(n, audio)`` changes or drops (None) received
        frame n, after the path; ``left_out(leg, n)``: leg's frame n is left out of the audio
        before the path (as callbridge leaves a late speaker out of a mix)."""
        path = WidebandPath(self.extra_delay)
        legs: list[int] = []
        arrivals: list[float] = []
        frames: list[Frame] = []
        for n in range(-WARMUP, FRAMES):
            peers = [p for p in self.plan.peers(listener) if not left_out(p, n)]
            sent = sum((spoken(self.plan, p, n) for p in peers), np.zeros(160))
            heard: npt.NDArray[np.float64] | None = path.frame(sent).astype(np.float64)
            if n < FIRST:
                continue
            if spoil is not None and heard is not None:
                heard = spoil(n, heard)
            if heard is None:
                continue
            legs.append(listener)
            arrivals.append(n * FRAME_S + LATENCY_S + delay(n))
            frames.append(np.clip(np.rint(heard), -32768, 32767).astype(np.int16))
        return legs, arrivals, frames

    def run(  # the same, but closing a frame earlier
        self, *streams: tuple[list[int], list[float], list[Frame]], batch: int = 0
    ) -> Tally:
        leg_ids = [leg for s in streams for leg in s[0]]
        legs = np.asarray(leg_ids)
        arrivals = np.asarray([a for s in streams for a in s[1]])
        frames = np.stack([f for s in streams for f in s[2]])
        self.checker.open_window(0.0, sorted(set(leg_ids)))
        order = np.argsort(arrivals, kind="stable")
        step = batch or len(order)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            self.checker.process(legs[chunk], arrivals[chunk], frames[chunk])
        # Due: what was sent up to two frames before the last. The last is still held back
        # (nothing follows it here), and a path delaying by more than half a frame delivers
        # the one before as the next received frame; a load test's window closes with frames
        # still streaming.
        return self.checker.close_window((FRAMES - 3) * FRAME_S + 0.1, allowance_s=0.1)


def at(
    frame: int, change: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]
) -> Spoil:
    return lambda n, audio: change(audio) if n == frame else audio


def test_the_path_puts_each_turn_inside_a_frame() -> None:
    """The premise: the path delays by a fraction of a frame, not by whole frames, so the
    frame holding a turn reads far outside the level tolerance."""
    assert turn_level() < 0.6


@pytest.mark.parametrize("extra_delay", [0, 35, 100], ids=["0.44", "mid-frame", "0.81"])
def test_a_clean_wideband_stream_passes_with_exact_counts_and_latency(extra_delay: int) -> None:
    """Whatever the delay: the frame holding a turn reads 0.44 of the level on its bin (this
    path), nothing (a turn mid-frame: all of it in the splatter) or 0.81 (mostly the old sign)."""
    scene = WideScene(extra_delay=extra_delay)
    tally = scene.run(scene.stream(0), scene.stream(1))
    assert tally.misrouted_frames == 0, tally.examples
    assert (tally.gap_frames, tally.speaker_frames_lost, tally.speaker_frames_duplicated) == (
        0,
        0,
        0,
    )
    # Each listener's last frame is held back until the next: here there is none.
    assert tally.frames_received == 2 * (FRAMES - FIRST - 1)
    assert tally.markers >= 2 * (FRAMES // 20 - 1)
    # Each frame is numbered as the sender frame most of it holds (at half a frame, with no
    # sign on its bin, the next): latency is exact, a frame more from half a frame's delay.
    late_by = FRAME_S if extra_delay else 0.0
    assert np.allclose(tally.latencies(), LATENCY_S + late_by, atol=1e-6)


def test_without_the_resampled_flag_every_turn_reads_as_misrouted() -> None:
    """Why the checker must know: the same audio judged as a G.711 path fails."""
    scene = WideScene(resampled=False)
    tally = scene.run(scene.stream(0))
    assert tally.misrouted_frames >= FRAMES // 20 - 1


def test_rooms_of_three_on_wideband_paths_pass() -> None:
    scene = WideScene(legs=9, room_size=3)
    tally = scene.run(*(scene.stream(leg) for leg in range(3)))
    assert (tally.misrouted_frames, tally.speaker_frames_lost, tally.gap_frames) == (0, 0, 0)
    assert tally.speaker_frames_duplicated == 0


def _own(scene: WideScene, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return audio + tone_frame(scene.plan.legs[0].bin, scene.plan.legs[0].amplitude)


def _intruder(scene: WideScene, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Leg 2 is in room 1, 30 bins from leg 1 (the listener's peer), at its own level.
    return audio + spoken(scene.plan, 2, 0)


def _noise(scene: WideScene, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return audio + np.random.default_rng(5).normal(0, 1500, 160)  # 12 dB below the peer


@pytest.mark.parametrize("where", ["turning", "steady"])
@pytest.mark.parametrize(
    ("spoil", "reasons"),
    [
        (_own, {"own"}),
        (_intruder, {"foreign-tone"}),
        # Too loud on a turning frame: more splatter than its bin lacks, foreign energy.
        (lambda scene, a: a * 10 ** (2 / 20), {"level", "foreign-energy"}),
        (lambda scene, a: a * 10 ** (-2 / 20), {"level"}),
        (_noise, {"foreign-energy", "foreign-tone"}),
    ],
    ids=["own-tone", "foreign-tone", "level+2dB", "level-2dB", "noise"],
)
def test_a_spoilt_wideband_frame_is_caught(
    spoil: Callable[[WideScene, npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    reasons: set[str],
    where: str,
) -> None:
    scene = WideScene()
    frame = scene.turn(0) + (0 if where == "turning" else 7)
    tally = scene.run(scene.stream(0, at(frame, lambda a: spoil(scene, a))))
    assert tally.misrouted_frames == 1, tally.examples
    assert set(tally.misrouted_by_reason) <= reasons
    assert round(tally.examples[0].arrival / FRAME_S) == frame


@pytest.mark.parametrize("where", ["turning", "steady"])
def test_a_wideband_frame_never_delivered_is_lost_by_count(where: str) -> None:
    scene = WideScene()
    frame = scene.turn(0) + (0 if where == "turning" else 7)
    tally = scene.run(scene.stream(0, at(frame, lambda a: None)))
    assert tally.misrouted_frames == 0, tally.examples
    assert tally.speaker_frames_lost == 1


def test_a_gap_just_before_a_turn_does_not_hide_the_turn() -> None:
    """A late speaker's frame left out (silence in its place) right before its turn: the turn
    is still found from the last frame that held it, and the gap is only a gap."""
    scene = WideScene()
    before = scene.turn(0) - 1
    tally = scene.run(scene.stream(0, at(before, lambda a: np.zeros(160))))
    assert tally.misrouted_frames == 0, tally.examples
    assert (tally.gap_frames, tally.speaker_frames_lost) == (1, 1)


@pytest.mark.parametrize("where", ["turning", "steady"])
def test_a_speaker_left_out_before_the_path_is_a_gap_not_a_misroute(where: str) -> None:
    """Callbridge leaves a late speaker's frame out of a mix, then resamples: the gap's edges
    fall inside two received frames, each holding part of the speaker. They are one frame
    lost, never misrouted; a room's other speaker is still judged in full."""
    scene = WideScene(legs=9, room_size=3)
    frame = scene.turn(0) + (0 if where == "turning" else 7)
    peer = scene.plan.peers(0)[0]
    tally = scene.run(scene.stream(0, left_out=lambda leg, n: leg == peer and n == frame))
    assert tally.misrouted_frames == 0, tally.examples
    assert tally.speaker_frames_lost == 1
    assert tally.gap_frames == 1


def test_a_duplicated_wideband_frame_is_caught() -> None:
    scene = WideScene()
    legs, arrivals, frames = scene.stream(0)
    steady = scene.turn(0) + 7
    legs.insert(steady, 0)
    arrivals.insert(steady, arrivals[steady])
    frames.insert(steady, frames[steady])
    tally = scene.run((legs, arrivals, frames))
    assert tally.speaker_frames_duplicated == 1
    assert tally.misrouted_frames == 0


def test_a_duplicated_turning_frame_is_caught() -> None:
    """Twice the same half-turned frame: no longer between two frames of opposite signs, so it
    reads at its bin's level, never as clean audio."""
    scene = WideScene()
    legs, arrivals, frames = scene.stream(0)
    turning = scene.turn(0)
    legs.insert(turning, 0)
    arrivals.insert(turning, arrivals[turning])
    frames.insert(turning, frames[turning])
    tally = scene.run((legs, arrivals, frames))
    assert tally.misrouted_frames + tally.speaker_frames_duplicated >= 1


@pytest.mark.parametrize("batch", [1, 5, 33])
def test_wideband_batches_of_any_size_give_the_same_tally(batch: int) -> None:
    def run(batch: int) -> Tally:
        scene = WideScene(legs=6, room_size=3)
        gap = scene.turn(0, 3)
        return scene.run(
            *(scene.stream(leg, at(gap, lambda a: None)) for leg in range(3)), batch=batch
        )

    whole, split = run(0), run(batch)
    assert split.misrouted_frames == whole.misrouted_frames == 0
    assert split.speaker_frames_lost == whole.speaker_frames_lost == 3 * 2
    assert split.markers == whole.markers
    assert split.frames_received == whole.frames_received
    assert np.array_equal(np.sort(split.latencies()), np.sort(whole.latencies()))


# --- judge --------------------------------------------------------------------------------------

ME = Voice(bin=9, level_dbfs=-18.0)
PEERS = (Voice(bin=14, level_dbfs=-18.0, marker_offset=3), Voice(bin=34, level_dbfs=-18.0))


def wide_received(spoil: Spoil | None = None, frames: int = 200) -> list[Frame]:
    path = WidebandPath()
    sources = [VoiceSource(v) for v in PEERS]
    out: list[Frame] = []
    for n in range(-WARMUP, frames):
        sent = sum((s.next_frame().astype(np.float64) for s in sources), np.zeros(160))
        heard: npt.NDArray[np.float64] | None = path.frame(sent).astype(np.float64)
        if n < FIRST or heard is None:
            continue
        heard = spoil(n, heard) if spoil is not None else heard
        if heard is not None:
            out.append(np.clip(np.rint(heard), -32768, 32767).astype(np.int16))
    return out


def test_judge_passes_a_wideband_mix_told_it_resamples() -> None:
    frames = wide_received(frames=195)  # ends between turns: the last frame has no next
    assert judge(frames, PEERS, ME, resampled=True).problems() == []
    told_not = judge(frames, PEERS, ME).problems()
    assert told_not and "misrouted" in told_not[0]


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda a: a + tone_frame(ME.bin, ME.amplitude), "1 misrouted"),
        (lambda a: a * 10 ** (2 / 20), "1 misrouted"),
        (lambda a: None, "2 speaker frames lost"),  # both voices' frame
    ],
    ids=["own-tone", "level-2dB", "dropped"],
)
def test_judge_flags_a_spoilt_turning_frame(
    spoil: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64] | None], expected: str
) -> None:
    turning = PEERS[0].marker_offset + 4 * PEERS[0].marker_period  # the first voice's turn
    frames = wide_received(lambda n, a: spoil(a) if n == turning else a, frames=195)
    problems = judge(frames, PEERS, ME, resampled=True).problems()
    assert [p for p in problems if p.startswith(expected)], problems


# --- the option: plan, command line, report ---------------------------------------------------


def test_telnyx_legs_negotiate_the_codec_and_make_their_rooms_wideband() -> None:
    mixed = make_plan(6, 2, "mixed", telnyx_codec="G722")
    assert [(leg.provider, leg.codec) for leg in mixed.legs[:2]] == [
        ("twilio", "PCMU"),
        ("telnyx", "G722"),
    ]
    assert mixed.wideband_rooms() == [True] * 3
    assert make_plan(6, 2, "twilio", telnyx_codec="G722").wideband_rooms() == [False] * 3
    assert make_plan(6, 2, "telnyx", telnyx_codec="PCMA").wideband_rooms() == [False] * 3
    with pytest.raises(ValueError, match="--telnyx-codec must be one of PCMU, PCMA, G722"):
        make_plan(6, 2, "telnyx", telnyx_codec="OPUS")  # type: ignore[arg-type]


def test_the_command_line_and_the_report_name_the_telnyx_codec() -> None:
    from rich.console import Console

    from benchmarks.loadtest import report
    from benchmarks.loadtest.cli import build_parser, config_from
    from benchmarks.loadtest.generator import RunResult, plan_of

    config = config_from(build_parser().parse_args(["--telnyx-codec", "G722", "--legs", "10"]))
    assert config.telnyx_codec == "G722"
    assert config_from(build_parser().parse_args([])).telnyx_codec == "PCMU"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--telnyx-codec", "OPUS"])
    plan = plan_of(config)
    assert plan.telnyx_codec == "G722"
    # Wideband pairs go through the mixer's tick, as rooms do: the rooms' latency budget.
    assert config.budget_s == 0.040
    assert (
        replace(config, provider="twilio").budget_s
        == replace(config, telnyx_codec="PCMA").budget_s
        == 0.020
    )
    result = RunResult(config, plan, {"mode": "in-process"}, {}, [], [], [], {})
    document = report.to_json(result)
    assert document["config"]["telnyx_codec"] == "G722"
    assert document["plan"]["codecs"] == {"G722": 5, "PCMU": 5}
    assert document["plan"]["wideband_rooms"] == 5
    console = Console(width=250, record=True)
    console.print(report.summary_table(result))
    assert "mixed (Telnyx G722), rooms of 2" in console.export_text()
