"""What sniffed legs said since the last tick, kept for in-band DTMF detection only.

A *sniffed* leg is in passthrough with detection on (``media.rooms``): each frame it sends goes
to its peer at once, untouched, and the tick must still see it once to detect digits. Queuing it
in the leg's input ring cost a ring write per frame and the ring's bookkeeping per tick, and left
already-forwarded bytes in a queue the mix must then skip. Here a frame costs one append: frames
are kept per format, in arrival order, and the tick takes them all at once (``take``), one batch
per format and *round*: a round holds at most one frame per slot (the detector takes one frame per
row per call), so a leg that sent two frames since the last tick has its second in the next round,
in order.

Providers do not promise 20 ms chunks, so a payload that is not exactly one frame is cut into
frames here; the bytes short of a frame wait for the leg's next payload (``_partial``). Whatever
a slot still has here when its leg goes (``forget``) is dropped: a new leg may take the slot.
"""

from __future__ import annotations

__all__ = ["SniffBatch", "SniffRound"]

#: One round of one format: the format's number (the caller's: an int hashes in nanoseconds, an
#: ``int`` in Python code), the slots (distinct) and, in the same order, one frame each.
SniffRound = tuple[int, list[int], list[bytes]]


class SniffBatch:
    """Frames of sniffed legs since the last ``take``, per format, in arrival order."""

    __slots__ = ("_formats", "_partial")

    def __init__(self) -> None:
        self._formats: dict[int, tuple[list[int], list[bytes]]] = {}  # by format number
        self._partial: dict[int, bytes] = {}  # slot -> bytes short of a frame

    def add(self, kind: int, slot: int, payload: bytes, frame_bytes: int) -> None:
        """``payload`` as the slot's leg sent it (any length), in the format numbered ``kind``;
        whole frames are kept."""
        if len(payload) == frame_bytes and slot not in self._partial:  # the usual 20 ms chunk
            pending = self._formats.get(kind)
            if pending is None:
                pending = self._formats[kind] = ([], [])
            pending[0].append(slot)
            pending[1].append(payload)
            return
        self._add_cut(kind, slot, self._partial.pop(slot, b"") + payload, frame_bytes)

    def _add_cut(self, kind: int, slot: int, data: bytes, frame_bytes: int) -> None:
        whole = len(data) - len(data) % frame_bytes
        if whole < len(data):
            self._partial[slot] = data[whole:]
        if not whole:
            return
        slots, frames = self._formats.setdefault(kind, ([], []))
        for at in range(0, whole, frame_bytes):
            slots.append(slot)
            frames.append(data[at : at + frame_bytes])

    def forget(self, slot: int) -> None:
        """The slot's leg is gone (or starts sniffing afresh): nothing of it is detected later."""
        self._partial.pop(slot, None)
        for slots, frames in self._formats.values():
            if slot in slots:
                kept = [(s, f) for s, f in zip(slots, frames, strict=True) if s != slot]
                slots[:] = [s for s, _ in kept]
                frames[:] = [f for _, f in kept]

    def take(self) -> list[SniffRound]:
        """Everything kept, in rounds of distinct slots (earlier frames in earlier rounds)."""
        if not self._formats:
            return []
        taken, self._formats = self._formats, {}
        rounds: list[SniffRound] = []
        for kind, (slots, frames) in taken.items():
            if not slots:  # all forgotten
                continue
            if len(set(slots)) == len(slots):  # the usual tick: one frame per leg
                rounds.append((kind, slots, frames))
                continue
            rounds += _rounds(kind, slots, frames)
        return rounds


def _rounds(kind: int, slots: list[int], frames: list[bytes]) -> list[SniffRound]:
    """Split frames so that no round holds a slot twice; a slot's n-th frame is in round n."""
    split: list[SniffRound] = []
    seen: dict[int, int] = {}
    for slot, frame in zip(slots, frames, strict=True):
        n = seen.get(slot, 0)
        seen[slot] = n + 1
        if n == len(split):
            split.append((kind, [], []))
        split[n][1].append(slot)
        split[n][2].append(frame)
    return split
