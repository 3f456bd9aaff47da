"""http(s) ``audio_url`` playback (issue 11, point 4, the http(s) part).

An audio server on 127.0.0.1 stands in for the tenant's file host. Through the app, a WAV and an
MP3 play to the leg, judged per 20 ms frame; through the fetcher itself, every bound: size,
time, redirects, content, duration, audio_type, the URL policy at connect time, one download
for many legs, and a cache no other organization shares.
"""

from __future__ import annotations

import asyncio
import functools
import io
import wave
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import lameenc
import numpy as np
import pytest
from aiohttp import web
from numpy.typing import NDArray

from engine.config import Settings
from engine.errors import ValidationError
from engine.machine import commands as cmd
from engine.machine.commands import ParameterError
from engine.machine.model import OverlaySource
from engine.media_plane.audio_fetch import AudioCache, AudioFetcher, AudioFetchLimits
from engine.media_plane.audio_sources import OverlayError, decode_audio, sniff_audio
from tests.call_fakes import WAIT_S, Harness, share

WAV_HZ, MP3_HZ = 600.0, 1000.0  # on the 50 Hz grid of one 20 ms frame's spectrum


def sine(frequency: float, seconds: float, rate: int) -> NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def wav_bytes(frequency: float, seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    """Not the 8 kHz mono 16-bit a local file must be: fetched audio is converted."""
    mono = sine(frequency, seconds, rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.repeat(mono, channels).astype("<i2").tobytes())
    return out.getvalue()


def mp3_bytes(frequency: float, seconds: float, rate: int = 16000) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(2)
    pcm = sine(frequency, seconds, rate).astype("<i2").tobytes()
    return bytes(encoder.encode(pcm) + encoder.flush())


class AudioHost:
    """The tenant's file server: counts requests per path; ``/slow`` answers when released."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        files: dict[str, Callable[[], web.StreamResponse]] = {
            "tone.wav": lambda: web.Response(body=wav_bytes(WAV_HZ, 0.6), content_type="audio/wav"),
            "tone.mp3": lambda: web.Response(
                body=mp3_bytes(MP3_HZ, 0.6), content_type="audio/mpeg"
            ),
            # An object store's answer: the type says nothing, the bytes say MP3.
            "blob": lambda: web.Response(
                body=mp3_bytes(MP3_HZ, 0.3), content_type="application/octet-stream"
            ),
            "page.html": lambda: web.Response(text="<html>hi</html>", content_type="text/html"),
            "long.wav": lambda: web.Response(body=wav_bytes(WAV_HZ, 3.0, 8000, 1)),
        }
        if name == "slow":
            await self.release.wait()
            return web.Response(body=wav_bytes(WAV_HZ, 0.6), content_type="audio/wav")
        if name == "big":
            return web.Response(body=b"RIFF" + bytes(300_000))
        if name == "drip":  # no Content-Length: cut off as it grows past the limit
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(50):
                await response.write(b"RIFF" + bytes(10_000))
            return response
        if name in ("loop", "moved"):
            raise web.HTTPFound("/loop" if name == "loop" else "/tone.wav")
        make = files.get(name)
        if make is None:
            raise web.HTTPNotFound()
        return make()


@pytest.fixture
async def host(aiohttp_server: Any) -> AsyncIterator[AudioHost]:
    audio = AudioHost()
    server = await aiohttp_server(audio.app())
    audio.url = str(server.make_url("/")).rstrip("/")
    yield audio
    audio.release.set()


LIMITS = AudioFetchLimits(max_bytes=200_000, timeout_s=2.0, max_seconds=2.0)


async def fetch(
    fetcher: AudioFetcher, url: str, *, org: int = 1, audio_type: str | None = None
) -> NDArray[np.int16] | OverlayError:
    arrived: asyncio.Future[NDArray[np.int16] | OverlayError] = (
        asyncio.get_running_loop().create_future()
    )
    source = OverlaySource("url", url, org_id=org, audio_type=audio_type)
    fetcher.request(source, lambda _source, result: arrived.set_result(result))
    async with asyncio.timeout(WAIT_S):
        return await arrived


@pytest.fixture
async def fetcher() -> AsyncIterator[AudioFetcher]:
    audio = AudioFetcher(8000, LIMITS, allow_private=True)
    yield audio
    await audio.close()


# ---- decoding --------------------------------------------------------------------------------
def test_wav_and_mp3_are_known_by_their_bytes() -> None:
    assert sniff_audio(wav_bytes(440, 0.1)) == "wav"
    assert sniff_audio(mp3_bytes(440, 0.1)) == "mp3"
    assert sniff_audio(b"<html>") is None
    assert sniff_audio(b"") is None


@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_stereo_44k_wav_and_an_mp3_decode_to_mono_at_the_mix_rate(rate: int) -> None:
    wav = decode_audio(wav_bytes(WAV_HZ, 0.5), rate, max_seconds=10)
    assert abs(wav.size - rate // 2) <= 2
    assert share(wav, WAV_HZ, rate) > 0.95
    mp3 = decode_audio(mp3_bytes(MP3_HZ, 0.5), rate, max_seconds=10)
    assert share(mp3, MP3_HZ, rate) > 0.95


def test_undecodable_or_too_long_audio_fails() -> None:
    with pytest.raises(OverlayError, match="not a WAV or MP3"):
        decode_audio(b"GIF89a" + bytes(100), 8000, max_seconds=10)
    with pytest.raises(OverlayError, match="does not decode"):
        decode_audio(b"RIFF\x00\x00\x00\x00WAVEjunk", 8000, max_seconds=10)
    with pytest.raises(OverlayError, match="lasts 3 s; at most 2 s") as refused:
        decode_audio(wav_bytes(WAV_HZ, 3.0, 8000, 1), 8000, max_seconds=2)
    assert refused.value.status == "failed"


def test_the_cache_expires_and_evicts_the_least_recently_used() -> None:
    now = [0.0]
    cache = AudioCache(ttl_s=10, max_bytes=3000, clock=lambda: now[0])
    one, two, three = (np.zeros(500, np.int16) for _ in range(3))  # 1000 bytes each
    cache.put((1, "a", None), one)
    cache.put((1, "b", None), two)
    assert cache.get((1, "a", None)) is one  # a is now the most recently used
    cache.put((1, "c", None), three)
    cache.put((1, "d", None), np.zeros(500, np.int16))
    assert cache.get((1, "b", None)) is None and cache.get((1, "a", None)) is one
    assert cache.size_bytes == 3000
    now[0] = 10.5
    assert cache.get((1, "a", None)) is None
    with pytest.raises(ValueError, match="read-only"):
        one[0] = 1  # shared by every leg that plays it: read-only


# ---- fetching --------------------------------------------------------------------------------
async def test_a_wav_an_mp3_and_an_untyped_mp3_are_fetched(
    fetcher: AudioFetcher, host: AudioHost
) -> None:
    for name, frequency in (("tone.wav", WAV_HZ), ("tone.mp3", MP3_HZ), ("blob", MP3_HZ)):
        samples = await fetch(fetcher, f"{host.url}/{name}")
        assert not isinstance(samples, OverlayError), samples
        assert share(samples, frequency) > 0.9


@pytest.mark.parametrize(
    ("name", "status", "detail"),
    [
        ("missing.wav", "file_not_found", "HTTP 404"),
        ("page.html", "failed", "not a WAV or MP3 file (Content-Type text/html)"),
        ("big", "failed", "larger than 200000 bytes"),
        ("drip", "failed", "larger than 200000 bytes"),
        ("loop", "failed", "redirects more than 3 times"),
        ("long.wav", "failed", "lasts 3 s; at most 2 s"),
    ],
)
async def test_what_cannot_be_played_fails_with_a_playback_status(
    fetcher: AudioFetcher, host: AudioHost, name: str, status: str, detail: str
) -> None:
    result = await fetch(fetcher, f"{host.url}/{name}")
    assert isinstance(result, OverlayError)
    assert (result.status, detail in str(result)) == (status, True), str(result)


async def test_a_redirect_is_followed(fetcher: AudioFetcher, host: AudioHost) -> None:
    samples = await fetch(fetcher, f"{host.url}/moved")
    assert not isinstance(samples, OverlayError) and share(samples, WAV_HZ) > 0.9


async def test_a_server_that_never_answers_fails_in_time(host: AudioHost) -> None:
    fetcher = AudioFetcher(8000, AudioFetchLimits(timeout_s=0.5), allow_private=True)
    try:
        result = await fetch(fetcher, f"{host.url}/slow")
    finally:
        await fetcher.close()
    assert isinstance(result, OverlayError) and "did not arrive within 0.5 s" in str(result)


async def test_audio_type_must_match_the_bytes(fetcher: AudioFetcher, host: AudioHost) -> None:
    assert not isinstance(await fetch(fetcher, f"{host.url}/tone.mp3", audio_type="mp3"), Exception)
    result = await fetch(fetcher, f"{host.url}/tone.wav", audio_type="mp3")
    assert isinstance(result, OverlayError) and "is WAV, not MP3" in str(result)


async def test_a_private_address_is_refused_when_connecting(host: AudioHost) -> None:
    fetcher = AudioFetcher(8000, LIMITS, allow_private=False)
    try:
        result = await fetch(fetcher, f"{host.url}/tone.wav")
    finally:
        await fetcher.close()
    assert isinstance(result, OverlayError) and "loopback" in str(result)
    assert result.status == "file_not_found" and host.hits["tone.wav"] == 0


async def test_one_download_for_many_legs_kept_for_the_next_playback(
    fetcher: AudioFetcher, host: AudioHost
) -> None:
    url = f"{host.url}/slow"
    waiting = [asyncio.ensure_future(fetch(fetcher, url)) for _ in range(3)]
    await asyncio.sleep(0)  # all three have asked before the server answers
    host.release.set()
    results = await asyncio.gather(*waiting)
    assert all(r is results[0] for r in results) and host.hits["slow"] == 1
    # The next playback of the URL finds it here (the media plane asks ``cached`` first).
    assert fetcher.cached(OverlaySource("url", url, org_id=1)) is results[0]


async def test_another_organization_never_gets_audio_fetched_for_one(
    fetcher: AudioFetcher, host: AudioHost
) -> None:
    url = f"{host.url}/tone.wav"
    await fetch(fetcher, url, org=1)
    assert fetcher.cached(OverlaySource("url", url, org_id=2)) is None
    await fetch(fetcher, url, org=2)
    assert host.hits["tone.wav"] == 2


def _settle(arrived: asyncio.Future[Any], _source: OverlaySource, result: Any) -> None:
    arrived.set_result(result)


async def test_cache_audio_false_fetches_each_time_and_keeps_nothing(host: AudioHost) -> None:
    url = f"{host.url}/tone.wav"
    audio = AudioFetcher(8000, LIMITS, allow_private=True)
    try:
        fresh = OverlaySource("url", url, org_id=1, cache=False)
        for _ in range(2):
            assert audio.cached(fresh) is None
            arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            audio.request(fresh, functools.partial(_settle, arrived))
            async with asyncio.timeout(WAIT_S):
                assert not isinstance(await arrived, OverlayError)
        assert host.hits["tone.wav"] == 2
        assert audio.cached(OverlaySource("url", url, org_id=1)) is None  # nothing was kept
    finally:
        await audio.close()


def test_cache_audio_is_carried_to_the_source() -> None:
    url = "https://example.com/a.wav"
    on, off = parse({"audio_url": url}), parse({"audio_url": url, "cache_audio": False})
    assert isinstance(on, cmd.PlaybackStart) and isinstance(off, cmd.PlaybackStart)
    assert (on.cache_audio, off.cache_audio) == (True, False)


# ---- the API -----------------------------------------------------------------------------------
def parse(body: dict[str, Any], *, allow_private: bool = True) -> cmd.Command:
    return cmd.parse_command(
        "playback_start", body, allow_private_urls=allow_private, media_dir="/srv/media"
    )


def test_the_api_takes_http_urls_under_the_url_policy() -> None:
    parsed = parse({"audio_url": "https://example.com/a.mp3", "audio_type": "mp3"})
    assert isinstance(parsed, cmd.PlaybackStart)
    assert (parsed.audio_url, parsed.audio_type) == ("https://example.com/a.mp3", "mp3")
    for url in ("http://127.0.0.1/a.wav", "http://169.254.169.254/latest", "http://localhost/"):
        with pytest.raises(ParameterError) as refused:
            parse({"audio_url": url}, allow_private=False)
        assert refused.value.field == "audio_url"
    with pytest.raises(ParameterError, match="http\\(s\\) URL, or a file:///"):
        parse({"audio_url": "ftp://example.com/a.wav"})


@pytest.mark.parametrize(
    "body",
    [
        {"media_name": "tone-440", "audio_type": "wav"},
        {"audio_url": "file:///srv/media/a.wav", "audio_type": "mp3"},
    ],
)
def test_audio_type_is_refused_where_it_cannot_apply(body: dict[str, Any]) -> None:
    with pytest.raises(ParameterError) as refused:
        parse(body)
    assert refused.value.field == "audio_type"


# ---- through the app, judged per 20 ms frame ---------------------------------------------------
@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def played(h: Harness, leg: str, start: int) -> tuple[list[bytes], dict[str, Any]]:
    """Every frame the leg heard from frame ``start`` until its playback ended (and two more)."""
    output = h.outputs[leg]
    ended = await h.receiver.next("call.playback.ended", leg)
    await output.collect(2)
    return output.frames[start:], ended.payload


def carries(samples: NDArray[np.int16], frequency: float) -> bool:
    """A loud frame whose strongest frequency is ``frequency`` (one 20 ms frame resolves 50 Hz)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    peak = float(np.fft.rfftfreq(samples.size, 1 / 8000)[int(np.argmax(spectrum))])
    return int(np.abs(samples.astype(np.int32)).max()) > 1000 and abs(peak - frequency) < 50


def tone_run(h: Harness, leg: str, frames: list[bytes], frequency: float) -> int:
    """How many frames carried the tone; they must be one unbroken run with only quiet frames
    around it (silence, or an MP3 decoder's ramp in and out)."""
    output = h.outputs[leg]
    toned = [carries(output.samples([f]), frequency) for f in frames]
    assert any(toned), "the playback was never heard"
    first, last = toned.index(True), len(toned) - 1 - toned[::-1].index(True)
    assert all(toned[first : last + 1]), f"a gap in the playback: {toned}"
    rest = frames[:first] + frames[last + 1 :]
    assert all(np.abs(output.samples([f]).astype(np.int32)).max() < 400 for f in rest)
    return last - first + 1


@pytest.mark.parametrize("loop", [1, 2])
@pytest.mark.parametrize(("name", "frequency"), [("tone.wav", WAV_HZ), ("tone.mp3", MP3_HZ)])
async def test_an_http_wav_and_mp3_play_their_loops_and_end(
    h: Harness, host: AudioHost, name: str, frequency: float, loop: int
) -> None:
    a = await h.up()
    url = f"{host.url}/{name}"
    start = len(h.outputs[a].frames)
    await h.ok(a, "playback_start", audio_url=url, loop=loop)
    started = await h.receiver.next("call.playback.started", a)
    assert started.payload["media_url"] == url
    frames, ended = await played(h, a, start)
    assert (ended["status"], ended["media_url"]) == ("completed", url)
    # 0.6 s is 30 frames a pass; an MP3 pass starts with its encoder's delay (a few frames of
    # silence, so two MP3 passes are two runs).
    if loop == 1:
        assert 26 <= tone_run(h, a, frames, frequency) <= 31
    toned = sum(carries(h.outputs[a].samples([f]), frequency) for f in frames)
    assert 26 * loop <= toned <= 31 * loop, toned


async def test_a_url_that_fails_ends_the_playback_and_the_call_goes_on(
    h: Harness, host: AudioHost
) -> None:
    a = await h.up()
    await h.ok(a, "playback_start", audio_url=f"{host.url}/page.html")
    await h.receiver.next("call.playback.started", a)
    _, ended = await played(h, a, 0)
    assert ended["status"] == "failed"
    await h.ok(a, "playback_start", audio_url=f"{host.url}/missing.wav")
    _, ended = await played(h, a, 0)
    assert ended["status"] == "file_not_found"
    assert (await h.status(a))["is_alive"] is True


async def test_a_playback_stopped_while_fetching_never_starts(h: Harness, host: AudioHost) -> None:
    a = await h.up()
    await h.ok(a, "playback_start", audio_url=f"{host.url}/slow")
    await h.receiver.next("call.playback.started", a)
    await h.ok(a, "playback_stop")
    assert (await h.receiver.next("call.playback.ended", a)).payload["status"] == "cancelled"
    host.release.set()
    fetcher = h.runtime.plane.remote_audio
    assert isinstance(fetcher, AudioFetcher)
    while fetcher.fetched == 0:  # the download finishes after the stop
        await h.outputs[a].collect(1)
    frames = await h.outputs[a].collect(10)
    assert all(np.abs(h.outputs[a].samples([f]).astype(np.int32)).max() < 64 for f in frames)
    assert [hook.event_type for hook in h.receiver.of(a)].count("call.playback.ended") == 1


def test_the_bounds_come_from_the_environment_checked() -> None:
    env = {"CALLBRIDGE_AUDIO_MAX_BYTES": "2048", "CALLBRIDGE_AUDIO_FETCH_TIMEOUT_S": "2.5"}
    settings = Settings.from_env(env)
    assert (settings.audio_max_bytes, settings.audio_fetch_timeout_s) == (2048, 2.5)
    assert settings.audio_cache_ttl_s == Settings().audio_cache_ttl_s
    for name, raw in (("CALLBRIDGE_AUDIO_MAX_BYTES", "1.5"), ("CALLBRIDGE_AUDIO_MAX_SECONDS", "0")):
        with pytest.raises(ValidationError, match=f"{name} must be a"):
            Settings.from_env({name: raw})
