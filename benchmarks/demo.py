"""``make demo``: a Twilio caller and a Telnyx caller bridged by callbridge, on real audio.

No provider account needed: callbridge runs in this process with both provider simulators as
its Twilio and Telnyx accounts. A Twilio caller (a 440 Hz tone) and a Telnyx caller (1000 Hz)
dial two numbers on one bridge whose ``webhook_url`` is a tiny application; the application
answers both through the Call Control API and bridges them with ``record: record-from-answer``.
They talk for ~3 s, the Twilio caller hangs up, callbridge hangs up the Telnyx leg and saves the
recording. Written to ``results/demo/``: ``bridged-call.wav`` (callbridge's dual-channel
recording: the Twilio caller on the left, what it heard, the Telnyx caller, on the right) and
``spectrogram.png``; printed: the events in order (both simulators' webhooks, callbridge's
webhooks to the application, the application's commands, when each caller first heard the
other) and the latencies measured on the one monotonic clock.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from adapters.simulators import CallState, SimulatedCall, ToneSource, tone_level_db
from adapters.simulators.pacing import Playout
from benchmarks.loadtest.application import CallControl, PairingApp
from benchmarks.loadtest.engine_host import open_engine
from benchmarks.loadtest.plan import make_plan
from benchmarks.loadtest.provision import Accounts, Platform
from engine.logs import configure_logging

TWILIO_HZ, TELNYX_HZ = 440.0, 1000.0
TALK_FRAMES = 150  # 3 s of 20 ms frames
WAIT_S = 15.0
RECORD = {"record": "record-from-answer", "record_format": "wav", "record_channels": "dual"}
Samples = npt.NDArray[np.int16]


class TimedPlayout(Playout):
    """The provider's playout, unchanged, that also notes when each piece of audio arrived."""

    def __init__(self, max_queued_samples: int | None) -> None:
        super().__init__(max_queued_samples)
        self.arrivals: list[tuple[float, Samples]] = []

    def queue_audio(self, samples: Samples) -> bool:
        self.arrivals.append((time.monotonic(), samples))
        return super().queue_audio(samples)


async def _wait(call: SimulatedCall, ticks: int) -> None:
    start = call.playout_tick
    await call.wait_until(lambda c: c.playout_tick >= start + ticks, WAIT_S)


async def run(out: Path) -> dict[str, Any]:
    plan = make_plan(2, 2, "mixed")  # seat 0 a Twilio caller, seat 1 a Telnyx caller
    twilio_leg, telnyx_leg = plan.legs
    accounts = Accounts()
    app = PairingApp(plan, bridge_options=RECORD)
    await accounts.start()
    await app.start()
    try:
        async with open_engine() as engine, aiohttp.ClientSession() as session:
            app.calls = CallControl(session, engine.base_url, engine.token)
            api = Platform(session, engine.base_url, engine.token, engine.org_handle)
            await accounts.configure(api)
            await api.add_rooms(accounts, plan, plan.rooms, app.url)
            t0 = time.monotonic()
            twilio_tone, telnyx_tone = ToneSource(TWILIO_HZ, -12.0), ToneSource(TELNYX_HZ, -12.0)
            twilio = await accounts.twilio.place_inbound_call(
                twilio_leg.caller, twilio_leg.number, source=twilio_tone
            )
            twilio.playout = twilio_ear = TimedPlayout(twilio.playout.max_queued_samples)
            telnyx = await accounts.telnyx.place_inbound_call(
                telnyx_leg.caller, telnyx_leg.number, source=telnyx_tone
            )
            telnyx.playout = telnyx_ear = TimedPlayout(telnyx.playout.max_queued_samples)
            if not await app.wait_until(lambda: len(app.bridged) == 2, WAIT_S):
                raise RuntimeError(f"the calls were not bridged: {app.errors or app.events}")
            await asyncio.gather(_wait(twilio, TALK_FRAMES), _wait(telnyx, TALK_FRAMES))
            hung_up_at = time.monotonic()
            await twilio.hang_up()
            await telnyx.wait_for(CallState.ENDED, WAIT_S)

            def saved() -> bool:
                return any(e.event_type == "call.recording.saved" for e in app.events)

            await app.wait_until(saved, WAIT_S)
            found = _finish(out, await _recording(session, app), twilio, telnyx)
            found.update(
                t0=t0, hung_up_at=hung_up_at, twilio=twilio, telnyx=telnyx, app=app,
                first_heard={
                    "Twilio caller hears 1000 Hz": _first(twilio_ear, TELNYX_HZ),
                    "Telnyx caller hears 440 Hz": _first(telnyx_ear, TWILIO_HZ),
                },
            )  # fmt: skip
            return found
    finally:
        app.closing = True
        await app.close()
        await accounts.close()


def _first(ear: TimedPlayout, freq_hz: float) -> float | None:
    return next((at for at, s in ear.arrivals if tone_level_db(s, freq_hz) > -30), None)


async def _recording(session: aiohttp.ClientSession, app: PairingApp) -> bytes | None:
    """callbridge's recording, fetched through the signed URL of its webhook (no token needed),
    before the engine goes; None if none was saved."""
    saved = next((e for e in app.events if e.event_type == "call.recording.saved"), None)
    if saved is None:
        return None
    async with session.get(saved.payload["recording_urls"]["wav"]) as response:
        response.raise_for_status()
        return await response.read()


def _finish(
    out: Path, recording: bytes | None, twilio: SimulatedCall, telnyx: SimulatedCall
) -> dict[str, Any]:
    """callbridge's recording, or what each simulated caller heard, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    wav = out / "bridged-call.wav"
    source = "callbridge's recording (record-from-answer, dual channel)"
    if recording is not None:
        wav.write_bytes(recording)
    else:
        source = "what each simulated caller heard (no recording was saved)"
        left, right = twilio.received_audio(), telnyx.received_audio()
        size = min(left.size, right.size)
        _write_stereo(wav, np.stack([left[:size], right[:size]], axis=1))
    return {"wav": wav, "wav_source": source}


def _write_stereo(path: Path, frames: Samples) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(frames.astype("<i2").tobytes())


def _read(path: Path) -> tuple[Samples, int]:
    with wave.open(str(path), "rb") as reader:
        channels = reader.getnchannels()
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return data.reshape(-1, channels).astype(np.int16), channels


def spectrogram(wav: Path, png: Path) -> dict[str, float]:
    """Both channels' spectrograms; returns each tone's level per channel (dBFS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import mlab

    audio, channels = _read(wav)
    names = ["left: the Twilio caller (440 Hz)", "right: what it heard, the Telnyx caller"]
    figure, axes = plt.subplots(channels, 1, figsize=(9, 2.6 * channels + 0.6), dpi=110,
                                sharex=True, squeeze=False)  # fmt: skip
    levels: dict[str, float] = {}
    spectra = []
    for channel in range(channels):
        samples = audio[:, channel].astype(np.float64)
        power, freqs, times = mlab.specgram(samples / 32768, NFFT=256, Fs=8000, noverlap=192)
        spectra.append(10 * np.log10(np.maximum(power, 1e-14)))
        for freq in (TWILIO_HZ, TELNYX_HZ):
            levels[f"channel {channel + 1}, {freq:g} Hz"] = tone_level_db(samples, freq)
    top = max(float(spectrum.max()) for spectrum in spectra)
    for channel, spectrum in enumerate(spectra):
        axis = axes[channel][0]
        image = axis.pcolormesh(times, freqs, spectrum, cmap="magma", vmin=top - 80, vmax=top,
                                shading="auto")  # fmt: skip
        axis.set_ylim(0, 2000)
        axis.set_ylabel("Hz")
        axis.set_title(names[channel] if channels == 2 else "the bridged call", fontsize=10)
        figure.colorbar(image, ax=axis, label="dB")
    axes[-1][0].set_xlabel("seconds since the bridge (recording from answer)")
    figure.suptitle("callbridge: a Twilio call (440 Hz) bridged to a Telnyx call (1000 Hz)")
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
    return levels


def explain(found: dict[str, Any], app: PairingApp, levels: dict[str, float]) -> None:
    t0 = found["t0"]
    names = {0: "Twilio leg", 1: "Telnyx leg"}
    rows: list[tuple[float, str]] = []
    for name, call in (("Twilio", found["twilio"]), ("Telnyx", found["telnyx"])):
        rows.append((call.created_at, f"{name} caller dials {call.to}"))
        for record in call.events:
            status = record.status if record.status is not None else record.error
            rows.append((record.sent_at, f"{name} -> callbridge: {record.kind} webhook ({status})"))
        if call.audio_origin is not None:
            rows.append((call.audio_origin, f"{name} media stream to callbridge starts"))
        if call.ended_at is not None:
            rows.append((call.ended_at, f"{name} call ended ({call.end_reason})"))
    for event in app.events:
        rows.append((event.at, f"callbridge -> app: {event.event_type} "
                               f"({names.get(event.leg or 0, '?')})"))  # fmt: skip
    for sent, answered, action, leg in app.commands:
        rows.append((sent, f"app -> callbridge: actions/{action} ({names.get(leg or 0, '?')}), "
                           f"answered in {(answered - sent) * 1000:.1f} ms"))  # fmt: skip
    rows.append((found["hung_up_at"], "the Twilio caller hangs up"))
    for label, at in found["first_heard"].items():
        if at is not None:
            rows.append((at, f"{label} (first frame)"))
    print("\nWhat happened (ms since the first call was placed):")
    for at, text in sorted(rows):
        print(f"  {(at - t0) * 1000:9.1f}  {text}")
    bridge_sent = next((s for s, _a, action, _l in app.commands if action == "bridge"), None)
    print("\nLatencies measured on one monotonic clock:")
    if bridge_sent is not None:
        for label, at in found["first_heard"].items():
            if at is not None:
                print(f"  bridge command -> {label}: {(at - bridge_sent) * 1000:.1f} ms")
    bridged = max((e.at for e in app.events if e.event_type == "call.bridged"), default=None)
    if bridged is not None:
        print(f"  first call placed -> both legs bridged: {(bridged - t0) * 1000:.1f} ms")
    for sent, answered, action, leg in app.commands:
        print(f"  actions/{action} ({names.get(leg or 0, '?')}): "
              f"answered in {(answered - sent) * 1000:.1f} ms")  # fmt: skip
    print("  (the first audio waits for callbridge's next 20 ms mixing tick: recording taps the "
          "room, so it is mixed rather than passed through; per-frame media latency under "
          "load: `callbridge loadtest`)")  # fmt: skip
    print("\nTone levels in the recording (dBFS):")
    for name, level in levels.items():
        print(f"  {name}: {level:.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    args = parser.parse_args(argv)
    configure_logging("console", "error")
    print("callbridge demo: engine, Twilio simulator and Telnyx simulator in one process")
    found = asyncio.run(run(args.out))
    png = args.out / "spectrogram.png"
    levels = spectrogram(found["wav"], png)
    explain(found, found["app"], levels)
    print(f"\nwrote {found['wav']} ({found['wav_source']})")
    print(f"wrote {png}")
    both = levels.get("channel 1, 440 Hz", -200.0), levels.get("channel 2, 1000 Hz", -200.0)
    return 0 if min(both) > -20 else 1


if __name__ == "__main__":
    sys.exit(main())
