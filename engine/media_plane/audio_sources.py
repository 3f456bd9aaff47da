"""Audio a playback can play: local WAV files, built-in tones, and fetched WAV or MP3 bytes.

Everything here is pure (bytes or a path in, int16 samples at the mixer's rate out) so the
media plane can call it on a file it owns and the audio fetcher (``engine.media_plane.audio_fetch``)
can run it in a worker thread on bytes it downloaded. ``OverlayError`` carries the status of the
``call.playback.ended`` it leads to; the statuses are Telnyx's (the telnyx SDK's
``CallPlaybackEnded`` payload: file_not_found, call_hangup, unknown, cancelled, cancelled_amd,
completed, failed).

Telnyx's ``playback_start`` plays "either a WAV or MP3 file" from ``audio_url`` (telnyx SDK,
``ActionStartPlaybackParams.audio_url``). Fetched audio is judged by its bytes, not by the
``Content-Type`` the server claims (object stores often say ``application/octet-stream``), and
decoded with miniaudio (dr_wav and dr_mp3), which also mixes to mono and resamples.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import miniaudio
import numpy as np
from numpy.typing import NDArray

from media.codecs import Resampler
from media.errors import MediaError
from media.tones import burst_envelope, dbfs_to_amplitude, ringback_cycle

AudioKind = Literal["wav", "mp3"]
# Audio the mixer pulls n samples at a time (continuous across calls).
Source = Callable[[int], NDArray[np.int16]]


class OverlayError(MediaError):
    """An overlay could not be made (missing file, unknown tone); carries a playback status."""

    def __init__(self, detail: str, status: str = "failed") -> None:
        super().__init__(detail)
        self.status = status


def load_wav(path: Path, rate: int) -> NDArray[np.int16]:
    """A local 16-bit mono WAV as int16 at ``rate`` (8 or 16 kHz sources are resampled)."""
    if not path.is_file():
        raise OverlayError(f"no such audio file: {path}", status="file_not_found")
    try:
        with wave.open(str(path), "rb") as reader:
            if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
                raise OverlayError(f"{path} must be 16-bit mono PCM WAV")
            source_rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise OverlayError(f"{path} is not a readable WAV file: {exc}") from None
    samples = samples.astype(np.int16)
    if source_rate != rate:
        if {source_rate, rate} != {8000, 16000}:
            raise OverlayError(f"{path} has a sample rate of {source_rate} Hz; use 8 or 16 kHz")
        samples = Resampler(source_rate, rate).process(samples)
    return samples


#: One pass (a ``loop``) of ``tone-<hz>``: a second of the tone.
TONE_PASS_S = 1.0
TONE_DBFS = -12.0


def builtin_samples(name: str, rate: int) -> NDArray[np.int16]:
    """One pass of a ``media_name`` callbridge knows, played ``loop`` times like a file:
    ``ringback-<country>`` one cadence cycle, ``tone-<hz>`` a second of the tone (callbridge's
    names: Call Control's media_name is a file uploaded to Telnyx, which callbridge has not)."""
    kind, _, arg = name.partition("-")
    if kind == "ringback" and arg:
        try:
            return ringback_cycle(arg, rate)
        except MediaError as exc:
            raise OverlayError(str(exc), status="file_not_found") from None
    if kind == "tone" and arg.isascii() and arg.isdigit() and 20 <= int(arg) <= 3900:
        n = round(TONE_PASS_S * rate)
        wave = np.sin(2 * np.pi * int(arg) * np.arange(n) / rate)
        signal = dbfs_to_amplitude(TONE_DBFS) * burst_envelope(n, rate) * wave
        return np.rint(signal).astype(np.int16)
    raise OverlayError(f"unknown media_name {name!r}", status="file_not_found")


#: ``play_beep``'s beep. Telnyx documents only "a beep sound ... at the start of a recording",
#: no frequency or length: callbridge plays 1 kHz for 250 ms, at -12 dBFS.
BEEP_HZ = 1000
BEEP_S = 0.25
BEEP_DBFS = -12.0


def beep(rate: int) -> NDArray[np.int16]:
    """The start-of-recording beep at ``rate``, soft-edged as every tone burst (media/tones.py)."""
    n = round(BEEP_S * rate)
    wave = np.sin(2 * np.pi * BEEP_HZ * np.arange(n) / rate)
    return np.rint(dbfs_to_amplitude(BEEP_DBFS) * burst_envelope(n, rate) * wave).astype(np.int16)


def sniff_audio(data: bytes) -> AudioKind | None:
    """What the bytes are, from their magic numbers: a RIFF/WAVE file, or MP3 (an ID3v2 tag or
    an MPEG audio frame sync: 11 set bits, then a layer other than "reserved")."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06):
        return "mp3"
    return None


def decode_audio(data: bytes, rate: int, *, max_seconds: float) -> NDArray[np.int16]:
    """WAV or MP3 bytes as mono int16 at ``rate``. ``OverlayError`` ("failed") when the bytes
    are neither, do not decode, or last longer than ``max_seconds`` (checked from the header
    before decoding, so a small file cannot claim hours of audio and fill memory)."""
    kind = sniff_audio(data)
    if kind is None:
        raise OverlayError("not a WAV or MP3 file")
    try:
        info = miniaudio.wav_get_info(data) if kind == "wav" else miniaudio.mp3_get_info(data)
        if info.sample_rate <= 0:
            raise OverlayError(f"the {kind.upper()} file has no sample rate")
        seconds = info.num_frames / info.sample_rate
        if seconds > max_seconds:
            raise OverlayError(
                f"the {kind.upper()} file lasts {seconds:.0f} s; at most {max_seconds:.0f} s"
            )
        decoded = miniaudio.decode(
            data,
            output_format=miniaudio.SampleFormat.SIGNED16,
            nchannels=1,
            sample_rate=rate,
        )
    except miniaudio.MiniaudioError as exc:
        raise OverlayError(f"the {kind.upper()} file does not decode: {exc}") from None
    samples = np.frombuffer(decoded.samples, dtype=np.int16).copy()
    if samples.size == 0:
        raise OverlayError(f"the {kind.upper()} file holds no audio")
    return samples
