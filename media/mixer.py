"""The mixer: one vectorised pass over every room per tick, and two-party passthrough.

Each leg owns a *slot*: one row in preallocated arrays (its queued input bytes, its decoded frame,
what it hears). A tick takes one frame per leg, decodes every G.711 group with one table lookup,
mixes every room at once (rooms grouped by size; no Python loop over rooms or samples), adds the
per-leg overlays, clips to int16 and encodes every codec group with one table lookup. Membership
and gains live in ``media.rooms``; the index arrays are rebuilt only when they change.

Mixing, per room of k legs with hear-matrix ``G`` (see ``media.rooms``)::

    heard[listener] = clip(sum over speakers of G[listener, speaker] * spoken[speaker] + overlay)

Default rooms (plain mix-minus) are summed in int32 (exact): two-party rooms are a swap, larger
ones are sum-minus-self. Rooms with any other matrix go through a batched float32 matmul, rounded
half to even; gains of 0 and 1, and dyadic gains such as 0.5, stay exact.

Frame-size policy: providers do not promise 20 ms chunks, so ``put_frame`` accepts any length and
appends to the leg's queue; each tick consumes exactly one frame (``AudioFormat.frame_bytes``) from
every queue that holds one. A leg with less than a frame queued is silent for that tick and keeps
its partial bytes; the tick after, they complete. With ``cushion_at_start`` a leg's input is first
consumed once two frames are queued (and again whenever it returns from passthrough): the one-frame
cushion that rides out arrival jitter then exists from the start, where otherwise the first frame
to arrive a little late would build it, after a silent frame. A queue holds at most
``queue_frames`` frames;
beyond that the oldest whole frames are dropped (bounded latency, sample alignment kept) and
counted in ``counters.bytes_dropped``.

Formats per direction: ``add_leg`` takes the format a leg sends (input, decoded per tick) and,
when it differs, the format it decodes (output, what the tick encodes for it). Providers declare
the two separately (Telnyx's ``stream_codec`` and ``stream_bidirectional_codec``), and encoding a
leg's output in its input codec garbles a call whose two differ (A-law heard as mu-law).

Passthrough: a two-party room whose legs each speak the other's output format, with nothing else
to do (see ``media.rooms``), is skipped by the tick; ``put_frame`` returns ``[(peer, payload)]``
with the caller's bytes, untouched.

In-band DTMF (``set_detect``): the tick runs ``media.dtmf.DtmfDetector`` over the decoded input of
every leg with detection on, in one vectorised call, after mixing, and reports each new digit in
``TickResult.digits``. Legs in a mixed room or in none are decoded anyway; a passthrough leg with
detection is *sniffed*: ``put_frame`` forwards its bytes and also queues them, and the tick decodes
them without mixing (so turning detection on costs a passthrough leg the queue write and its share
of one decode). ``mute_for`` silences a leg toward chosen listeners (the DTMF mute's tool).

Legs in no room, or alone in one, hear silence (plus their overlay, e.g. a hold tone): the tick
still sends them a frame every 20 ms. Taps report int16 frames at the mixer's rate: what the leg
hears (after clipping, before encoding) and what it said (silence when its frame was missing).
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import NDArray

from media.codecs import (
    ALAW_DECODE,
    ALAW_ENCODE,
    ULAW_DECODE,
    ULAW_ENCODE,
    AudioFormat,
    Resampler,
    decode,
    encode,
)
from media.dtmf import DtmfDetector
from media.mix_results import SHED_AFTER_TICKS, MixerCounters, Overlay, TickResult
from media.rooms import (
    DuplicateLeg,
    FormatGroup,
    InvalidGain,
    Kind,
    Layout,
    LegFormats,
    NotInRoom,
    Rooms,
    UnknownLeg,
    UnknownRoom,
    kind_of,
)

__all__ = [
    "DuplicateLeg",
    "InvalidGain",
    "Mixer",
    "MixerCounters",
    "NotInRoom",
    "Overlay",
    "TickResult",
    "UnknownLeg",
    "UnknownRoom",
]

_LO, _HI = -32768, 32767


def _l16_dtype(fmt: AudioFormat) -> np.dtype[np.int16]:
    return np.dtype(">i2" if fmt.byte_order == "big" else "<i2")


class Mixer:
    """Mixes the rooms of the legs it knows; one instance per worker process."""

    _inbuf: NDArray[np.uint8]  # (capacity, width): each slot's queued input bytes
    _fill: NDArray[np.int64]  # bytes queued per slot
    _primed: NDArray[np.bool_]  # input consumed since the slot became active (cushion_at_start)

    def __init__(
        self,
        frame_ms: int = 20,
        sample_rate: int = 8000,
        capacity: int = 1024,
        *,
        passthrough: bool = True,
        queue_frames: int = 4,
        cushion_at_start: bool = False,
    ) -> None:
        self.frame_ms = frame_ms
        self.sample_rate = sample_rate
        self.samples = sample_rate * frame_ms // 1000
        self.counters = MixerCounters()
        self._queue_frames = queue_frames
        self._cushion_at_start = cushion_at_start
        self._rooms = Rooms(passthrough=passthrough)
        self._peers = self._rooms.peers  # the same dicts, read on every put_frame
        self._forward = self._rooms.forward
        self._detector: DtmfDetector | None = None  # made when a leg first turns detection on
        self._slot_of: dict[str, int] = {}
        self._overlays: dict[str, Overlay] = {}
        # Per-leg filter state for legs whose input or output rate is not the mixer's.
        self._in_resamplers: dict[str, Resampler] = {}
        self._out_resamplers: dict[str, Resampler] = {}
        self._layout: Layout | None = None
        self._capacity = 0
        self._width = 0
        self._free: list[int] = []
        self._frame_bytes: list[int] = []
        self._queue_bytes: list[int] = []
        self._leg_at: list[str] = []  # slot -> leg id (stale for free slots)
        self._standing: list[int] = []  # ticks in a row a slot kept a whole extra frame queued
        self._allocate(max(1, capacity), queue_frames * 2 * self.samples)

    # -- buffers ----------------------------------------------------------------------------

    def _allocate(self, capacity: int, width: int) -> None:
        """(Re)allocate the slot arrays, keeping every existing slot's contents."""
        old = self._capacity
        inbuf = np.zeros((capacity, width), dtype=np.uint8)
        fill = np.zeros(capacity, dtype=np.int64)
        primed = np.zeros(capacity, dtype=bool)  # input consumed since it became active
        if old:
            inbuf[:old, : self._width] = self._inbuf
            fill[:old] = self._fill
            primed[:old] = self._primed
        self._primed = primed
        self._inbuf = inbuf
        self._fill = fill
        self._inview = inbuf.data.cast("B")  # flat, for cheap writes in put_frame
        self._fillview = fill.data
        self._pcm = np.zeros((capacity, self.samples), dtype=np.int16)  # what each leg said
        self._acc = np.zeros((capacity, self.samples), dtype=np.int32)  # what each leg hears
        self._free.extend(range(old, capacity))
        heapq.heapify(self._free)
        self._frame_bytes.extend([0] * (capacity - old))
        self._queue_bytes.extend([0] * (capacity - old))
        self._leg_at.extend([""] * (capacity - old))
        self._standing.extend([0] * (capacity - old))
        self._capacity = capacity
        self._width = width

    @property
    def capacity(self) -> int:
        return self._capacity

    # -- membership (the seam) --------------------------------------------------------------

    def add_leg(self, leg_id: str, fmt: AudioFormat, out: AudioFormat | None = None) -> None:
        """Know a leg that sends ``fmt`` and decodes ``out`` (``fmt`` when None); in no room."""
        if leg_id in self._slot_of:
            raise DuplicateLeg(leg_id)
        formats = LegFormats(fmt, fmt if out is None else out)
        frame_bytes = fmt.frame_bytes(self.frame_ms)
        # Made first: they refuse a rate they cannot convert before anything is changed.
        in_resampler = self._in_resampler(formats.inbound)
        out_resampler = self._out_resampler(formats.outbound)
        queue_bytes = self._queue_frames * frame_bytes
        if not self._free or queue_bytes > self._width:
            capacity = self._capacity * 2 if not self._free else self._capacity
            self._allocate(capacity, max(self._width, queue_bytes))
        slot = heapq.heappop(self._free)
        self._rooms.add(leg_id, formats, slot, self.frame_ms)
        self._slot_of[leg_id] = slot
        self._frame_bytes[slot] = frame_bytes
        self._queue_bytes[slot] = queue_bytes
        self._leg_at[slot] = leg_id
        self._fill[slot] = 0
        self._primed[slot] = False
        self._standing[slot] = 0
        if in_resampler is not None:
            self._in_resamplers[leg_id] = in_resampler
        if out_resampler is not None:
            self._out_resamplers[leg_id] = out_resampler

    def _in_resampler(self, fmt: AudioFormat) -> Resampler | None:
        if kind_of(fmt, self.sample_rate) is not Kind.RESAMPLED:
            return None
        return Resampler(fmt.sample_rate, self.sample_rate)

    def _out_resampler(self, fmt: AudioFormat) -> Resampler | None:
        if kind_of(fmt, self.sample_rate) is not Kind.RESAMPLED:
            return None
        return Resampler(self.sample_rate, fmt.sample_rate)

    def remove_leg(self, leg_id: str) -> None:
        """Forget the leg; it also leaves its room."""
        state = self._rooms.remove(leg_id)
        del self._slot_of[leg_id]
        self._overlays.pop(leg_id, None)
        self._in_resamplers.pop(leg_id, None)
        self._out_resamplers.pop(leg_id, None)
        heapq.heappush(self._free, state.slot)

    def join(self, leg_id: str, room_id: str) -> None:
        """Put the leg in the room, creating it; a leg in another room moves."""
        self._rooms.join(leg_id, room_id)

    def leave(self, leg_id: str) -> None:
        """The leg stays known, in no room: it hears silence and nobody hears it."""
        self._rooms.leave(leg_id)

    def room_of(self, leg_id: str) -> str | None:
        return self._rooms.room_of(leg_id)

    def members(self, room_id: str) -> tuple[str, ...]:
        """Legs of the room in joining order; () for a room with no members."""
        return self._rooms.members(room_id)

    def is_passthrough(self, room_id: str) -> bool:
        return self._rooms.is_passthrough(room_id)

    # -- hear-matrix ------------------------------------------------------------------------

    def set_gain(self, room_id: str, listener: str, speaker: str, gain: float) -> None:
        """How loud ``listener`` hears ``speaker``, from the next tick; lasts while both stay."""
        self._rooms.set_gain(room_id, listener, speaker, gain)

    def gain(self, room_id: str, listener: str, speaker: str) -> float:
        """The effective gain, mute and deaf included."""
        return self._rooms.gain(room_id, listener, speaker)

    def mute(self, leg_id: str, on: bool = True) -> None:
        """Nobody hears the leg (it follows the leg between rooms)."""
        self._rooms.set_flag(leg_id, "muted", on)

    def deafen(self, leg_id: str, on: bool = True) -> None:
        """The leg hears no one in its room; its overlay still plays."""
        self._rooms.set_flag(leg_id, "deaf", on)

    def reset_gains(self, room_id: str) -> None:
        """Plain mix-minus again: pair gains dropped, members unmuted and undeafened."""
        self._rooms.reset_gains(room_id)

    def mute_for(self, leg_id: str, listeners: frozenset[str]) -> None:
        """From the next tick, exactly ``listeners`` do not hear the leg (frozenset() for none).

        It follows the leg and applies in any room it shares with a listener; while it names
        anyone, the leg's room is mixed, never passthrough.
        """
        self._rooms.mute_for(leg_id, listeners)

    # -- in-band DTMF -----------------------------------------------------------------------

    def set_detect(self, leg_id: str, on: bool) -> None:
        """Run in-band DTMF detection on what the leg says; new digits come in TickResult."""
        state = self._rooms.leg(leg_id)
        if on and self._detector is None:
            if self.frame_ms != 20:
                raise ValueError(f"DTMF detection needs 20 ms frames, not {self.frame_ms} ms")
            self._detector = DtmfDetector(self.sample_rate)
        if self._detector is not None and state.detect != on:
            self._detector.ensure_capacity(self._capacity)
            self._detector.reset_row(state.slot)  # a leg starts, or ends, with no digit held
        self._rooms.set_flag(leg_id, "detect", on)

    def dtmf_held(self, leg_id: str) -> str | None:
        """The digit the leg is in the middle of, as the detector last saw it; None if none."""
        state = self._rooms.leg(leg_id)
        if self._detector is None or not state.detect:
            return None
        return self._detector.held(state.slot)

    # -- overlays and taps ------------------------------------------------------------------

    def set_overlay(self, leg_id: str, source: Overlay | None) -> None:
        """Extra audio only this leg hears (ringback, playback), summed in before clipping."""
        self._rooms.set_flag(leg_id, "overlaid", source is not None)
        if source is None:
            self._overlays.pop(leg_id, None)
        else:
            self._overlays[leg_id] = source

    def set_tap(self, leg_id: str, on: bool) -> None:
        """Report the leg's heard and spoken frames in every TickResult (for recording)."""
        self._rooms.set_flag(leg_id, "tapped", on)

    # -- media in ---------------------------------------------------------------------------

    def put_frame(self, leg_id: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Queue audio from a leg; in passthrough, return what to send to its peer now."""
        peer = self._forward.get(leg_id)
        if peer is not None:
            return [(peer, payload)]
        slot = self._slot_of.get(leg_id)
        if slot is None:
            raise UnknownLeg(leg_id)
        size = len(payload)
        fill = self._fillview[slot]
        if fill + size <= self._queue_bytes[slot]:
            start = slot * self._width + fill
            self._inview[start : start + size] = payload
            self._fillview[slot] = fill + size
        else:
            self._overflow(slot, payload)
        peer = self._peers.get(leg_id)  # a sniffed leg: queued for detection, and forwarded
        return [] if peer is None else [(peer, payload)]

    def _overflow(self, slot: int, payload: bytes) -> None:
        frame = self._frame_bytes[slot]
        data = self._inbuf[slot, : self._fill[slot]].tobytes() + bytes(payload)
        excess = len(data) - self._queue_bytes[slot]
        dropped = -(-excess // frame) * frame  # whole frames, oldest first
        data = data[dropped:]
        self._inbuf[slot, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._fill[slot] = len(data)
        self.counters.bytes_dropped += dropped

    # -- the tick ---------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Consume one frame per mixed leg and return what each of them hears."""
        layout = self._layout
        if layout is None or layout.version != self._rooms.version:
            layout = self._relayout()
        self.counters.ticks += 1
        if not layout.active.size:
            return TickResult([], [])
        self._take_input(layout)
        self._mix(layout)
        digits = self._detect(layout.detect) if layout.detect.size else []
        frames: list[tuple[str, bytes]] = []
        for group in layout.groups:
            if group.out_kind is Kind.RESAMPLED:
                self._encode_resampled(group, frames)
            else:
                self._encode(group, frames)
        taps = [
            (leg_id, self._clipped(self._acc[slot]), self._pcm[slot].copy())
            for leg_id, slot in layout.taps
        ]
        return TickResult(frames, taps, digits)

    def _detect(self, slots: NDArray[np.intp]) -> list[tuple[str, str]]:
        assert self._detector is not None  # set_detect made it
        if slots[-1] == slots.size - 1:  # ascending and unique: exactly slots 0 .. n-1
            found = self._detector.process(self._pcm[: slots.size])
        else:
            found = self._detector.process(np.take(self._pcm, slots, axis=0), slots)
        return [(self._leg_at[slot], digit) for slot, digit in found]

    def _relayout(self) -> Layout:
        previous = self._layout
        layout = self._rooms.layout(self.sample_rate)
        # Bytes queued by a leg that has just entered passthrough would otherwise play, stale,
        # when it leaves; a leg that starts being resampled again starts from fresh filter state.
        idle = np.ones(self._capacity, dtype=bool)
        idle[layout.active] = False
        self._fill[idle] = 0
        self._primed[idle] = False
        for group in layout.groups:
            resampled_in = group.kind is Kind.RESAMPLED
            resampled_out = group.out_kind is Kind.RESAMPLED
            if not (resampled_in or resampled_out) or previous is None:
                continue
            mixed = [g.slots for g in previous.groups]
            returning = ~np.isin(group.slots, np.concatenate(mixed) if mixed else [])
            decoded = np.isin(group.slots, previous.active)  # sniffed: its decoder kept going
            legs = np.array(group.leg_ids)[returning].tolist()
            for leg_id, kept in zip(legs, decoded[returning].tolist(), strict=True):
                if resampled_out:
                    self._out_resamplers[leg_id] = Resampler(
                        self.sample_rate, group.fmt.outbound.sample_rate
                    )
                if resampled_in and not kept:
                    self._in_resamplers[leg_id] = Resampler(
                        group.fmt.inbound.sample_rate, self.sample_rate
                    )
        self._layout = layout
        return layout

    def _take_input(self, layout: Layout) -> None:
        """Decode one frame per active slot into ``_pcm``; silence where none is queued."""
        pcm, inbuf = self._pcm, self._inbuf
        active, need = layout.active, layout.active_frame_bytes
        if self._cushion_at_start:
            # Mixed legs only: a sniffed leg is only listened to for DTMF, and a cushion there
            # would just delay detection.
            need = np.where(layout.active_mixed & ~self._primed[active], 2 * need, need)
        has = self._fill[active] >= need
        self._primed[active[has]] = True
        for group in layout.groups + layout.sniffed:
            slots, size = group.slots, group.frame_bytes
            if group.kind is Kind.ULAW:
                pcm[slots] = np.take(ULAW_DECODE, inbuf[slots, :size])
            elif group.kind is Kind.ALAW:
                pcm[slots] = np.take(ALAW_DECODE, inbuf[slots, :size])
            elif group.kind is Kind.L16:
                pcm[slots] = inbuf[slots, :size].view(_l16_dtype(group.fmt.inbound))
            else:
                self._decode_resampled(group)
        missing = layout.active[~has]
        if missing.size:
            pcm[missing] = 0
        got = layout.active[has]
        self._fill[got] -= layout.active_frame_bytes[has]
        self.counters.frames_mixed += got.size
        self.counters.frames_missing += missing.size
        # Slots that had more than one frame queued: move the rest to the front of the row.
        standing = self._standing
        for slot in got[self._fill[got] > 0].tolist():
            frame, rest = self._frame_bytes[slot], self._fillview[slot]
            skip = frame
            if rest < 2 * frame:
                # One spare frame is the cushion that rides out arrival jitter: keep it.
                standing[slot] = 0
            elif standing[slot] + 1 < SHED_AFTER_TICKS:
                standing[slot] += 1
            else:
                # Two whole frames have stood in this queue for SHED_AFTER_TICKS ticks: a burst
                # left them behind, and they would add 40 ms to everything this leg says for
                # the rest of the call. Drop the oldest frame to get back near real time.
                standing[slot] = 0
                skip += frame
                rest -= frame
                self._fillview[slot] = rest
                self.counters.frames_shed += 1
            if rest:
                inbuf[slot, :rest] = inbuf[slot, skip : skip + rest].copy()

    def _decode_resampled(self, group: FormatGroup) -> None:
        n = self.samples
        for leg_id, slot in zip(group.leg_ids, group.slots.tolist(), strict=True):
            if not self._primed[slot] or self._fillview[slot] < group.frame_bytes:
                continue  # zeroed with the other missing frames
            start = slot * self._width
            raw = self._inview[start : start + group.frame_bytes].tobytes()
            samples = self._in_resamplers[leg_id].process(decode(group.fmt.inbound, raw))[:n]
            self._pcm[slot, : samples.size] = samples
            self._pcm[slot, samples.size :] = 0

    def _mix(self, layout: Layout) -> None:
        """Fill ``_acc`` (int32, unclipped) with what every active leg hears."""
        pcm, acc = self._pcm, self._acc
        if layout.silent.size:
            acc[layout.silent] = 0
        if layout.swap_dst.size:
            acc[layout.swap_dst] = np.take(pcm, layout.swap_src, axis=0)
        for rows in layout.sums:
            spoken = np.take(pcm, rows, axis=0)  # (R, k, n)
            total = spoken.sum(axis=1, dtype=np.int32)
            acc[rows] = total[:, None, :] - spoken
        for rows, gains in layout.weighted:
            heard = np.matmul(gains, np.take(pcm, rows, axis=0).astype(np.float32))
            np.rint(heard, out=heard)
            np.clip(heard, _LO, _HI, out=heard)  # a gain of 1000 must not overflow int32
            acc[rows] = heard
        n = self.samples
        for leg_id, slot in layout.overlays:
            extra = np.asarray(self._overlays[leg_id](n))[:n]
            acc[slot, : extra.size] += extra

    def _clipped(self, heard: NDArray[np.int32]) -> NDArray[np.int16]:
        return np.clip(heard, _LO, _HI).astype(np.int16)

    def _encode(self, group: FormatGroup, frames: list[tuple[str, bytes]]) -> None:
        heard = np.take(self._acc, group.slots, axis=0)
        samples = np.clip(heard, _LO, _HI, out=heard).astype(np.int16)
        if group.out_kind is Kind.ULAW:
            data = np.take(ULAW_ENCODE, samples.view(np.uint16)).tobytes()
        elif group.out_kind is Kind.ALAW:
            data = np.take(ALAW_ENCODE, samples.view(np.uint16)).tobytes()
        else:
            data = samples.astype(_l16_dtype(group.fmt.outbound)).tobytes()
        size = group.out_frame_bytes
        starts = zip(group.leg_ids, range(0, len(data), size), strict=True)
        frames += [(leg_id, data[at : at + size]) for leg_id, at in starts]

    def _encode_resampled(self, group: FormatGroup, frames: list[tuple[str, bytes]]) -> None:
        for leg_id, slot in zip(group.leg_ids, group.slots.tolist(), strict=True):
            samples = self._out_resamplers[leg_id].process(self._clipped(self._acc[slot]))
            frames.append((leg_id, encode(group.fmt.outbound, samples)))
