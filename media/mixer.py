"""The mixer: one vectorised pass over every room per tick, and two-party passthrough.

Each leg owns a *slot*: one row in preallocated arrays (its queued input bytes, its decoded frame,
what it hears). A tick takes one frame per leg, decodes every G.711 group with one table lookup,
mixes every room at once (rooms grouped by size; no Python loop over rooms or samples), adds the
per-leg overlays, clips to int16 and encodes every codec group with one table lookup. Legs at
another rate (L16 at 16 kHz) are resampled a whole format group at a time, one matrix product
per direction (``media.resample_bank``). Membership and gains live in ``media.rooms``; the index
arrays are rebuilt only when they change.

Mixing, per room of k legs with hear-matrix ``G`` (see ``media.rooms``)::

    heard[listener] = clip(sum over speakers of G[listener, speaker] * spoken[speaker] + overlay)

Default rooms (plain mix-minus) are summed in int32 (exact): two-party rooms are a swap, larger
ones are sum-minus-self. Rooms with any other matrix go through a batched float32 matmul, rounded
half to even; gains of 0 and 1, and dyadic gains such as 0.5, stay exact.

Frame sizes: ``put_frame`` takes any length (providers promise no 20 ms chunks) into the leg's
ring (``media.input_ring``: one gather per format per tick, no per-leg loop); each tick consumes
one whole frame where one is queued, else the leg is silent that tick (counted as concealed), and a
listener that would hear only such silence is sent no frame at all (``media.mix_audible``). With
``cushion_at_start`` a leg's input is first consumed once two frames are queued (and again after
passthrough), so the jitter cushion exists from the start. A queue holds ``queue_frames`` frames;
beyond that the oldest whole frames are dropped and counted (``counters.bytes_dropped``).

Formats per direction: ``add_leg`` takes the format a leg sends (decoded per tick) and the one it
decodes (encoded for it), which providers declare separately (Telnyx's ``stream_codec`` and
``stream_bidirectional_codec``): encoding in the input codec garbles a call whose two differ.

Passthrough (``media.rooms``): a two-party room whose legs each speak the other's output format is
skipped by the tick; ``put_frame`` returns ``[(peer, bytes as sent)]``. Switches lose and repeat
nothing: a leg entering passthrough first sends its peer what it still had queued for the mix
(with its next ``put_frame``, or from the next tick), and a sniffed leg queues nothing in its ring,
so a room that starts mixing holds no byte its peer has heard already.

In-band DTMF (``set_detect``): ``media.mixer_dtmf`` detects over mixed legs' decoded input and
over what sniffed legs (passthrough with detection) sent; new digits are in ``TickResult.digits``.

Legs in no room, or alone in one, hear silence (plus their overlay, e.g. a hold tone): the tick
still sends them a frame every 20 ms. Taps report int16 frames at the mixer's rate: what the leg
hears (after clipping, before encoding) and what it said (silence when its frame was missing).
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import NDArray

from media.codecs import AudioFormat, decode_rows, encode
from media.input_ring import InputRing
from media.mix_audible import hearing_nothing
from media.mix_results import MixerCounters, Overlay, TickResult
from media.mixer_dtmf import MixerDtmf
from media.resample_bank import ResamplerBank
from media.room_errors import DuplicateLeg, InvalidGain, NotInRoom, UnknownLeg, UnknownRoom
from media.rooms import FormatGroup, Kind, Layout, LegFormats, Rooms

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


class Mixer:
    """Mixes the rooms of the legs it knows; one instance per worker process."""

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
        self._ring = InputRing(0)
        self._dtmf = MixerDtmf(sample_rate, self.samples)
        # Bound once, as ``_put``: a sniffed leg's every frame goes there.
        self._sniff = self._dtmf.sniffs.add
        self._prompt = self._dtmf.prompt
        self._rooms = Rooms(passthrough=passthrough)
        self._peers = self._rooms.peers  # the same dicts, read on every put_frame
        self._forward = self._rooms.forward
        self._entered = self._rooms.entered
        self._slot_of: dict[str, int] = {}
        self._overlays: dict[str, Overlay] = {}
        # Filter state of legs whose input or output rate is not the mixer's, one row per slot.
        self._banks: dict[tuple[int, int], ResamplerBank] = {}
        self._layout: Layout | None = None
        self._put = self._ring.put  # bound once: put_frame runs per frame per leg
        self._capacity = 0
        self._free: list[int] = []
        self._frame_bytes: list[int] = []
        # Formats legs send, numbered for the sniff batch, and each slot's (stale when free).
        self._kinds: dict[AudioFormat, int] = {}
        self._kind_formats: list[AudioFormat] = []
        self._inbound: list[int] = []
        self._leg_at: list[str] = []  # slot -> leg id (stale for free slots)
        self._allocate(max(1, capacity))

    # -- buffers ----------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate the slot arrays, keeping every existing slot's contents."""
        old = self._capacity
        primed = np.zeros(capacity, dtype=bool)  # input consumed since it became active
        concealed = np.zeros(capacity, dtype=np.int64)  # mixed ticks without the slot's frame
        if old:
            primed[:old], concealed[:old] = self._primed, self._concealed
        self._primed = primed
        self._concealed: NDArray[np.int64] = concealed
        self._ring.ensure(capacity, 1, 0)
        self._pcm = np.zeros((capacity, self.samples), dtype=np.int16)  # what each leg said
        self._acc = np.zeros((capacity, self.samples), dtype=np.int32)  # what each leg hears
        for bank in self._banks.values():
            bank.ensure_capacity(capacity)
        self._free.extend(range(old, capacity))
        heapq.heapify(self._free)
        self._frame_bytes.extend([0] * (capacity - old))
        self._inbound.extend([0] * (capacity - old))
        self._leg_at.extend([""] * (capacity - old))
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    def concealed(self, leg_id: str) -> int:  # mixed ticks without its frame since added
        slot = self._slot_of.get(leg_id)
        return 0 if slot is None else int(self._concealed[slot])

    def _bank(self, from_rate: int, to_rate: int) -> ResamplerBank:
        bank = self._banks.get((from_rate, to_rate))
        if bank is None:
            bank = ResamplerBank(from_rate, to_rate, self._capacity)
            self._banks[(from_rate, to_rate)] = bank
        return bank

    # -- membership (the seam) --------------------------------------------------------------

    def add_leg(self, leg_id: str, fmt: AudioFormat, out: AudioFormat | None = None) -> None:
        """Know a leg that sends ``fmt`` and decodes ``out`` (``fmt`` when None); in no room."""
        if leg_id in self._slot_of:
            raise DuplicateLeg(leg_id)
        formats = LegFormats(fmt, fmt if out is None else out)
        frame_bytes = fmt.frame_bytes(self.frame_ms)
        # Made first: they refuse a rate they cannot convert before anything is changed.
        banks = [
            self._bank(a, b)
            for a, b in (
                (fmt.sample_rate, self.sample_rate),
                (self.sample_rate, formats.outbound.sample_rate),
            )
            if a != b
        ]
        if not self._free:
            self._allocate(self._capacity * 2)
        queue_bytes = self._queue_frames * frame_bytes
        self._ring.ensure(self._capacity, frame_bytes, queue_bytes)
        slot = heapq.heappop(self._free)
        self._rooms.add(leg_id, formats, slot, self.frame_ms)
        self._slot_of[leg_id] = slot
        self._frame_bytes[slot] = frame_bytes
        kind = self._kinds.setdefault(fmt, len(self._kinds))
        if kind == len(self._kind_formats):
            self._kind_formats.append(fmt)
        self._inbound[slot] = kind
        self._leg_at[slot] = leg_id
        self._ring.reset(slot, frame_bytes, self._queue_frames)
        self._primed[slot] = False
        self._concealed[slot] = 0
        for bank in banks:
            bank.reset([slot])

    def remove_leg(self, leg_id: str) -> None:
        """Forget the leg; it also leaves its room."""
        state = self._rooms.remove(leg_id)
        del self._slot_of[leg_id]
        self._overlays.pop(leg_id, None)
        self._dtmf.sniffs.forget(state.slot)
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
        """Nobody hears the leg (``hear_only`` with no listener, or everyone again)."""
        self.hear_only(leg_id, frozenset() if on else None)

    def hear_only(self, leg_id: str, listeners: frozenset[str] | None) -> None:
        """From the next tick only ``listeners`` hear the leg (None: everyone); it follows the
        leg between rooms and composes with ``mute_for`` and pair gains (all must allow)."""
        self._rooms.hear_only(leg_id, listeners)

    def deafen(self, leg_id: str, on: bool = True) -> None:
        """The leg hears no one in its room; its overlay still plays."""
        self._rooms.set_flag(leg_id, "deaf", on)

    def reset_gains(self, room_id: str) -> None:
        """Plain mix-minus again: pair gains dropped, members unmuted and undeafened."""
        self._rooms.reset_gains(room_id)

    def mute_for(self, leg_id: str, listeners: frozenset[str]) -> None:
        """From the next tick, exactly ``listeners`` do not hear the leg (frozenset() for none).

        It follows the leg and applies in any room it shares with a listener; while that room
        holds a listener it names, the room is mixed, never passthrough.
        """
        self._rooms.mute_for(leg_id, listeners)

    # -- in-band DTMF -----------------------------------------------------------------------

    def set_detect(self, leg_id: str, on: bool) -> None:
        """Run in-band DTMF detection on what the leg says; new digits come in TickResult."""
        state = self._rooms.leg(leg_id)
        if on and self._dtmf.detector is None:
            if self.frame_ms != 20:
                raise ValueError(f"DTMF detection needs 20 ms frames, not {self.frame_ms} ms")
            self._dtmf.enable()
        if state.detect != on:
            self._dtmf.restart(state.slot, self._capacity)
        self._rooms.set_flag(leg_id, "detect", on)

    def set_dtmf_prompt(self, listener_id: str, prompt: bool) -> None:
        """Whether digits in what ``listener_id`` hears are needed on the tick they complete (it
        must stop hearing them: a DTMF-muted listener). Otherwise a passthrough speaker's digits
        may be found a tick late (``media.sniff_batch``). Kept for legs not (yet) in the mixer."""
        self._dtmf.set_prompt(listener_id, prompt)

    def dtmf_held(self, leg_id: str) -> str | None:
        """The digit the leg is in the middle of, as the detector last saw it; None if none."""
        state = self._rooms.leg(leg_id)
        return self._dtmf.held(state.slot) if state.detect else None

    # -- overlays and taps ------------------------------------------------------------------

    def set_overlay(self, leg_id: str, source: Overlay | None) -> None:
        """Audio only this leg hears, pulled from ``source`` each tick, summed before clipping."""
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
        peer = self._peers.get(leg_id)
        if peer is not None and leg_id not in self._entered:  # sniffed: detected, not queued
            prompt = peer in self._prompt
            self._sniff(self._inbound[slot], slot, payload, self._frame_bytes[slot], prompt)
            return [(peer, payload)]
        self.counters.bytes_dropped += self._put(slot, payload)
        # Just entered passthrough: what it had queued goes first.
        return [] if peer is None else self._settle(leg_id)

    def _settle(self, leg_id: str) -> list[tuple[str, bytes]]:
        """A leg just entered passthrough: what it queued for the mix goes to its peer, in
        frames, and its queue is emptied; a sniffed leg's queued bytes are also detected."""
        slot = self._slot_of[leg_id]
        peer = self._entered[leg_id]
        unsent = self._ring.queued(slot)
        self._ring.clear(slot)
        self._rooms.settled(leg_id)
        if leg_id not in self._forward:  # sniffed from now on
            self._dtmf.sniffs.forget(slot)  # nothing left of an earlier sniffing spell
            prompt = peer in self._prompt
            self._sniff(self._inbound[slot], slot, unsent, self._frame_bytes[slot], prompt)
        size = self._frame_bytes[slot]
        return [(peer, unsent[at : at + size]) for at in range(0, len(unsent), size)]

    # -- the tick ---------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Consume one frame per mixed leg and return what each of them hears."""
        layout = self._layout
        changed = layout is None or layout.version != self._rooms.version
        if layout is None or changed:
            layout = self._relayout()
        self.counters.ticks += 1
        frames: list[tuple[str, bytes]] = []
        for leg_id in list(self._entered):  # legs that entered passthrough since the last tick
            frames += self._settle(leg_id)
        digits = self._dtmf.detect_sniffed(changed, self._kind_formats, self._bank, self._leg_at)
        if not layout.active.size:
            return TickResult(frames, [], digits)
        got = self._take_input(layout)
        self._mix(layout)
        if layout.detect.size:
            every = got.size == layout.active.size  # the usual tick: no frame missing
            slots = layout.detect if every else self._received(layout.detect, got)
            digits += self._dtmf.detect_mixed(self._pcm, slots, self._leg_at)
        unheard = None if got.size == layout.active.size else self._unheard(layout, got)
        for group in layout.groups:
            self._encode(group, frames, unheard)
        taps = [
            (leg_id, self._clipped(self._acc[slot]), self._pcm[slot].copy())
            for leg_id, slot in layout.taps
        ]
        return TickResult(frames, taps, digits)

    def _relayout(self) -> Layout:
        previous = self._layout
        layout = self._rooms.layout(self.sample_rate)
        # A leg that starts being mixed again builds its cushion again (cushion_at_start).
        idle = np.ones(self._capacity, dtype=bool)
        idle[layout.active] = False
        self._primed[idle] = False
        if previous is not None:
            self._restart_filters(previous, layout)
        self._layout = layout
        return layout

    def _restart_filters(self, previous: Layout, layout: Layout) -> None:
        """A leg resampled again after passthrough starts from silence, not stale history."""
        mixed = [g.slots for g in previous.groups]
        was_mixed = np.concatenate(mixed) if mixed else np.zeros(0, dtype=np.intp)
        for group in layout.groups:
            resampled_in = group.kind is Kind.RESAMPLED
            resampled_out = group.out_kind is Kind.RESAMPLED
            if not (resampled_in or resampled_out):
                continue
            returning = group.slots[~np.isin(group.slots, was_mixed)]
            if resampled_out:
                self._bank(self.sample_rate, group.fmt.outbound.sample_rate).reset(returning)
            if resampled_in:  # a sniffed leg's decoder kept going (for its detection)
                decoded = np.concatenate([previous.active, *[g.slots for g in previous.sniffed]])
                fresh = returning[~np.isin(returning, decoded)]
                self._bank(group.fmt.inbound.sample_rate, self.sample_rate).reset(fresh)

    def _take_input(self, layout: Layout) -> NDArray[np.intp]:
        """Decode one frame per mixed slot into ``_pcm``; silence where none is queued.
        Returns the slots that had a frame."""
        ring, pcm = self._ring, self._pcm
        active, need = layout.active, layout.active_frame_bytes
        if self._cushion_at_start:
            need = np.where(self._primed[active], need, 2 * need)
        has = ring.fill[active] >= need
        got = active[has]
        self._primed[got] = True
        for group in layout.groups:
            if group.kind is Kind.RESAMPLED:
                self._decode_resampled(group, got)
            else:
                raw = ring.head_frames(group.slots, group.frame_bytes)
                pcm[group.slots] = decode_rows(group.fmt.inbound, raw)
        missing = active[~has]
        if missing.size:
            pcm[missing] = 0
            self._concealed[missing] += 1  # silence in its place
        self.counters.frames_shed += ring.consume(got, layout.active_frame_bytes[has])
        self.counters.frames_mixed += got.size
        self.counters.frames_missing += missing.size
        return got

    def _received(self, slots: NDArray[np.intp], got: NDArray[np.intp]) -> NDArray[np.intp]:
        """Those of ``slots`` that had a frame this tick: a missing frame is not silence from
        the caller, and detecting it as such would end a digit that is still being pressed."""
        had = np.zeros(self._capacity, dtype=bool)
        had[got] = True
        return slots[had[slots]]

    def _decode_resampled(self, group: FormatGroup, got: NDArray[np.intp]) -> None:
        """Decode and resample, in one batch, the legs of the group that have a frame."""
        slots = group.slots[np.isin(group.slots, got)]  # the others are zeroed as missing
        if not slots.size:
            return
        fmt = group.fmt.inbound
        spoken = decode_rows(fmt, self._ring.head_frames(slots, group.frame_bytes))
        bank = self._bank(fmt.sample_rate, self.sample_rate)
        self._pcm[slots] = bank.process(slots, spoken)[:, : self.samples]

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
        if layout.overlays:
            acc[layout.overlay_slots] += self._overlay_frames(layout.overlays)

    def _overlay_frames(self, legs: tuple[str, ...]) -> NDArray[np.int16]:
        """(legs, samples): the next frame of each leg's overlay, short ones padded."""
        n = self.samples
        frames = np.empty((len(legs), n), dtype=np.int16)
        overlays = self._overlays
        for row, leg_id in enumerate(legs):
            extra = overlays[leg_id](n)
            if extra.size >= n:
                frames[row] = extra[:n]
            else:
                frames[row, : extra.size] = extra
                frames[row, extra.size :] = 0
        return frames

    def _clipped(self, heard: NDArray[np.int32]) -> NDArray[np.int16]:
        return np.clip(heard, _LO, _HI).astype(np.int16)

    def _unheard(self, layout: Layout, got: NDArray[np.intp]) -> NDArray[np.bool_] | None:
        nothing = hearing_nothing(layout, got, self._capacity)
        return nothing if nothing.any() else None

    def _encode(
        self,
        group: FormatGroup,
        frames: list[tuple[str, bytes]],
        unheard: NDArray[np.bool_] | None,
    ) -> None:
        """Encode what the group's legs hear; a leg in ``unheard`` is sent nothing
        (``media.mix_audible``)."""
        heard = np.take(self._acc, group.slots, axis=0)
        samples = np.clip(heard, _LO, _HI, out=heard).astype(np.int16)
        fmt = group.fmt.outbound
        if group.out_kind is Kind.RESAMPLED:
            samples = self._bank(self.sample_rate, fmt.sample_rate).process(group.slots, samples)
        data = encode(fmt, samples)
        size = group.out_frame_bytes
        starts = zip(group.leg_ids, range(0, len(data), size), strict=True)
        if unheard is None:
            frames += [(leg_id, data[at : at + size]) for leg_id, at in starts]
            return
        skip = unheard[group.slots].tolist()
        frames += [
            (leg, data[at : at + size])
            for (leg, at), unsent in zip(starts, skip, strict=True)
            if not unsent
        ]
