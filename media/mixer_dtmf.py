"""The mixer's in-band DTMF detection: one ``media.dtmf.DtmfDetector`` over its slots.

It runs, vectorised, over the decoded input of every mixed leg with detection on that had a
frame (a missing frame is not the caller's silence), and over what *sniffed* legs (passthrough
with detection) sent, kept by one append each in ``media.sniff_batch`` and decoded per format
when taken: prompt legs (heard by a DTMF-muted listener: ``set_prompt``) every tick, relaxed ones
every ``RELAXED_TICKS`` ticks, ``k`` frames per slot in one detector call, and every sniffed
frame on a tick whose rooms changed (a leg mixed from now on has its sniffed frames detected
before its first mixed one). Who then stops hearing whom is not decided here (``Mixer.mute_for``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from media.codecs import AudioFormat, decode_joined
from media.dtmf import DtmfDetector
from media.resample_bank import ResamplerBank
from media.sniff_batch import SniffBatch

__all__ = ["RELAXED_TICKS", "MixerDtmf"]

#: Ticks between detections of relaxed sniffed legs (``media.sniff_batch``): their digits may be
#: reported up to (RELAXED_TICKS - 1) * 20 ms later, for 1/RELAXED_TICKS of the detector calls.
#: 100 ms: far below a webhook's own delivery time; at 100 legs the detector's calls, most of
#: whose cost is fixed and paid with a cold cache in the tick, drop from one every second tick
#: to one every fifth (BENCHMARKS.md, "Engine against a bare forwarder").
RELAXED_TICKS = 5

Digits = list[tuple[str, str]]  # (leg id, digit)


class MixerDtmf:
    """Detection over the mixer's slots; ``detector`` is made when a leg first turns it on."""

    def __init__(self, sample_rate: int, samples: int) -> None:
        self.sample_rate = sample_rate
        self.samples = samples
        self.detector: DtmfDetector | None = None
        self.sniffs = SniffBatch()
        # Listeners whose speakers' digits must be found on the tick they complete (read by the
        # mixer's put_frame, per frame, with the batch's bound ``add``).
        self.prompt: set[str] = set()
        self._take_all = False  # the next tick takes the relaxed sniffed frames too
        self._ticks = 0

    def enable(self) -> DtmfDetector:
        if self.detector is None:
            self.detector = DtmfDetector(self.sample_rate)
        return self.detector

    def restart(self, slot: int, capacity: int) -> None:
        """The slot's leg starts, or ends, detection: no digit held, no earlier frame kept."""
        if self.detector is not None:
            self.detector.ensure_capacity(capacity)
            self.detector.reset_row(slot)
        self.sniffs.forget(slot)

    def held(self, slot: int) -> str | None:
        return None if self.detector is None else self.detector.held(slot)

    def set_prompt(self, listener_id: str, prompt: bool) -> None:
        if prompt != (listener_id in self.prompt):
            self._take_all = True  # its speaker's relaxed frames go first, before prompt ones
        if prompt:
            self.prompt.add(listener_id)
        else:
            self.prompt.discard(listener_id)

    def detect_sniffed(
        self,
        rooms_changed: bool,
        formats: Sequence[AudioFormat],
        bank: Callable[[int, int], ResamplerBank],
        leg_at: Sequence[str],
    ) -> Digits:
        """One tick's detection of sniffed legs: a block (``k`` frames per slot) per call."""
        take_all = rooms_changed or self._take_all or self._ticks % RELAXED_TICKS == 0
        self._take_all = False
        self._ticks += 1
        digits: Digits = []
        for kind, slots, frames, k in self.sniffs.take(take_all):
            assert self.detector is not None  # only legs with detection are sniffed
            fmt = formats[kind]
            rows = np.array(slots, dtype=np.intp)
            spoken = decode_joined(fmt, b"".join(frames)).reshape(k, len(slots), -1)
            if fmt.sample_rate != self.sample_rate:
                resampler = bank(fmt.sample_rate, self.sample_rate)
                spoken = np.stack([resampler.process(rows, f)[:, : self.samples] for f in spoken])
            found = self.detector.process(spoken, rows)
            digits += [(leg_at[slot], digit) for slot, digit in found]
        return digits

    def detect_mixed(
        self, pcm: NDArray[np.int16], slots: NDArray[np.intp], leg_at: Sequence[str]
    ) -> Digits:
        """Detection on the decoded frames of mixed legs (``slots`` that had one)."""
        assert self.detector is not None  # set_detect made it
        if not slots.size:
            return []
        if slots[-1] == slots.size - 1:  # ascending and unique: exactly slots 0 .. n-1
            found = self.detector.process(pcm[: slots.size])
        else:
            found = self.detector.process(np.take(pcm, slots, axis=0), slots)
        return [(leg_at[slot], digit) for slot, digit in found]
