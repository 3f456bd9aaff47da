"""What sniffed legs said since their last detection, kept for in-band DTMF detection only.

A *sniffed* leg is in passthrough with detection on (``media.rooms``): each frame it sends goes
to its peer at once, untouched, and the mixer must still see it once to detect digits. Queuing it
in the leg's input ring cost a ring write per frame and the ring's bookkeeping per tick, and left
already-forwarded bytes in a queue the mix must then skip. Here a frame costs one append: frames
are kept per format, in arrival order, and the tick takes them in *blocks*: a block holds ``k``
frames of each of its slots (frame-major, ``frames[f * len(slots) + i]`` is frame ``f`` of
``slots[i]``), which the detector takes in one call.

Most sniffed legs are *relaxed*: what they say feeds only ``call.dtmf.received``, which may come
a few ticks later, so the mixer takes them every few ticks, ``k`` frames per slot in one block:
the detector's cost is mostly fixed per call (``media.dtmf``), and fewer calls cost less. A leg
heard by a DTMF-muted listener is *prompt*: its digit must be found on the tick it completes
(``engine.media_plane.dtmf_mute`` silences it from the next tick), so it is taken every tick.
When the mixer takes both, relaxed blocks come first: a slot moved from relaxed to prompt has its
older frames there. Arrivals are not in step with the tick (a leg's frame may land just before or
after it), so a take often finds some slots with one frame more or less than the rest: slots
with as many frames share one block, so a take costs one detector call per distinct count
(usually one or two), not one per frame of the busiest slot.

Providers do not promise 20 ms chunks, so a payload that is not exactly one frame is cut into
frames here; the bytes short of a frame wait for the leg's next payload (``_partial``). Whatever
a slot still has here when its leg goes (``forget``) is dropped: a new leg may take the slot.
"""

from __future__ import annotations

__all__ = ["SniffBatch", "SniffBlock"]

#: One block of one format: the format's number (the caller's), the slots (distinct), their
#: frames frame-major (``k`` frames per slot) and ``k``.
SniffBlock = tuple[int, list[int], list[bytes], int]

#: Per format number: slots and frames in arrival order.
_Pending = dict[int, tuple[list[int], list[bytes]]]


class SniffBatch:
    """Frames of sniffed legs not yet taken, per format, in arrival order."""

    __slots__ = ("_partial", "_prompt", "_relaxed")

    def __init__(self) -> None:
        self._relaxed: _Pending = {}
        self._prompt: _Pending = {}
        self._partial: dict[int, bytes] = {}  # slot -> bytes short of a frame

    def add(
        self, kind: int, slot: int, payload: bytes, frame_bytes: int, prompt: bool = False
    ) -> None:
        """``payload`` as the slot's leg sent it (any length), in the format numbered ``kind``;
        whole frames are kept, for the next take (``prompt``) or the next full take."""
        pending = self._prompt if prompt else self._relaxed
        if len(payload) == frame_bytes and slot not in self._partial:  # the usual 20 ms chunk
            kept = pending.get(kind)
            if kept is None:
                kept = pending[kind] = ([], [])
            kept[0].append(slot)
            kept[1].append(payload)
            return
        data = self._partial.pop(slot, b"") + payload
        whole = len(data) - len(data) % frame_bytes
        if whole < len(data):
            self._partial[slot] = data[whole:]
        if not whole:
            return
        slots, frames = pending.setdefault(kind, ([], []))
        for at in range(0, whole, frame_bytes):
            slots.append(slot)
            frames.append(data[at : at + frame_bytes])

    def forget(self, slot: int) -> None:
        """The slot's leg is gone (or starts sniffing afresh): nothing of it is detected later."""
        self._partial.pop(slot, None)
        for pending in (self._relaxed, self._prompt):
            for slots, frames in pending.values():
                if slot in slots:
                    kept = [(s, f) for s, f in zip(slots, frames, strict=True) if s != slot]
                    slots[:] = [s for s, _ in kept]
                    frames[:] = [f for _, f in kept]

    def take(self, relaxed_too: bool) -> list[SniffBlock]:
        """The prompt legs' frames, and with ``relaxed_too`` the relaxed legs' (first), in
        blocks; each slot's frames come in order (an earlier block, or earlier in its block)."""
        blocks: list[SniffBlock] = []
        if relaxed_too and self._relaxed:
            taken, self._relaxed = self._relaxed, {}
            blocks += _blocks(taken)
        if self._prompt:
            taken, self._prompt = self._prompt, {}
            blocks += _blocks(taken)
        return blocks


def _blocks(pending: _Pending) -> list[SniffBlock]:
    blocks: list[SniffBlock] = []
    for kind, (slots, frames) in pending.items():
        if not slots:  # all forgotten
            continue
        distinct = len(set(slots))
        k, rest = divmod(len(slots), distinct)
        if not rest and slots == slots[:distinct] * k:  # each tick's arrivals in one order
            blocks.append((kind, slots[:distinct], frames, k))
        else:  # a leg missed a tick, sent a burst, came mid-way, or arrivals changed order
            blocks += _by_count(kind, slots, frames)
    return blocks


def _by_count(kind: int, slots: list[int], frames: list[bytes]) -> list[SniffBlock]:
    """One block per number of frames a slot has: the slots that sent ``k`` frames together,
    each slot's frames in order (most takes are one block: every slot sent as many)."""
    said: dict[int, list[bytes]] = {}
    for slot, frame in zip(slots, frames, strict=True):
        kept = said.get(slot)
        if kept is None:
            said[slot] = [frame]
        else:
            kept.append(frame)
    groups: dict[int, list[int]] = {}
    for slot, kept in said.items():
        groups.setdefault(len(kept), []).append(slot)
    return [
        (kind, group, [said[slot][f] for f in range(k) for slot in group], k)
        for k, group in sorted(groups.items())
    ]
