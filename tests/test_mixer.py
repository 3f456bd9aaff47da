"""Mixer tests: every result is checked against a plain per-leg reference or spelt-out samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from media.codecs import (
    L16_8K,
    L16_16K,
    PCMA_8K,
    PCMU_8K,
    AudioFormat,
    Encoding,
    Resampler,
    decode,
    encode,
)
from media.dtmf import dtmf_tone
from media.errors import MediaError
from media.mixer import (
    DuplicateLeg,
    InvalidGain,
    Mixer,
    NotInRoom,
    UnknownLeg,
    UnknownRoom,
)

L16_8K_LE = AudioFormat(Encoding.L16, 8000, "little")
FORMATS_8K = (PCMU_8K, PCMA_8K, L16_8K, L16_8K_LE)
N = 160  # samples per 20 ms tick at 8 kHz

Samples = NDArray[np.int16]
Matrix = NDArray[np.float64]


# -- helpers ---------------------------------------------------------------------------------


def tone(level: int, n: int = N) -> Samples:
    return np.full(n, level, dtype=np.int16)


def noise(rng: np.random.Generator, level: int = 12000, n: int = N) -> Samples:
    return rng.integers(-level, level + 1, n).astype(np.int16)


def frames_of(mixer: Mixer) -> dict[str, bytes]:
    frames = mixer.tick().frames
    out = dict(frames)
    assert len(out) == len(frames), "a leg got two frames in one tick"
    return out


def heard(mixer: Mixer, fmt: AudioFormat = L16_8K) -> dict[str, Samples]:
    return {leg: decode(fmt, data) for leg, data in frames_of(mixer).items()}


def reference(
    spoken: dict[str, Samples], rooms: dict[str, list[str]], matrices: dict[str, Matrix]
) -> dict[str, Samples]:
    """What each leg should hear, one listener and one speaker at a time, in float64."""
    out: dict[str, Samples] = {}
    for room_id, legs in rooms.items():
        matrix = matrices[room_id]
        for i, listener in enumerate(legs):
            total = np.zeros(N)
            for j, speaker in enumerate(legs):
                total = total + matrix[i, j] * spoken[speaker].astype(np.float64)
            out[listener] = np.clip(np.rint(total), -32768, 32767).astype(np.int16)
    return out


def mix_minus(k: int) -> Matrix:
    return np.ones((k, k)) - np.eye(k)


def room_of_pcm(*legs: str, mixer: Mixer | None = None, room: str = "r") -> Mixer:
    """A mixer with the given L16 8 kHz legs in one room (L16 so levels are exact)."""
    mixer = mixer or Mixer()
    for leg in legs:
        mixer.add_leg(leg, L16_8K)
        mixer.join(leg, room)
    return mixer


def say(mixer: Mixer, **levels: int) -> None:
    for leg, level in levels.items():
        assert mixer.put_frame(leg, encode(L16_8K, tone(level))) == []


class Scene:
    """Random rooms with random formats, and the state the reference needs, kept by the test."""

    def __init__(self, rng: np.random.Generator, sizes: list[int], **mixer_args: bool) -> None:
        self.rng = rng
        self.mixer = Mixer(**mixer_args)
        self.fmt: dict[str, AudioFormat] = {}
        self.rooms: dict[str, list[str]] = {}
        self.matrices: dict[str, Matrix] = {}
        self.sent: set[str] = set()  # the legs that sent a frame since the last tick
        for r, k in enumerate(sizes):
            room = f"room-{r}"
            self.rooms[room] = [f"{room}-leg-{i}" for i in range(k)]
            self.matrices[room] = mix_minus(k)
            for leg in self.rooms[room]:
                self.fmt[leg] = FORMATS_8K[int(rng.integers(len(FORMATS_8K)))]
                self.mixer.add_leg(leg, self.fmt[leg])
                self.mixer.join(leg, room)

    def randomize_gains(self, choices: tuple[float, ...]) -> None:
        for room, legs in self.rooms.items():
            k = len(legs)
            matrix = self.rng.choice(choices, size=(k, k))
            matrix[np.eye(k, dtype=bool) & (self.rng.random((k, k)) < 0.8)] = 0.0
            for i, listener in enumerate(legs):
                for j, speaker in enumerate(legs):
                    self.mixer.set_gain(room, listener, speaker, float(matrix[i, j]))
            self.matrices[room] = matrix

    def speak(self, missing: float = 0.2) -> dict[str, Samples]:
        """Put one random frame per leg (some legs send none) and return what each said."""
        spoken: dict[str, Samples] = {}
        self.sent = set()
        for leg, fmt in self.fmt.items():
            if self.rng.random() < missing:
                spoken[leg] = tone(0)  # nothing sent: the mixer must count silence
                continue
            payload = encode(fmt, noise(self.rng))
            assert self.mixer.put_frame(leg, payload) == []
            spoken[leg] = decode(fmt, payload)  # what the codec let through
            self.sent.add(leg)
        return spoken

    def expected(self, spoken: dict[str, Samples]) -> dict[str, bytes]:
        """What each listener is sent: the reference mix, and nothing at all for a listener in a
        room of two or more who hears somebody but none of whom sent (media.mix_audible)."""
        want = reference(spoken, self.rooms, self.matrices)
        unheard = {
            listener
            for room, legs in self.rooms.items()
            if len(legs) > 1
            for i, listener in enumerate(legs)
            if any(self.matrices[room][i])
            and not any(
                self.matrices[room][i, j] and speaker in self.sent for j, speaker in enumerate(legs)
            )
        }
        return {
            leg: encode(self.fmt[leg], samples)
            for leg, samples in want.items()
            if leg not in unheard
        }


# -- mixing against the reference -------------------------------------------------------------


def test_mix_minus_matches_reference_for_every_room_size_and_codec() -> None:
    # Two rooms of every size 2..12, all mixed in the same ticks, formats drawn per leg;
    # passthrough is off so that two-party rooms go through the arithmetic too.
    rng = np.random.default_rng(1)
    scene = Scene(rng, [k for k in range(2, 13) for _ in range(2)], passthrough=False)
    for _ in range(4):
        spoken = scene.speak()
        assert frames_of(scene.mixer) == scene.expected(spoken)


def test_random_hear_matrices_match_reference_exactly() -> None:
    # Gains that are sums of powers of two make float32 products exact, so the mixer must agree
    # with the float64 reference byte for byte, zeros, sidetone and loud gains included.
    rng = np.random.default_rng(2)
    scene = Scene(rng, [1, 2, 2, 3, 5, 7, 12, 4, 2, 9])
    for _ in range(3):
        scene.randomize_gains((0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0))
        spoken = scene.speak()
        assert frames_of(scene.mixer) == scene.expected(spoken)


def test_fractional_gains_are_within_one_step_of_reference() -> None:
    # Arbitrary gains are rounded in float32: allow one int16 step against float64, and check
    # the encoded frame is exactly the tapped int16 frame encoded.
    rng = np.random.default_rng(3)
    scene = Scene(rng, [2, 3, 6, 11])
    scene.randomize_gains(tuple(rng.uniform(0.0, 1.7, 12)))
    for leg in scene.fmt:
        scene.mixer.set_tap(leg, True)
    spoken = scene.speak()
    result = scene.mixer.tick()
    want = reference(spoken, scene.rooms, scene.matrices)
    frames = dict(result.frames)
    assert frames.keys() == scene.expected(spoken).keys()
    assert len(result.taps) == len(scene.fmt)  # a tap hears every tick, sent or not
    for leg, heard_samples, spoken_samples in result.taps:
        assert np.array_equal(spoken_samples, spoken[leg])
        diff = np.abs(heard_samples.astype(np.int32) - want[leg].astype(np.int32))
        assert diff.max() <= 1, leg
        if leg in frames:
            assert frames[leg] == encode(scene.fmt[leg], heard_samples)


def test_many_ticks_with_gain_changes_between_them() -> None:
    # The layout is rebuilt after each change; every tick must use the matrix in force at it.
    rng = np.random.default_rng(4)
    scene = Scene(rng, [3, 4, 2])
    for tick in range(6):
        if tick % 2:
            scene.randomize_gains((0.0, 0.5, 1.0))
        spoken = scene.speak()
        assert frames_of(scene.mixer) == scene.expected(spoken)


def test_16khz_legs_are_resampled_at_the_edge() -> None:
    # A 16 kHz L16 leg speaks a 440 Hz tone to an 8 kHz L16 leg and a PCMU leg, and hears the
    # 8 kHz leg's 700 Hz tone at 16 kHz. Resampling is lossy, so check against a fresh Resampler
    # fed the whole stream (one step of rounding) and roughly against the pure tones.
    mixer = Mixer()
    for leg, fmt in (("wide", L16_16K), ("narrow", L16_8K), ("phone", PCMU_8K)):
        mixer.add_leg(leg, fmt)
        mixer.join(leg, "r")
    mixer.mute("phone")
    ticks = 25
    t16 = np.arange(ticks * 2 * N) / 16000
    t8 = np.arange(ticks * N) / 8000
    wide = np.rint(8000 * np.sin(2 * np.pi * 440 * t16)).astype(np.int16)
    narrow = np.rint(8000 * np.sin(2 * np.pi * 700 * t8)).astype(np.int16)
    got: dict[str, list[Samples]] = {"wide": [], "narrow": [], "phone": []}
    for i in range(ticks):
        mixer.put_frame("wide", encode(L16_16K, wide[i * 2 * N : (i + 1) * 2 * N]))
        mixer.put_frame("narrow", encode(L16_8K, narrow[i * N : (i + 1) * N]))
        frames = frames_of(mixer)
        assert len(frames["wide"]) == L16_16K.frame_bytes()
        got["wide"].append(decode(L16_16K, frames["wide"]))
        got["narrow"].append(decode(L16_8K, frames["narrow"]))
        got["phone"].append(decode(PCMU_8K, frames["phone"]))
    down = Resampler(16000, 8000).process(wide)
    up = Resampler(8000, 16000).process(narrow)
    heard_narrow = np.concatenate(got["narrow"])
    heard_wide = np.concatenate(got["wide"])
    assert np.abs(heard_narrow.astype(np.int32) - down).max() <= 1
    assert np.abs(heard_wide.astype(np.int32) - up).max() <= 1
    # Roughly the tones themselves: right level and right pitch after the filters settle.
    for signal, rate, hz in ((heard_narrow, 8000, 440), (heard_wide, 16000, 700)):
        settled = signal[len(signal) // 5 :].astype(np.float64)
        assert 0.9 < np.sqrt(np.mean(settled**2)) / (8000 / np.sqrt(2)) < 1.1
        peak = np.argmax(np.abs(np.fft.rfft(settled))) * rate / len(settled)
        assert abs(peak - hz) < 15
    # The PCMU leg hears both others, the wide one downsampled (it is muted, so nobody hears it).
    phone = np.concatenate(got["phone"]).astype(np.float64)
    assert np.corrcoef(phone, down.astype(np.float64) + narrow)[0, 1] > 0.99


# -- saturation --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [32767, -32768])
def test_loud_rooms_clip_instead_of_wrapping(level: int) -> None:
    # Eleven full-scale speakers sum to about 11x the int16 range; each listener must hear the
    # limit itself, never a wrapped-around value of the other sign.
    legs = [f"leg-{i}" for i in range(12)]
    mixer = room_of_pcm(*legs)
    say(mixer, **dict.fromkeys(legs, level))
    for samples in heard(mixer).values():
        assert np.array_equal(samples, tone(level))


def test_loud_gains_and_overlays_clip_too() -> None:
    mixer = room_of_pcm("a", "b", "c")
    mixer.set_gain("r", "a", "b", 1000.0)  # would overflow int32 arithmetic if not clipped
    mixer.set_overlay("c", lambda n: tone(30000, n))
    say(mixer, a=-20000, b=30000, c=0)
    out = heard(mixer)
    assert np.array_equal(out["a"], tone(32767))
    assert np.array_equal(out["b"], tone(-20000))
    assert np.array_equal(out["c"], tone(32767))  # 30000 + 30000 - 20000


def test_g711_legs_clip_to_the_codes_of_the_limits() -> None:
    mixer = Mixer(passthrough=False)
    for leg, fmt in (("u1", PCMU_8K), ("u2", PCMU_8K), ("a1", PCMA_8K), ("a2", PCMA_8K)):
        mixer.add_leg(leg, fmt)
        mixer.join(leg, "r")
    for leg in ("u1", "u2"):
        mixer.put_frame(leg, encode(PCMU_8K, tone(-32768)))
    for leg in ("a1", "a2"):
        mixer.put_frame(leg, encode(PCMA_8K, tone(-32768)))
    frames = frames_of(mixer)
    assert frames["u1"] == encode(PCMU_8K, tone(-32768))
    assert frames["a2"] == encode(PCMA_8K, tone(-32768))


# -- passthrough ---------------------------------------------------------------------------------


def test_passthrough_forwards_bytes_untouched_to_the_peer_only() -> None:
    mixer = Mixer()
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "call")
    assert mixer.is_passthrough("call")
    rng = np.random.default_rng(5)
    for size in (160, 37, 1, 480):  # any chunk size is forwarded as it came
        payload = rng.bytes(size)
        assert mixer.put_frame("a", payload) == [("b", payload)]
        assert mixer.put_frame("b", payload) == [("a", payload)]
    assert mixer.tick().frames == []  # the room is skipped by the tick


def test_passthrough_works_for_any_shared_format() -> None:
    mixer = Mixer()
    for leg in ("a", "b"):
        mixer.add_leg(leg, L16_16K)
        mixer.join(leg, "call")
    payload = bytes(range(256)) * 2
    assert mixer.put_frame("a", payload) == [("b", payload)]


def _third_leg(mixer: Mixer, on: bool) -> None:
    if on:
        mixer.add_leg("c", PCMU_8K)
        mixer.join("c", "call")
    else:
        mixer.remove_leg("c")


def _other_codec(mixer: Mixer, on: bool) -> None:
    mixer.remove_leg("b")
    mixer.add_leg("b", PCMA_8K if on else PCMU_8K)
    mixer.join("b", "call")


def _mute_for_with_detection(mixer: Mixer, on: bool) -> None:
    mixer.set_detect("a", True)
    mixer.mute_for("a", frozenset({"b"} if on else ()))


TOGGLES = {
    "tap": lambda m, on: m.set_tap("a", on),
    "overlay": lambda m, on: m.set_overlay("a", (lambda n: tone(100, n)) if on else None),
    "gain": lambda m, on: m.set_gain("call", "b", "a", 0.5 if on else 1.0),
    "sidetone": lambda m, on: m.set_gain("call", "a", "a", 0.25 if on else 0.0),
    "mute": lambda m, on: m.mute("a", on),
    "mute for": lambda m, on: m.mute_for("a", frozenset({"b"} if on else ())),
    "mute for, with detection": lambda m, on: _mute_for_with_detection(m, on),
    "deaf": lambda m, on: m.deafen("b", on),
    "third leg": _third_leg,
    "other codec": _other_codec,
}


@pytest.mark.parametrize("name", list(TOGGLES))
def test_passthrough_turns_off_and_back_on(name: str) -> None:
    toggle = TOGGLES[name]
    mixer = Mixer()
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "call")
    frame = encode(PCMU_8K, tone(1000))
    toggle(mixer, True)
    assert not mixer.is_passthrough("call")
    assert mixer.put_frame("a", frame) == []  # queued for the tick instead
    assert "b" in frames_of(mixer)
    toggle(mixer, False)
    assert mixer.is_passthrough("call")
    assert mixer.put_frame("a", frame) == [("b", frame)]
    assert "b" not in frames_of(mixer)


def test_passthrough_can_be_disabled_for_the_whole_mixer() -> None:
    mixer = Mixer(passthrough=False)
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "call")
    assert not mixer.is_passthrough("call")
    assert mixer.put_frame("a", encode(PCMU_8K, tone(500))) == []


def test_frames_queued_before_passthrough_are_forwarded_once_and_not_replayed_after_it() -> None:
    # a and b queue a frame while c is in the room; c leaves (passthrough): the next tick sends
    # each queued frame to the peer, as it was, and c its silence. When c comes back, nothing
    # of those frames is heard again.
    mixer = room_of_pcm("a", "b", "c")
    say(mixer, a=1000, b=2000)
    mixer.leave("c")
    assert mixer.is_passthrough("r")
    frames = mixer.tick().frames
    assert sorted(frames) == sorted(
        [("a", encode(L16_8K, tone(2000))), ("b", encode(L16_8K, tone(1000))), ("c", bytes(2 * N))]
    )
    mixer.join("c", "r")
    assert all(not samples.any() for samples in heard(mixer).values())


# -- frames, silence, queues ---------------------------------------------------------------------


def test_a_missing_frame_is_silence_in_the_mix_and_nothing_for_who_hears_only_it() -> None:
    mixer = room_of_pcm("a", "b", "c")
    say(mixer, a=1234)
    out = heard(mixer)
    assert np.array_equal(out["b"], tone(1234))
    assert np.array_equal(out["c"], tone(1234))
    assert "a" not in out  # b and c are late, not silent: a is sent nothing in their place
    assert mixer.counters.frames_missing == 2
    # Nothing sent at all: nobody is sent a frame.
    assert heard(mixer) == {}
    assert mixer.counters.frames_missing == 5


def test_a_listener_who_hears_nobody_still_gets_silence_and_an_overlay_is_always_sent() -> None:
    mixer = room_of_pcm("a", "b", "c")
    for speaker in ("b", "c"):
        mixer.set_gain("r", "a", speaker, 0.0)  # a hears nobody: nothing late to wait for
    mixer.set_overlay("b", lambda n: tone(700, n))
    out = heard(mixer)  # nobody said anything
    assert out.keys() == {"a", "b"}
    assert not out["a"].any()
    assert np.array_equal(out["b"], tone(700))


def test_partial_frames_wait_for_the_rest() -> None:
    mixer = room_of_pcm("a", "b", "c")
    payload = encode(L16_8K, np.arange(N, dtype=np.int16))
    mixer.put_frame("a", payload[:101])  # odd length: half a sample
    assert "b" not in heard(mixer)
    mixer.put_frame("a", payload[101:])
    assert np.array_equal(heard(mixer)["b"], np.arange(N, dtype=np.int16))


def test_bunched_frames_play_one_per_tick_and_overflow_drops_the_oldest() -> None:
    mixer = room_of_pcm("a", "b", "c", mixer=Mixer(queue_frames=4))
    mixer.put_frame("a", b"".join(encode(L16_8K, tone(i)) for i in range(1, 11)))
    assert mixer.counters.bytes_dropped == 6 * L16_8K.frame_bytes()
    levels = [int(heard(mixer).get("b", tone(0))[0]) for _ in range(5)]
    assert levels == [7, 8, 9, 10, 0]


def test_overflow_drops_whole_frames_so_samples_stay_aligned() -> None:
    # 1,500 bytes into a 1,280-byte queue: 220 bytes too many. Dropping just 220 would shift
    # every later frame (and split a sample); dropping the oldest whole frame keeps frames 2-4.
    mixer = room_of_pcm("a", "b", "c", mixer=Mixer(queue_frames=4))
    stream = b"".join(encode(L16_8K, tone(i)) for i in range(1, 6))
    mixer.put_frame("a", stream[:1121])
    mixer.put_frame("a", stream[1121:1500])
    assert mixer.counters.bytes_dropped == L16_8K.frame_bytes()
    assert [int(heard(mixer).get("b", tone(0))[0]) for _ in range(4)] == [2, 3, 4, 0]


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 700), min_size=1, max_size=30),
    ticks=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_any_chunking_plays_the_stream_in_order(chunks: list[int], ticks: list[bool]) -> None:
    # Providers promise no frame size and bunch frames: however the bytes are cut and whenever
    # the ticks fall, the peer hears the whole frames in order, none repeated, and none lost
    # but those the mixer sheds (counted) when a burst left them standing too long (latency).
    mixer = room_of_pcm("a", "b", "c", mixer=Mixer(queue_frames=128))
    rng = np.random.default_rng(len(chunks))
    stream = rng.integers(1, 30000, sum(chunks) // 2 + 1).astype(np.int16)  # never silent
    data = encode(L16_8K, stream)[: sum(chunks)]
    heard_frames: list[bytes] = []
    at = 0
    for size, tick in zip(chunks, ticks, strict=False):
        mixer.put_frame("a", data[at : at + size])
        at += size
        if tick:
            heard_frames.append(frames_of(mixer).get("b", b""))
    for _ in range(len(data) // L16_8K.frame_bytes() + 1):
        heard_frames.append(frames_of(mixer).get("b", b""))
    size = L16_8K.frame_bytes()
    sent = [data[i : i + size] for i in range(0, len(data) - size + 1, size)]
    assert bytes(size) not in heard_frames, "a late frame was replaced with silence"
    played = [frame for frame in heard_frames if frame]
    at_sent = [sent.index(frame) for frame in played]  # every frame is one that was sent
    assert at_sent == sorted(set(at_sent)), "in order, none repeated"
    assert len(sent) - len(played) == mixer.counters.frames_shed


# -- any sequence of changes -------------------------------------------------------------------

LEGS = [f"leg-{i}" for i in range(5)]
ROOMS = ["x", "y", "z"]
OVERLAY_LEVEL = 50

leg_ids = st.sampled_from(LEGS)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), leg_ids, st.sampled_from(range(len(FORMATS_8K)))),
        st.tuples(st.just("remove"), leg_ids),
        st.tuples(st.just("join"), leg_ids, st.sampled_from(ROOMS)),
        st.tuples(st.just("join"), leg_ids, st.sampled_from(ROOMS)),
        st.tuples(st.just("leave"), leg_ids),
        st.tuples(st.sampled_from(["mute", "deaf", "tap", "overlay"]), leg_ids, st.booleans()),
        st.tuples(st.just("gain"), leg_ids, leg_ids, st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        st.tuples(st.just("reset"), st.sampled_from(ROOMS)),
        st.tuples(st.just("tick")),
    ),
    max_size=40,
)


class Model:
    """The test's own plain record of what the mixer was told, and what it implies."""

    def __init__(self) -> None:
        self.fmt: dict[str, AudioFormat] = {}
        self.room: dict[str, str | None] = {}
        self.rooms: dict[str, list[str]] = {}
        self.gains: dict[str, dict[tuple[str, str], float]] = {}
        self.muted: set[str] = set()
        self.deaf: set[str] = set()
        self.tapped: set[str] = set()
        self.overlaid: set[str] = set()

    def leave(self, leg: str) -> None:
        room = self.room[leg]
        if room is None:
            return
        self.rooms[room].remove(leg)
        self.gains[room] = {k: g for k, g in self.gains[room].items() if leg not in k}
        if not self.rooms[room]:
            del self.rooms[room], self.gains[room]
        self.room[leg] = None

    def matrix(self, room: str) -> Matrix:
        legs = self.rooms[room]
        matrix = mix_minus(len(legs))
        for (listener, speaker), gain in self.gains[room].items():
            matrix[legs.index(listener), legs.index(speaker)] = gain
        for i, leg in enumerate(legs):
            if leg in self.deaf:
                matrix[i, :] = 0
            if leg in self.muted:
                matrix[:, i] = 0
        return matrix

    def peer(self, leg: str) -> str | None:
        room = self.room[leg]
        if room is None or len(self.rooms[room]) != 2:
            return None
        a, b = self.rooms[room]
        plain = np.array_equal(self.matrix(room), mix_minus(2))
        extras = {a, b} & (self.tapped | self.overlaid)
        if plain and not extras and self.fmt[a] == self.fmt[b]:
            return b if leg == a else a
        return None


def apply(mixer: Mixer, model: Model, op: tuple[object, ...]) -> None:
    name, *args = op
    leg = str(args[0]) if args else ""
    known = leg in model.fmt
    if name == "add" and not known:
        fmt = FORMATS_8K[int(str(args[1]))]
        mixer.add_leg(leg, fmt)
        model.fmt[leg], model.room[leg] = fmt, None
    elif name == "remove" and known:
        mixer.remove_leg(leg)
        model.leave(leg)
        for flagged in (model.muted, model.deaf, model.tapped, model.overlaid):
            flagged.discard(leg)
        del model.fmt[leg], model.room[leg]
    elif name == "join" and known and model.room[leg] != args[1]:
        target = str(args[1])
        mixer.join(leg, target)
        model.leave(leg)
        model.room[leg] = target
        model.rooms.setdefault(target, []).append(leg)
        model.gains.setdefault(target, {})
    elif name == "leave" and known:
        mixer.leave(leg)
        model.leave(leg)
    elif name in ("mute", "deaf", "tap", "overlay") and known:
        on = bool(args[1])
        flags = {"mute": model.muted, "deaf": model.deaf, "tap": model.tapped}
        if name == "mute":
            mixer.mute(leg, on)
        elif name == "deaf":
            mixer.deafen(leg, on)
        elif name == "tap":
            mixer.set_tap(leg, on)
        else:
            mixer.set_overlay(leg, (lambda n: tone(OVERLAY_LEVEL, n)) if on else None)
        chosen = flags.get(name, model.overlaid)
        if on:
            chosen.add(leg)
        else:
            chosen.discard(leg)
    elif name == "gain" and known and str(args[1]) in model.fmt:
        listener, speaker, gain = leg, str(args[1]), float(str(args[2]))
        shared = model.room[listener]
        if shared is not None and model.room[speaker] == shared:
            mixer.set_gain(shared, listener, speaker, gain)
            default = 0.0 if listener == speaker else 1.0
            model.gains[shared].pop((listener, speaker), None)
            if gain != default:
                model.gains[shared][(listener, speaker)] = gain
    elif name == "reset" and leg in model.rooms:
        mixer.reset_gains(leg)
        model.gains[leg] = {}
        for member in model.rooms[leg]:
            model.muted.discard(member)
            model.deaf.discard(member)


def check_tick(mixer: Mixer, model: Model, rng: np.random.Generator) -> None:
    for room, legs in model.rooms.items():
        assert mixer.members(room) == tuple(legs)
        assert mixer.is_passthrough(room) == (model.peer(legs[0]) is not None)
    spoken: dict[str, Samples] = {}
    for leg, fmt in model.fmt.items():
        payload = encode(fmt, noise(rng))
        peer = model.peer(leg)
        assert mixer.put_frame(leg, payload) == ([] if peer is None else [(peer, payload)])
        spoken[leg] = decode(fmt, payload)
    expected: dict[str, bytes] = {}
    for leg, fmt in model.fmt.items():
        if model.peer(leg) is not None:
            continue
        total = np.full(N, OVERLAY_LEVEL if leg in model.overlaid else 0, dtype=np.float64)
        in_room = model.room[leg]
        if in_room is not None:
            legs = model.rooms[in_room]
            row = model.matrix(in_room)[legs.index(leg)]
            for gain, speaker in zip(row, legs, strict=True):
                total = total + gain * spoken[speaker]
        expected[leg] = encode(fmt, np.clip(np.rint(total), -32768, 32767).astype(np.int16))
    assert frames_of(mixer) == expected


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_any_sequence_of_changes_mixes_like_the_model(ops: list[tuple[object, ...]]) -> None:
    # The mixer files rooms incrementally; whatever the order of changes, each tick must hear
    # exactly what the test's plain model of the same changes says, passthrough included.
    mixer = Mixer(capacity=2)
    model = Model()
    rng = np.random.default_rng(len(ops))
    for op in ops:
        apply(mixer, model, op)
        if op[0] == "tick":
            check_tick(mixer, model, rng)
    check_tick(mixer, model, rng)


# -- membership ----------------------------------------------------------------------------------


def test_moving_a_leg_between_rooms() -> None:
    mixer = room_of_pcm("a", "b", "c")
    room_of_pcm("d", mixer=mixer, room="s")
    mixer.join("c", "s")  # moves c out of r
    assert mixer.room_of("c") == "s"
    assert mixer.members("r") == ("a", "b")
    assert mixer.members("s") == ("d", "c")
    assert mixer.is_passthrough("r")
    assert mixer.is_passthrough("s")
    mixer.set_tap("a", True)  # force the rooms through the tick to see who hears whom
    mixer.set_tap("c", True)
    say(mixer, a=1, b=10, c=100, d=1000)
    out = heard(mixer)
    assert int(out["a"][0]) == 10
    assert int(out["b"][0]) == 1
    assert int(out["c"][0]) == 1000
    assert int(out["d"][0]) == 100


def test_leave_keeps_the_leg_in_no_room_hearing_silence() -> None:
    mixer = room_of_pcm("a", "b", "c")
    mixer.leave("c")
    assert mixer.room_of("c") is None
    assert mixer.members("r") == ("a", "b")
    mixer.set_tap("a", True)
    say(mixer, a=5, b=7, c=9)
    out = heard(mixer)
    assert not out["c"].any()  # in no room: hears silence, still gets frames
    assert int(out["a"][0]) == 7
    assert int(out["b"][0]) == 5


def test_removed_legs_are_forgotten_and_their_slot_starts_clean() -> None:
    mixer = room_of_pcm("a", "b", "c")
    say(mixer, a=3, b=4, c=5)
    mixer.remove_leg("c")
    assert mixer.members("r") == ("a", "b")
    with pytest.raises(UnknownLeg):
        mixer.put_frame("c", b"\0" * 320)
    mixer.add_leg("e", L16_8K)  # takes c's slot; c's queued frame must not leak into it
    mixer.join("e", "r")
    out = heard(mixer)
    assert int(out["e"][0]) == 3 + 4
    assert int(out["a"][0]) == 4


def test_removing_a_tapped_overlaid_leg_forgets_its_tap_and_overlay() -> None:
    mixer = room_of_pcm("a", "b", "c", "d")
    mixer.set_tap("d", True)
    mixer.set_overlay("d", lambda n: tone(1, n))
    mixer.remove_leg("d")
    say(mixer, a=10, b=0, c=0)
    result = mixer.tick()
    assert result.taps == []
    assert sorted(leg for leg, _ in result.frames) == ["a", "b", "c"]
    assert decode(L16_8K, dict(result.frames)["b"])[0] == 10


def test_resampled_legs_restart_their_filters_after_passthrough() -> None:
    # Filter history from before a passthrough spell is stale audio: after it, silence in must
    # give silence out from the first tick, not the tail of what was said before.
    mixer = Mixer()
    for leg in ("a", "b"):
        mixer.add_leg(leg, L16_16K)
        mixer.join(leg, "call")
    mixer.set_tap("a", True)
    for leg in ("a", "b"):
        mixer.put_frame(leg, encode(L16_16K, tone(20000, 2 * N)))
    mixer.tick()
    mixer.set_tap("a", False)
    assert mixer.is_passthrough("call")
    mixer.tick()  # the layout change is picked up
    mixer.set_tap("a", True)
    for leg in ("a", "b"):
        mixer.put_frame(leg, encode(L16_16K, tone(0, 2 * N)))
    assert all(frame == bytes(4 * N) for _, frame in mixer.tick().frames)


def test_empty_rooms_disappear() -> None:
    mixer = room_of_pcm("a")
    mixer.remove_leg("a")
    assert mixer.members("r") == ()
    assert not mixer.is_passthrough("r")
    with pytest.raises(UnknownRoom):
        mixer.reset_gains("r")


def test_capacity_grows_and_keeps_queued_audio() -> None:
    mixer = Mixer(capacity=2)
    room_of_pcm("a", "b", "c", mixer=mixer)
    say(mixer, a=11, b=22)
    room_of_pcm(*(f"x{i}" for i in range(9)), mixer=mixer, room="big")  # grows twice
    room_of_pcm("w", mixer=mixer, room="wide")
    mixer.add_leg("hd", L16_16K)  # a wider frame widens every queue
    assert mixer.capacity >= 13
    out = heard(mixer)
    assert int(out["c"][0]) == 33


# -- the hear-matrix -----------------------------------------------------------------------------


def test_mute_nobody_hears_the_leg() -> None:
    mixer = room_of_pcm("a", "b", "c")
    mixer.mute("a")
    say(mixer, a=100, b=10, c=1)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in "abc"] == [11, 1, 10]
    assert mixer.gain("r", "b", "a") == 0.0


def test_deaf_leg_hears_nothing_but_is_heard() -> None:
    mixer = room_of_pcm("a", "b", "c")
    mixer.deafen("a")
    say(mixer, a=100, b=10, c=1)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in "abc"] == [0, 101, 110]


def test_whisper_only_the_agent_hears_the_coach() -> None:
    mixer = room_of_pcm("customer", "agent", "coach")
    mixer.set_gain("r", "customer", "coach", 0.0)
    say(mixer, customer=100, agent=10, coach=1)
    out = heard(mixer)
    assert int(out["customer"][0]) == 10
    assert int(out["agent"][0]) == 101
    assert int(out["coach"][0]) == 110


def test_monitor_hears_everyone_and_barge_makes_it_heard() -> None:
    mixer = room_of_pcm("customer", "agent", "supervisor")
    mixer.mute("supervisor")  # monitor
    say(mixer, customer=100, agent=10, supervisor=1)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in ("customer", "agent", "supervisor")] == [10, 100, 110]
    mixer.mute("supervisor", False)  # barge, from the next tick
    say(mixer, customer=100, agent=10, supervisor=1)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in ("customer", "agent", "supervisor")] == [11, 101, 110]


def test_gain_changes_take_effect_on_the_next_tick() -> None:
    mixer = room_of_pcm("a", "b", "c")
    say(mixer, a=1000, b=0, c=0)
    mixer.set_gain("r", "b", "a", 0.5)  # after the frame is queued, before the tick
    assert int(heard(mixer)["b"][0]) == 500
    mixer.set_gain("r", "b", "a", 2.0)
    say(mixer, a=1000, b=0, c=0)
    assert int(heard(mixer)["b"][0]) == 2000


def test_mute_follows_the_leg_and_pair_gains_stay_with_the_room() -> None:
    mixer = room_of_pcm("a", "b", "c")
    room_of_pcm("d", "e", mixer=mixer, room="s")
    mixer.mute("a")
    mixer.set_gain("r", "b", "c", 0.0)
    mixer.join("a", "s")
    mixer.join("a", "r")  # back again: the pair gain b<-c is still there, a still muted
    assert mixer.gain("r", "b", "c") == 0.0
    assert mixer.gain("r", "c", "a") == 0.0
    mixer.join("c", "s")
    mixer.join("c", "r")  # c left r: its pair gains went with it
    assert mixer.gain("r", "b", "c") == 1.0


def test_reset_gains_restores_plain_mix_minus() -> None:
    mixer = room_of_pcm("a", "b")
    mixer.mute("a")
    mixer.deafen("b")
    mixer.set_gain("r", "a", "b", 0.5)
    mixer.reset_gains("r")
    assert mixer.is_passthrough("r")
    assert mixer.gain("r", "a", "b") == 1.0
    assert mixer.gain("r", "b", "a") == 1.0


def test_mute_for_silences_a_leg_toward_chosen_listeners_and_follows_it() -> None:
    mixer = room_of_pcm("a", "b", "c")
    room_of_pcm("d", mixer=mixer, room="s")
    mixer.mute_for("a", frozenset({"b", "d"}))  # d is elsewhere: it applies once they meet
    say(mixer, a=100, b=10, c=1)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in "abc"] == [11, 1, 110]
    assert (mixer.gain("r", "b", "a"), mixer.gain("r", "c", "a")) == (0.0, 1.0)
    mixer.join("a", "s")
    assert mixer.gain("s", "d", "a") == 0.0
    mixer.mute_for("a", frozenset())
    assert mixer.gain("s", "d", "a") == 1.0
    assert mixer.is_passthrough("s")


def test_mute_for_naming_only_legs_elsewhere_leaves_the_room_as_it_was() -> None:
    mixer = room_of_pcm("a", "b")
    room_of_pcm("d", mixer=mixer, room="s")
    version = mixer._rooms.version
    mixer.mute_for("a", frozenset({"d"}))
    assert mixer.is_passthrough("r") and mixer._rooms.version == version, "nothing to refile"
    mixer.join("d", "r")  # they meet: d does not hear a from this tick
    assert not mixer.is_passthrough("r") and mixer.gain("r", "d", "a") == 0.0
    mixer.leave("d")
    assert mixer.is_passthrough("r")


# -- in-band DTMF --------------------------------------------------------------------------------


def dtmf_frames(digits: str, fmt: AudioFormat = PCMU_8K) -> list[bytes]:
    """20 ms frames of 60 ms of silence, then each digit for 100 ms followed by 100 ms of
    silence."""
    parts = [tone(0, 480)]
    for digit in digits:
        parts += [dtmf_tone(digit, 100), tone(0, 800)]
    samples = np.concatenate(parts)
    samples = np.concatenate([samples, tone(0, -samples.size % N)])
    return [encode(fmt, frame) for frame in samples.reshape(-1, N)]


@pytest.mark.parametrize("room", ["none", "mixed", "passthrough"])
def test_digits_are_detected_on_legs_with_detection_on(room: str) -> None:
    mixer = Mixer()
    mixer.add_leg("a", PCMU_8K)
    mixer.add_leg("b", PCMA_8K if room == "mixed" else PCMU_8K)
    mixer.add_leg("quiet", PCMU_8K)
    if room != "none":
        mixer.join("a", "call")
        mixer.join("b", "call")
    assert mixer.is_passthrough("call") == (room == "passthrough")
    for leg in ("a", "quiet"):
        mixer.set_detect(leg, True)
    digits = []
    for frame in dtmf_frames("4#"):
        forwarded = mixer.put_frame("a", frame)
        # A detecting leg in passthrough still has its bytes forwarded untouched.
        assert forwarded == ([("b", frame)] if room == "passthrough" else [])
        digits += mixer.tick().digits
    assert digits == [("a", "4"), ("a", "#")]
    assert mixer.dtmf_held("a") is None and mixer.dtmf_held("b") is None


def test_detection_off_finds_nothing_and_held_digits_are_seen() -> None:
    mixer = Mixer()
    mixer.add_leg("a", PCMU_8K)
    frames = dtmf_frames("7")
    held = []
    for frame in frames:
        mixer.put_frame("a", frame)
        assert mixer.tick().digits == []
    mixer.set_detect("a", True)
    for frame in frames:
        mixer.put_frame("a", frame)
        mixer.tick()
        held.append(mixer.dtmf_held("a"))
    assert "7" in held and held[-1] is None
    mixer.set_detect("a", False)
    assert mixer.dtmf_held("a") is None


def test_a_sniffed_legs_forwarded_frames_are_not_mixed_again_when_passthrough_ends() -> None:
    mixer = room_of_pcm("a", "b")
    mixer.set_detect("a", True)
    assert mixer.is_passthrough("r")
    frame = encode(L16_8K, tone(1000))
    assert mixer.put_frame("a", frame) == [("b", frame)]
    assert mixer.tick().frames == []  # decoded for detection only
    room_of_pcm("c", mixer=mixer)
    assert "b" not in heard(mixer), "a's frame was heard already"


def test_detection_needs_20_ms_frames() -> None:
    mixer = Mixer(frame_ms=10)
    mixer.add_leg("a", PCMU_8K)
    with pytest.raises(ValueError, match="20 ms"):
        mixer.set_detect("a", True)


# -- overlays and taps ---------------------------------------------------------------------------


def test_overlay_is_heard_by_its_leg_only() -> None:
    mixer = room_of_pcm("a", "b", "c")
    calls: list[int] = []

    def ringback(n: int) -> Samples:
        calls.append(n)
        return tone(300, n)

    mixer.set_overlay("a", ringback)
    say(mixer, a=1, b=10, c=100)
    out = heard(mixer)
    assert [int(out[leg][0]) for leg in "abc"] == [410, 101, 11]
    assert calls == [N]


def test_overlay_plays_to_a_leg_in_no_room_and_short_overlays_are_padded() -> None:
    mixer = Mixer()
    mixer.add_leg("parked", L16_8K)
    mixer.set_overlay("parked", lambda n: tone(700, n // 2))
    out = heard(mixer)["parked"]
    assert np.array_equal(out, np.concatenate([tone(700, N // 2), tone(0, N // 2)]))
    mixer.set_overlay("parked", None)
    assert not heard(mixer)["parked"].any()


def test_taps_report_heard_and_spoken_copies() -> None:
    mixer = room_of_pcm("a", "b", "c")
    mixer.set_tap("b", True)
    say(mixer, a=40000 // 2, b=7, c=30000)
    result = mixer.tick()
    assert len(result.taps) == 1
    leg, heard_samples, spoken_samples = result.taps[0]
    assert leg == "b"
    assert np.array_equal(heard_samples, tone(32767))  # clipped, as the leg hears it
    assert np.array_equal(spoken_samples, tone(7))
    mixer.tick()  # the next tick reuses the mixer's buffers; the tap must not change
    assert np.array_equal(spoken_samples, tone(7))
    mixer.set_tap("b", False)
    assert mixer.tick().taps == []


# -- errors --------------------------------------------------------------------------------------


def test_errors_are_typed_media_errors() -> None:
    mixer = room_of_pcm("a", "b")
    with pytest.raises(DuplicateLeg):
        mixer.add_leg("a", PCMU_8K)
    for call in (
        lambda: mixer.put_frame("zz", b""),
        lambda: mixer.join("zz", "r"),
        lambda: mixer.leave("zz"),
        lambda: mixer.remove_leg("zz"),
        lambda: mixer.mute("zz"),
        lambda: mixer.set_tap("zz", True),
        lambda: mixer.room_of("zz"),
    ):
        with pytest.raises(UnknownLeg):
            call()
    with pytest.raises(UnknownRoom):
        mixer.set_gain("nowhere", "a", "b", 1.0)
    mixer.add_leg("c", PCMU_8K)
    with pytest.raises(NotInRoom):
        mixer.set_gain("r", "a", "c", 1.0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidGain):
            mixer.set_gain("r", "a", "b", bad)
    assert issubclass(UnknownLeg, MediaError)
    assert issubclass(InvalidGain, MediaError)


def test_a_burst_does_not_leave_standing_latency() -> None:
    """Frames a burst left queued are shed down to a one-frame jitter cushion."""
    from media.mix_results import SHED_AFTER_TICKS

    mixer = Mixer(passthrough=False)
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "room")
    frames = [bytes([n]) * 160 for n in range(200)]
    for frame in frames[:3]:  # a burst: with each tick's own frame, three more than it takes
        mixer.put_frame("a", frame)
    heard = []
    for n in range(3, 3 + 3 * SHED_AFTER_TICKS):
        mixer.put_frame("a", frames[n])
        result = dict(mixer.tick().frames)
        heard.append(result["b"])
    assert mixer.counters.frames_shed == 2
    # Back to one frame behind: what b hears now is the frame a sent the tick before.
    last_sent = frames[1 + 3 * SHED_AFTER_TICKS]
    expected = encode(PCMU_8K, decode(PCMU_8K, last_sent))
    assert heard[-1] == expected
