"""In-band DTMF through the media plane and the app: detection on every leg, and `mute_dtmf`.

The plane tests drive ``MediaPlane`` tick by tick with real PCMU frames (no event loop, no
clock): a frame said at tick t is forwarded at tick t in passthrough and mixed by tick t
otherwise, so what a listener received is indexed by tick. Digits are judged by the level of
their two tones in each 20 ms frame a listener received.

The detector needs about 30 ms of tone before it names a digit, and a mute takes effect from the
tick after: the frames up to and including the detecting tick reach a DTMF-muted listener
(``LEAKED_FRAMES`` at most, the first of them only partly tone). Everything after is silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.config import Settings
from engine.machine.events import DtmfReceived, Event
from engine.machine.model import DtmfSource
from engine.media_plane.dtmf_mute import DTMF_HANGOVER_TICKS
from engine.media_plane.outputs import KeyPressOutput
from engine.media_plane.plane import RELAYED_DTMF_MS, MediaPlane
from media.codecs import PCMA_8K, PCMU_8K, AudioFormat, decode, encode
from media.dtmf import COLUMN_HZ, KEYPAD, ROW_HZ, dtmf_tone
from media.mixer import Mixer
from media.mixer_dtmf import RELAXED_TICKS
from media.tones import RINGTONE_COUNTRIES, Ringback
from tests.call_fakes import Harness

RATE = 8000
N = 160  # samples per 20 ms frame
LEAKED_FRAMES = 3  # frames of a digit a muted listener may still hear (detection latency)
HEARD_DBFS = -30.0  # both tones of a digit at least this loud: the frame carries the digit
SILENT_DBFS = -50.0  # both tones under this: no DTMF energy to speak of

Samples = NDArray[np.int16]


# ---- signals -----------------------------------------------------------------------------------
def voice(ms: int, start_hz: float = 110.0, level: float = 6000.0) -> Samples:
    """A speech-like sound: 19 harmonics of a pitch gliding up by half, so harmonics sweep over
    the DTMF frequencies (as in test_dtmf)."""
    n = ms * RATE // 1000
    pitch = start_hz * (1 + 0.5 * np.arange(n) / n)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    wave = np.sum([np.sin(k * phase) / k for k in range(1, 20)], axis=0)
    samples: Samples = np.rint(wave / np.abs(wave).max() * level).astype(np.int16)
    return samples


def sine(hz: float, ms: int, level: float = 6000.0) -> Samples:
    t = np.arange(ms * RATE // 1000) / RATE
    return np.rint(level * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def frames(*parts: Samples, fmt: AudioFormat = PCMU_8K) -> list[bytes]:
    samples = np.concatenate(parts)
    samples = np.concatenate([samples, np.zeros(-samples.size % N, dtype=np.int16)])
    return [encode(fmt, frame) for frame in samples.reshape(-1, N)]


def digit_span(before_ms: int, tone_ms: int) -> range:
    """The frames that hold any of a tone starting ``before_ms`` into the signal."""
    first = before_ms * RATE // 1000 // N
    last = ((before_ms + tone_ms) * RATE // 1000 - 1) // N
    return range(first, last + 1)


# Speech, "1", speech, "#", speech. The digits start mid-frame, as they would on a real line.
BEFORE_1, TONE_MS, BETWEEN, AFTER = 307, 200, 300, 400
START_HASH = BEFORE_1 + TONE_MS + BETWEEN
ONE_HASH = frames(
    voice(BEFORE_1),
    dtmf_tone("1", TONE_MS),
    voice(BETWEEN, 140.0),
    dtmf_tone("#", TONE_MS),
    voice(AFTER, 95.0),
)
SPANS = {"1": digit_span(BEFORE_1, TONE_MS), "#": digit_span(START_HASH, TONE_MS)}


def tone_dbfs(frame: Samples, digit: str) -> float:
    """The level of the weaker of the digit's two tones in one frame (Hann-windowed DFT)."""
    index = KEYPAD.index(digit)
    window = np.hanning(frame.size)
    n = np.arange(frame.size)
    levels = []
    for hz in (ROW_HZ[index // 4], COLUMN_HZ[index % 4]):
        amplitude = 2 * abs(np.sum(frame * window * np.exp(-2j * np.pi * hz * n / RATE)))
        levels.append(amplitude / window.sum())
    return float(20 * np.log10(max(min(levels), 1e-3) / 32767))


# ---- the plane, tick by tick --------------------------------------------------------------------
class TickOutput:
    """A leg's media output that notes the tick each frame was sent in."""

    def __init__(self, clock: list[int], fmt: AudioFormat = PCMU_8K) -> None:
        self.clock = clock
        self.fmt = fmt
        self.frames: list[tuple[int, bytes]] = []

    def send_frame(self, payload: bytes) -> None:
        self.frames.append((self.clock[0], bytes(payload)))

    def at(self, tick: int) -> Samples:
        """What the leg heard at a tick: its frames of that tick, decoded (one at most)."""
        got = [decode(self.fmt, data) for t, data in self.frames if t == tick]
        assert len(got) <= 1, f"two frames at tick {tick}"
        return got[0] if got else np.zeros(N, dtype=np.int16)


class Scene:
    def __init__(self, tmp_path: Path, *, detect_dtmf: bool = True) -> None:
        self.clock = [0]
        self.plane = MediaPlane(Mixer(), tmp_path, detect_dtmf=detect_dtmf)
        self.outputs: dict[str, TickOutput] = {}
        self.events: list[tuple[int, Event]] = []
        self.passthrough: list[bool] = []  # per tick, after it: is room "call" passthrough?

    def leg(self, leg_id: str, fmt: AudioFormat = PCMU_8K, room: str | None = "call") -> None:
        self.outputs[leg_id] = TickOutput(self.clock, fmt)
        self.plane.attach(leg_id, fmt, self.outputs[leg_id])
        if room is not None:
            self.plane.join(leg_id, room)

    def run(self, said: dict[str, list[bytes]], extra_ticks: int = 5) -> None:
        ticks = max(len(f) for f in said.values()) + extra_ticks
        for _ in range(ticks):
            tick = self.clock[0]
            for leg_id, sequence in said.items():
                if tick < len(sequence):
                    self.plane.frame_in(leg_id, sequence[tick])
            self.events += [(tick, event) for event in self.plane.tick()]
            self.passthrough.append(self.plane.mixer.is_passthrough("call"))
            self.clock[0] += 1

    def digits(self) -> list[DtmfReceived]:
        return [e for _, e in self.events if isinstance(e, DtmfReceived)]

    def detected_at(self, digit: str) -> int:
        (tick,) = [t for t, e in self.events if isinstance(e, DtmfReceived) and e.digit == digit]
        return tick


def in_band(leg: str, *digits: str) -> list[DtmfReceived]:
    return [DtmfReceived(leg, digit, DtmfSource.IN_BAND) for digit in digits]


@pytest.mark.parametrize("room", ["no room", "mixed pair", "passthrough pair", "conference"])
def test_each_key_press_is_reported_once_in_order(tmp_path: Path, room: str) -> None:
    scene = Scene(tmp_path)
    if room == "no room":
        scene.leg("a", room=None)
    else:
        scene.leg("a")
        scene.leg("b", PCMA_8K if room == "mixed pair" else PCMU_8K)
        if room == "conference":
            scene.leg("c")
    said = {"a": ONE_HASH}
    if room != "no room":
        said["b"] = frames(voice(2000, 180.0))  # the other side talks over it
    scene.run(said)
    assert scene.digits() == in_band("a", "1", "#")
    # Nobody in a passthrough pair mutes DTMF, so its legs' frames are detected every
    # RELAXED_TICKS ticks, that many at a time (media/sniff_batch.py): a digit may be found up
    # to RELAXED_TICKS - 1 ticks later.
    relaxed = RELAXED_TICKS - 1 if room == "passthrough pair" else 0
    for digit, span in SPANS.items():
        latency = scene.detected_at(digit) - span[0]
        assert 1 <= latency < LEAKED_FRAMES + relaxed, (digit, latency)
    if room == "passthrough pair":
        assert all(scene.passthrough), "nobody is DTMF-muted: the pair stays in passthrough"
        got = [data for _, data in scene.outputs["b"].frames]
        assert got == ONE_HASH, "forwarded byte for byte, detection or not"


def test_no_digit_is_found_in_ringback_tones_or_speech(tmp_path: Path) -> None:
    # One leg per country's ringback (loud, through PCMU), one per steady tone, one talking.
    scene = Scene(tmp_path)
    said: dict[str, list[bytes]] = {}
    for country in RINGTONE_COUNTRIES:
        scene.leg(country, room=None)
        said[country] = frames(Ringback(country, level_dbfs=-10.0).next_frame(6 * RATE))
    for hz in (350, 440, 697, 1000, 1209, 1633, 2600):
        scene.leg(f"tone-{hz}", room=None)
        said[f"tone-{hz}"] = frames(sine(hz, 2000, 12000))
    scene.leg("talker", room=None)
    said["talker"] = frames(voice(3000), voice(3000, 220.0, 15000))
    scene.run(said)
    assert scene.digits() == []


def test_detection_can_be_turned_off_for_load_tests(tmp_path: Path) -> None:
    scene = Scene(tmp_path, detect_dtmf=False)
    scene.leg("a")
    scene.leg("b")
    scene.run({"a": ONE_HASH})
    assert scene.digits() == []
    assert scene.plane.mixer.counters.frames_mixed == 0, "passthrough: nothing decoded"


@pytest.mark.parametrize("room", ["conference", "passthrough pair"])
def test_a_dtmf_muted_listener_does_not_hear_digits_after_the_detection_latency(
    tmp_path: Path, room: str
) -> None:
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.leg("muted")
    said = {"a": ONE_HASH}
    if room == "conference":
        scene.leg("hears")
        said["hears"] = frames(sine(400, 2000))  # so "muted" hears someone throughout
    scene.plane.set_dtmf_mute("muted", True)
    scene.run(said, extra_ticks=10)
    assert scene.digits() == in_band("a", "1", "#"), "the digits are still reported"
    muted = scene.outputs["muted"]
    for digit, span in SPANS.items():
        detected = scene.detected_at(digit)
        heard = [tone_dbfs(muted.at(t), digit) for t in span]
        leaked = [t for t, level in zip(span, heard, strict=True) if level > SILENT_DBFS]
        assert leaked == list(range(span[0], detected + 1)), (digit, heard)
        assert len(leaked) <= LEAKED_FRAMES
        # The hangover covers the tail; then the listener hears the speaker again.
        tail = range(span[-1] + 1, span[-1] + 1 + DTMF_HANGOVER_TICKS)
        assert max(tone_dbfs(muted.at(t), digit) for t in tail) < SILENT_DBFS
        restored = span[-1] + DTMF_HANGOVER_TICKS + 3
        assert np.abs(muted.at(restored).astype(np.int32)).max() > 1000, "a is heard again"
        if room == "conference":
            other = [tone_dbfs(scene.outputs["hears"].at(t), digit) for t in span[1:-1]]
            assert min(other) > HEARD_DBFS, "a listener without mute_dtmf hears the digit"
        else:
            # Mixed while the digit is kept from the listener, passthrough again after.
            assert not any(scene.passthrough[detected : span[-1] + 1])
            assert scene.passthrough[detected - 1] and scene.passthrough[restored]


def test_the_mute_follows_set_dtmf_mute_at_any_time(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.plane.set_dtmf_mute("b", True)  # before its media: kept until it attaches
    scene.leg("b")
    scene.run({"a": ONE_HASH[: SPANS["1"][LEAKED_FRAMES]]}, extra_ticks=0)
    mixer = scene.plane.mixer
    assert scene.digits() == in_band("a", "1") and mixer.gain("call", "b", "a") == 0.0
    scene.plane.set_dtmf_mute("b", False)  # mid-digit: b hears a again at once
    assert mixer.gain("call", "b", "a") == 1.0 and mixer.is_passthrough("call")


class KeyPressTickOutput(TickOutput):
    """An output that reads key presses as messages, as a websocket agent's does."""

    def __init__(self, clock: list[int]) -> None:
        super().__init__(clock)
        self.key_presses: list[tuple[int, str]] = []

    def send_key_press(self, digit: str) -> None:
        self.key_presses.append((self.clock[0], digit))


@pytest.mark.parametrize("source", [DtmfSource.OUT_OF_BAND, DtmfSource.IN_BAND])
def test_a_relayed_digit_reaches_each_listener_the_way_its_media_carries_key_presses(
    tmp_path: Path, source: DtmfSource
) -> None:
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.leg("phone")
    bot = KeyPressTickOutput(scene.clock)
    scene.plane.attach("bot", PCMU_8K, bot)
    scene.plane.join("bot", "call")
    assert isinstance(bot, KeyPressOutput)
    assert not isinstance(scene.outputs["phone"], KeyPressOutput)
    for listener in ("phone", "bot", "gone"):  # "gone" has no media: nothing to carry it
        scene.plane.relay_dtmf(listener, "5", source)
    scene.run({"a": frames(np.zeros(20 * N, dtype=np.int16))}, extra_ticks=0)
    phone = [tone_dbfs(scene.outputs["phone"].at(t), "5") for t in range(20)]
    if source is DtmfSource.OUT_OF_BAND:
        # Not in anyone's audio: the phone hears regenerated tones, for RELAYED_DTMF_MS.
        assert sum(level > HEARD_DBFS for level in phone) >= RELAYED_DTMF_MS // 20 - 1
    else:
        # In the speaker's audio already (here the speaker is silent): nothing is added.
        assert max(phone) < SILENT_DBFS
    # The bot gets the message, whatever the source, and no tones added to its audio.
    assert bot.key_presses == [(0, "5")]
    assert max(tone_dbfs(bot.at(t), "5") for t in range(20)) < SILENT_DBFS


# ---- through the Call Control API --------------------------------------------------------------
@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def paced(h: Harness, metronome: str, leg: str, sequence: list[bytes]) -> asyncio.Event:
    """Feed ``sequence`` from ``leg``, one frame per media tick (late ticks included): each
    frame the ``metronome`` leg (in no room, so it gets one every tick) receives releases the
    next. The event is set when all are in."""
    done = asyncio.Event()
    frames_left: Iterator[bytes] = iter(sequence)

    def next_frame() -> None:
        frame = next(frames_left, None)
        if frame is None:
            done.set()
        else:
            h.runtime.media_frame(leg, frame)

    h.outputs[metronome].on_frame = next_frame
    return done


@pytest.mark.parametrize("mute_dtmf", ["opposite", "none"])
async def test_mute_dtmf_keeps_in_band_digits_from_the_peer(h: Harness, mute_dtmf: str) -> None:
    a, b, metronome = await h.up(), await h.up(), await h.up()
    await h.bridged(a, b, mute_dtmf=mute_dtmf)
    room = h.room_of(a)
    assert room is not None and h.runtime.plane.mixer.is_passthrough(room)
    done = paced(h, metronome, a, ONE_HASH + frames(voice(200)))
    first = await h.receiver.next("call.dtmf.received", a)
    second = await h.receiver.next("call.dtmf.received", a)
    assert [first.payload["digit"], second.payload["digit"]] == ["1", "#"]
    async with asyncio.timeout(5):
        await done.wait()
    await h.outputs[metronome].collect(DTMF_HANGOVER_TICKS + 2)
    assert "call.dtmf.received" not in await h.barrier(b), "b pressed nothing"
    # What b heard, frame by frame, in order (passthrough and mixed alike).
    heard = [decode(PCMU_8K, f) for f in h.outputs[b].frames]
    for digit in "1#":
        with_digit = sum(tone_dbfs(frame, digit) > HEARD_DBFS for frame in heard)
        if mute_dtmf == "opposite":
            # Only the onset, before detection; b's own DTMF detector needs 40 ms of tone.
            assert with_digit <= LEAKED_FRAMES, (digit, with_digit)
        else:
            assert with_digit >= TONE_MS // 20 - 1, (digit, with_digit)
    assert sum(np.abs(f.astype(np.int32)).max() > 1000 for f in heard[-8:]) >= 5, "a is heard"
    assert h.runtime.plane.mixer.is_passthrough(room), "back to passthrough after the digits"


async def test_a_key_press_heard_in_band_and_reported_out_of_band_is_one_webhook(
    h: Harness,
) -> None:
    a, b, metronome = await h.up(), await h.up(), await h.up()
    await h.bridged(a, b)
    sequence = ONE_HASH + frames(voice(200))
    # The provider reports each key as its tone starts (out-of-band, e.g. Twilio's `dtmf`
    # message); the media core detects the same tone a few ticks later (in-band).
    starts = {SPANS[digit][0]: digit for digit in "1#"}
    frames_left = iter(enumerate(sequence))
    reports: list[asyncio.Future[None]] = []
    done = asyncio.Event()

    def next_frame() -> None:
        item = next(frames_left, None)
        if item is None:
            done.set()
            return
        index, frame = item
        if index in starts:
            reports.append(asyncio.ensure_future(h.runtime.media_dtmf(a, starts[index])))
        h.runtime.media_frame(a, frame)

    h.outputs[metronome].on_frame = next_frame
    async with asyncio.timeout(5):
        await done.wait()
    await asyncio.gather(*reports)
    await h.outputs[metronome].collect(DTMF_HANGOVER_TICKS + 2)  # every tone has been judged
    await h.barrier(a)
    digits = [
        hook.payload["digit"]
        for hook in h.receiver.of(a)
        if hook.event_type == "call.dtmf.received" and hook.payload["digit"] != "D"
    ]
    assert digits == ["1", "#"]
