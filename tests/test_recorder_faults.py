"""A recorder cannot stall the engine (issue 12, point 6).

A disk that stalls or fills ends that recording with ``call.recording.error``; ``write`` (called
by the media tick) never waits, and the frames waiting for the disk stay under a bound. Disks are
faked at the recorder's real seam, its file opener (``Recorder(opener=...)``, the media plane's
``recordings.opener``): real files whose writes block on an Event or raise ENOSPC.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import pathlib
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pytest
from numpy.typing import NDArray
from telnyx.types.call_recording_error_webhook_event import CallRecordingErrorWebhookEvent

from engine.api.keys import STORE
from engine.config import Settings
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.model import HangupCause, RecordingOptions
from engine.media_plane.recordings import FAILURE_REASONS
from engine.metrics import Metrics
from media.codecs import PCMA_8K, PCMU_8K
from media.recorder import Recorder, RecordingError, RecordingStalled
from media.recorder_queue import WriterQueue
from tests.call_fakes import Harness, share
from tests.test_machine_harness import Harness as MachineHarness
from tests.test_machine_harness import hook, hooks, of_type

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

RATE = 8000
FRAME = 160
WAIT_S = 10.0  # a deadline for conditions that normally hold within milliseconds


class FaultyFile(io.FileIO):
    """A real file on a disk that may stall (writes block until released) or be full."""

    def __init__(self, path: pathlib.Path, disk: FaultyDisk) -> None:
        super().__init__(path, "wb")
        self.disk = disk

    def write(self, data: ReadableBuffer, /) -> int:
        if self.disk.full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.disk.stalled.is_set():
            self.disk.stuck.set()
            self.disk.release.wait()
        return super().write(data)


class FaultyDisk:
    def __init__(self) -> None:
        self.stalled = threading.Event()  # writes block from now on...
        self.release = threading.Event()  # ...until this is set
        self.stuck = threading.Event()  # a write is blocked (or was)
        self.full = threading.Event()  # writes raise ENOSPC
        self.files: list[FaultyFile] = []

    def open(self, path: pathlib.Path) -> BinaryIO:
        if self.stalled.is_set():  # opening waits on the stalled disk too
            self.stuck.set()
            self.release.wait()
        file = FaultyFile(path, self)
        self.files.append(file)
        return file


def loud(n: int = FRAME, seed: int = 0) -> NDArray[np.int16]:
    return np.random.default_rng(seed).integers(-20000, 20000, n, dtype=np.int16)


def until(condition: Callable[[], bool], what: str) -> None:
    """Poll an observable condition until it holds, or fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.005)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """``until`` for the event loop, which keeps running meanwhile."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - set by a thread that cannot wake the loop
            await asyncio.sleep(0.005)


def feed_until_failed(recorder: Recorder, bound: int) -> tuple[int, float]:
    """Write frames as a tick would (but faster) until the recorder fails, from a thread of its
    own, so that a ``write`` that blocked would fail the test instead of hanging it. Returns
    the most frames ever queued and the slowest write."""
    seen = {"queued": 0, "slowest": 0.0}
    frame = loud()

    def feed() -> None:
        deadline = time.monotonic() + WAIT_S
        while recorder.failure is None and time.monotonic() < deadline:
            started = time.perf_counter()
            recorder.write(frame, frame)
            seen["slowest"] = max(seen["slowest"], time.perf_counter() - started)
            seen["queued"] = max(seen["queued"], recorder.queued_frames)
            threading.Event().wait(0.002)  # a fast tick: the stall must be seen by time

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    feeder.join(WAIT_S + 5)
    assert not feeder.is_alive(), "write blocked on the stalled disk"
    assert seen["queued"] <= bound
    return int(seen["queued"]), seen["slowest"]


# ---- the machine ------------------------------------------------------------------------------
def test_the_machine_reports_a_failed_recording_once_and_forgets_it() -> None:
    m = MachineHarness()
    m.incoming("a")
    out = m.command("a", cmd.RecordStart(options=RecordingOptions(max_length_secs=30)))
    (first,) = of_type(out, fx.StartRecording)
    failed = ev.RecordingFailed("a", first.recording_id, "disk_stalled", "the disk stopped")
    out = m.event(failed)
    payload = hook(out, "a", "call.recording.error")
    assert payload["reason"] == "Internal server error"  # telnyx SDK: call_recording_error.py
    assert payload["recording_id"] == first.recording_id
    assert (payload["callbridge_reason"], payload["callbridge_reason_detail"]) == (
        "disk_stalled",
        "the disk stopped",
    )
    assert of_type(out, fx.CancelTimer), "its max-length timer goes"
    assert not of_type(out, fx.StopRecording), "the media plane has dropped it already"
    assert m.event(failed) == [], "reported once"
    saved = ev.RecordingSaved("a", first.recording_id, "/rec/a.wav", m.now, m.now, "wav")
    assert m.event(saved) == [], "never saved later"
    # A new recording starts; a late failure report of the old one leaves it alone.
    out = m.command("a", cmd.RecordStart(options=RecordingOptions()))
    (second,) = of_type(out, fx.StartRecording)
    assert m.event(failed) == []
    assert m.m.leg("a").recording_id == second.recording_id


def test_a_recording_that_fails_after_its_leg_ended_is_still_reported() -> None:
    m = MachineHarness()
    m.incoming("a")
    out = m.command("a", cmd.RecordStart(options=RecordingOptions()))
    (start,) = of_type(out, fx.StartRecording)
    m.command("a", cmd.Hangup())
    out = m.event(ev.RecordingFailed("a", start.recording_id, "write_failed"))
    assert hooks(out, "a") == ["call.recording.error"]


# ---- the queue between the tick and the writer --------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_writer_that_takes_nothing_while_frames_wait_is_behind_after_the_stall_time() -> None:
    clock = Clock()
    q: WriterQueue[int] = WriterQueue(stall_after_s=5.0, max_frames=1000, clock=clock)
    clock.now += 60
    assert q.behind() is None, "an empty queue is never behind, however long idle"
    q.put(1)
    assert q.behind() is None
    clock.now += 4.9
    q.put(2)
    assert q.behind() is None
    clock.now += 0.2
    assert q.behind() == "the disk has taken no frame for 5.1 s"


def test_a_writer_that_keeps_taking_is_not_behind() -> None:
    clock = Clock()
    q: WriterQueue[int] = WriterQueue(stall_after_s=5.0, max_frames=1000, clock=clock)
    for i in range(10):
        q.put(i)
        assert q.behind() is None
        clock.now += 4.0
        q.get(0)
        q.took_frame()
        q.put(i)  # one always waits: progress, not an empty queue, keeps it from stalling
    assert q.behind() is None


def test_a_full_queue_is_behind_at_once() -> None:
    q: WriterQueue[int] = WriterQueue(stall_after_s=5.0, max_frames=3, clock=Clock())
    for i in range(3):
        assert q.behind() is None
        q.put(i)
    assert q.behind() == "3 frames wait for the disk"


def test_queue_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="stall_after_s"):
        WriterQueue(stall_after_s=0)
    with pytest.raises(ValueError, match="max_frames"):
        WriterQueue(max_frames=0)


# ---- the recorder -------------------------------------------------------------------------------
def test_a_stalled_disk_fails_the_recording_and_write_never_waits(tmp_path: pathlib.Path) -> None:
    disk = FaultyDisk()
    path = tmp_path / "stalled.wav"
    # Every frame is a flush interval of audio: the first one's write meets the stalled disk.
    recorder = Recorder(path, opener=disk.open, flush_interval_s=0.02, stall_after_s=0.3)
    until(lambda: recorder.open_state() == "open", "the writer to open the file")
    disk.stalled.set()
    queued, slowest = feed_until_failed(recorder, bound=3000)
    assert disk.stuck.is_set()
    assert isinstance(recorder.failure, RecordingStalled)
    assert "no frame for" in str(recorder.failure)
    assert queued < 3000, "seen by time, long before the hard bound"
    assert slowest < 0.5, f"a write took {slowest:.3f} s"
    assert recorder.write(loud(), loud()) is False, "no more audio is taken"

    started = time.monotonic()
    recorder.abort()  # what the media plane does: never blocks
    with pytest.raises(RecordingStalled):
        recorder.close(timeout=0.1)
    assert time.monotonic() - started < 5, "close waits a bounded time"
    assert not disk.files[0].closed, "the stuck writer still holds the file"

    disk.release.set()  # the disk comes back: the writer finishes on its own
    until(lambda: disk.files[0].closed, "the writer to close the file")
    with wave.open(str(path), "rb") as reader:  # closed as well as could be: a valid WAV
        assert (reader.getnchannels(), reader.getframerate()) == (1, RATE)


def test_the_queue_never_grows_past_its_bound(tmp_path: pathlib.Path) -> None:
    disk = FaultyDisk()
    recorder = Recorder(
        tmp_path / "bound.wav",
        opener=disk.open,
        flush_interval_s=0.02,
        stall_after_s=60,
        max_queued_frames=40,
    )
    until(lambda: recorder.open_state() == "open", "the writer to open the file")
    disk.stalled.set()
    frame = loud()
    assert recorder.write(frame, frame)
    until(disk.stuck.is_set, "the writer to block on the disk")
    results = [recorder.write(frame, frame) for _ in range(200)]  # far faster than real time
    assert recorder.queued_frames == 40
    assert results.count(True) == 40 and not any(results[40:])
    assert isinstance(recorder.failure, RecordingStalled)
    assert "40 frames wait" in str(recorder.failure)
    disk.release.set()
    recorder.abort()
    until(lambda: disk.files[0].closed, "the writer to close the file")
    assert recorder.queued_frames == 0, "the writer dropped what waited"


def test_a_full_disk_fails_the_recording_and_keeps_what_was_written(
    tmp_path: pathlib.Path,
) -> None:
    disk = FaultyDisk()
    path = tmp_path / "full.wav"
    recorder = Recorder(path, opener=disk.open, flush_interval_s=0.02)
    before = loud(FRAME * 5, seed=1)
    for start in range(0, len(before), FRAME):
        assert recorder.write(before[start : start + FRAME], before[start : start + FRAME])
    recorder.flush()
    disk.full.set()
    feed_until_failed(recorder, bound=3000)
    failure = recorder.failure
    assert type(failure) is RecordingError
    assert isinstance(failure.__cause__, OSError) and failure.__cause__.errno == errno.ENOSPC
    assert "No space left on device" in str(failure)
    assert recorder.write(loud(), loud()) is False
    with pytest.raises(RecordingError, match="No space left"):
        recorder.close()
    assert disk.files[0].closed
    with wave.open(str(path), "rb") as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert np.array_equal(samples, np.clip(before.astype(np.int32) * 2, -32768, 32767))


def test_a_disk_full_at_the_start_is_a_recording_error(tmp_path: pathlib.Path) -> None:
    disk = FaultyDisk()
    disk.full.set()
    recorder = Recorder(tmp_path / "x.wav", opener=disk.open)
    until(lambda: recorder.open_state() == "failed", "the writer to fail opening the file")
    assert type(recorder.failure) is RecordingError
    assert "cannot open" in str(recorder.failure)
    assert isinstance(recorder.failure.__cause__, OSError)
    assert recorder.write(loud(), loud()) is False
    with pytest.raises(RecordingError, match="cannot open"):
        recorder.close()
    assert disk.files[0].closed, "no descriptor is left open"


def test_a_disk_that_stalls_on_open_never_holds_up_the_caller(tmp_path: pathlib.Path) -> None:
    disk = FaultyDisk()
    disk.stalled.set()
    started = time.perf_counter()
    recorder = Recorder(tmp_path / "deep" / "x.wav", opener=disk.open, stall_after_s=0.3)
    assert recorder.open_state() == "opening"
    assert recorder.write(loud(), loud()), "audio is queued while the file opens"
    assert time.perf_counter() - started < 0.5, "neither the constructor nor write waited"
    until(disk.stuck.is_set, "the writer to block opening the file")
    assert (tmp_path / "deep").is_dir(), "the writer made the directory"
    until(lambda: recorder.open_state() == "failed", "the open to count as stalled")
    assert isinstance(recorder.failure, RecordingStalled)
    assert "not opened within 0.3 s" in str(recorder.failure)
    recorder.abort()
    disk.release.set()  # the open returns at last: the writer closes what it opened
    until(lambda: bool(disk.files) and disk.files[0].closed, "the writer to close the file")


def test_a_unique_recording_never_writes_over_a_file(tmp_path: pathlib.Path) -> None:
    taken = tmp_path / "name.wav"
    taken.write_bytes(b"someone else's")
    first = Recorder(taken, unique=True)
    second = Recorder(taken, unique=True)
    first.close(), second.close()
    assert {first.path.name, second.path.name} == {"name-2.wav", "name-3.wav"}
    assert taken.read_bytes() == b"someone else's"
    with pytest.raises(RecordingError, match="File exists"):
        Recorder(taken, opener=lambda path: io.FileIO(path, "x")).close()


# ---- through the app ----------------------------------------------------------------------------
@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def faulty(h: Harness) -> tuple[FaultyDisk, list[str]]:
    """The app's recordings go to a faulty disk; returns it and the failures counted."""
    disk, counted = FaultyDisk(), list[str]()
    h.runtime.plane.recordings.opener = disk.open
    h.runtime.plane.recordings.on_failed = counted.append
    return disk, counted


def left_channel(path: pathlib.Path) -> NDArray[np.int16]:
    with wave.open(str(path), "rb") as reader:
        assert reader.getnchannels() == 2
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return frames[0::2]


async def test_a_full_disk_ends_the_recording_with_an_error_and_the_call_goes_on(
    h: Harness,
) -> None:
    disk, counted = faulty(h)
    a = await h.up(media=PCMU_8K)
    b = await h.up(media=PCMA_8K)  # another codec: the tick mixes
    h.speak(a, 440)
    h.speak(b, 1000)
    await h.bridged(a, b)
    await h.ok(a, "record_start", format="wav", channels="dual")
    await h.outputs[a].collect(5)
    disk.full.set()

    error = await h.receiver.next("call.recording.error", a)
    payload = error.payload
    # The SDK's own model (strict pydantic: its Literal of reasons included) takes it as it is.
    event = CallRecordingErrorWebhookEvent.model_validate(error.body)
    assert event.data is not None and event.data.payload is not None
    assert event.data.payload.reason == "Internal server error"
    assert event.data.payload.call_control_id == a
    assert payload["callbridge_reason"] == "write_failed"
    assert "No space left on device" in payload["callbridge_reason_detail"]
    assert str(h.runtime.plane.recordings.directory) not in payload["callbridge_reason_detail"]
    assert payload["recording_id"].startswith(f"{a}/recording/")
    assert counted == ["write_failed"]
    assert a not in h.runtime.plane.recordings, "the tap no longer feeds it"
    await eventually(lambda: disk.files[0].closed, "the failed file to be closed")

    # The call goes on: both legs still hear each other through the mixer.
    got_a, got_b = await asyncio.gather(h.outputs[a].collect(25), h.outputs[b].collect(25))
    assert share(h.outputs[a].samples(got_a[-20:]), 1000) > 0.9
    assert share(h.outputs[b].samples(got_b[-20:]), 440) > 0.9
    assert h.state(a) == "bridged"

    # No recording is in progress any more: a new one starts, and is saved.
    disk.full.clear()
    await h.ok(a, "record_start", format="wav", channels="dual")
    await h.outputs[a].collect(25)
    await h.ok(a, "record_stop")
    saved = await h.receiver.next("call.recording.saved", a)
    assert saved.payload["recording_id"] != payload["recording_id"]
    path = await h.recording_file(saved.payload["recording_urls"]["wav"])
    assert share(left_channel(path)[-2000:], 440) > 0.9
    types = await h.barrier(a)
    assert types.count("call.recording.saved") == 1, "nothing is saved of the failed one"
    assert types.index("call.recording.error") < types.index("call.recording.saved")


async def test_a_disk_full_when_the_leg_hangs_up_is_an_error_not_a_saved_recording(
    h: Harness,
) -> None:
    disk, counted = faulty(h)
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.outputs[a].collect(3)
    disk.full.set()  # whether the writer or the close meets it first, the recording is lost
    await h.hung_up(a, HangupCause.NORMAL_CLEARING)
    error = await h.receiver.next("call.recording.error", a)
    assert error.payload["callbridge_reason"] == "write_failed"
    assert counted == ["write_failed"]
    await h.runtime.settle()  # the close, if it met the full disk, has reported
    leg = h.runtime.machine.leg(a)
    assert (leg.recording_id, leg.recordings_unsaved) == (None, ()), "none can be saved later"
    assert "call.recording.saved" not in h.receiver.types(a)


async def test_a_recording_whose_file_cannot_be_created_is_an_error(h: Harness) -> None:
    disk, counted = faulty(h)
    a = await h.up()
    disk.full.set()
    await h.ok(a, "record_start", format="wav", channels="single")
    error = await h.receiver.next("call.recording.error", a)
    assert error.payload["callbridge_reason"] == "write_failed"
    assert counted == ["write_failed"]
    disk.full.clear()
    await h.ok(a, "record_start", format="wav", channels="single")  # not "already recording"
    await h.ok(a, "record_stop")
    await h.receiver.next("call.recording.saved", a)


async def test_a_disk_that_stalls_on_open_holds_up_neither_the_command_nor_the_call(
    h: Harness,
) -> None:
    disk, counted = faulty(h)
    h.runtime.plane.recordings.stall_after_s = 1.0
    a = await h.up(media=PCMU_8K)
    b = await h.up(media=PCMA_8K)  # another codec: the tick mixes
    h.speak(a, 440)
    h.speak(b, 1000)
    await h.bridged(a, b)
    disk.stalled.set()
    await h.ok(a, "record_start", format="wav", channels="dual")  # answered: nothing waits
    await eventually(disk.stuck.is_set, "the writer to block opening the file")
    # The tick goes on while the open is stuck: both parties keep hearing each other.
    got_a, got_b = await asyncio.gather(h.outputs[a].collect(25), h.outputs[b].collect(25))
    assert share(h.outputs[a].samples(got_a[-20:]), 1000) > 0.9
    assert share(h.outputs[b].samples(got_b[-20:]), 440) > 0.9
    error = await h.receiver.next("call.recording.error", a)
    assert error.payload["callbridge_reason"] == "disk_stalled"
    assert counted == ["disk_stalled"]
    assert await h.client.app[STORE].load_live_recordings() == [], "never open: not stored"
    assert h.state(a) == "bridged"
    disk.release.set()
    await eventually(lambda: all(f.closed for f in disk.files), "the late open to be closed")


async def test_a_recording_stopped_before_its_file_opens_is_saved(h: Harness) -> None:
    disk, counted = faulty(h)
    a = await h.up()
    h.speak(a, 440)
    disk.stalled.set()
    await h.ok(a, "record_start", format="wav", channels="single")
    await eventually(disk.stuck.is_set, "the writer to block opening the file")
    await h.outputs[a].collect(5)
    await h.ok(a, "record_stop")
    disk.stalled.clear()
    disk.release.set()
    saved = await h.receiver.next("call.recording.saved", a)
    path = await h.recording_file(saved.payload["recording_urls"]["wav"])
    with wave.open(str(path), "rb") as reader:
        assert reader.getnframes() > 0, "what was recorded while the file opened is in it"
    assert counted == []
    await h.runtime.settle()
    assert await h.client.app[STORE].load_live_recordings() == []


async def test_a_recording_is_stored_for_a_restart_once_its_file_is_open(h: Harness) -> None:
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single", custom_file_name="same")
    b = await h.up()
    await h.ok(b, "record_start", format="wav", channels="single", custom_file_name="same")
    store = h.client.app[STORE]

    async def stored() -> dict[str, str]:
        return {r.call_control_id: r.path for r in await store.load_live_recordings()}

    async with asyncio.timeout(WAIT_S):
        while len(await stored()) < 2:
            await h.outputs[a].collect(1)  # a tick passes: the opened files are stored
    paths = await stored()
    assert sorted(Path(p).name for p in paths.values()) == ["same-2.wav", "same.wav"]
    for leg in (a, b):
        assert (h.runtime.plane.recordings.directory / paths[leg]).is_file()


def test_failed_recordings_are_counted_by_reason() -> None:
    metrics = Metrics()
    for reason in FAILURE_REASONS:
        metrics.recording_failed(reason)
    metrics.recording_failed("disk_stalled")
    text = metrics.render().decode()
    assert 'callbridge_recordings_failed_total{reason="disk_stalled"} 2.0' in text
    assert 'callbridge_recordings_failed_total{reason="write_failed"} 1.0' in text
