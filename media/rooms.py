"""Room membership and the hear-matrix: which legs share a room and who hears whom, how loudly.

This module is the seam between whoever decides membership (the engine) and the mixer's maths.
``Rooms`` is plain-Python bookkeeping: legs, rooms, per-pair gains, mute/deaf flags, and the
passthrough decision. ``Rooms.layout`` turns that state into a ``Layout``: the index arrays and
gain tensors the mixer's tick works from, rebuilt only when ``Rooms.version`` changes.

The hear-matrix of a room of k legs is a k x k gain matrix ``G[listener, speaker]``. Its default is
mix-minus (1 off the diagonal, 0 on it: everyone hears everyone else, nobody hears themselves).
``set_gain`` overrides one entry for as long as both legs stay in the room. Two flags live on the
leg, not the room, so they follow it from room to room: a leg's *audience* (``heard_by``: None,
everyone) keeps its column to those listeners (frozenset(): nobody hears it, a mute), a *deaf*
leg's row is zero (it hears no one). Whisper/coach, monitor and barge are
patterns of these entries; see ``tests/test_mixer.py`` for each one spelt out. ``mute_for`` also
lives on the leg: the listeners named there do not hear it, in whatever room they meet it (a
named listener elsewhere changes nothing until it joins).

A leg's input and output formats are separate (``LegFormats``): a provider may stream one codec to
us and decode another from us (Telnyx's ``stream_codec`` and ``stream_bidirectional_codec``). A room
is *passthrough* when it has exactly two legs, each speaking the very format the other listens in
(speaker's input == listener's output, both ways, so the bytes can be forwarded untouched), the
default matrix, no tap and no overlay on either leg, passthrough allowed. Such a room skips the
tick's mixing; each frame is forwarded to the peer as it arrives. A leg with in-band DTMF
detection on (``detect``) still needs its audio decoded every tick, so in passthrough it is
*sniffed*: its frames are forwarded and also kept for detection (``media.sniff_batch``), which
the tick runs without mixing; a leg without detection is forwarded only (``forward``, the hot
path). A leg that has just entered passthrough is listed in ``entered`` until the mixer has
sent its peer what it still had queued for the mix (``settled``), so no frame is skipped or
overtaken at the switch.

Errors (all ``MediaError``)::

    UnknownLeg     a leg id the mixer does not know
    DuplicateLeg   add_leg with an id already known
    UnknownRoom    a room id with no members (rooms exist while they have members)
    NotInRoom      set_gain naming a leg that is not a member of that room
    InvalidGain    a gain that is negative, infinite or NaN
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from media.codecs import AudioFormat, Encoding
from media.room_errors import DuplicateLeg, InvalidGain, NotInRoom, UnknownLeg, UnknownRoom


class Kind(enum.Enum):
    """How the mixer converts a leg's bytes to and from its internal int16 frames."""

    ULAW = "ulaw"  # one table lookup per law over the whole group
    ALAW = "alaw"
    L16 = "l16"  # a byte-order view, no table
    RESAMPLED = "resampled"  # another rate: batched per group through media.resample_bank


@dataclass(frozen=True, slots=True)
class LegFormats:
    """A leg's two directions: what it sends us (``inbound``) and what it decodes (``outbound``)."""

    inbound: AudioFormat
    outbound: AudioFormat


def kind_of(fmt: AudioFormat, mix_rate: int) -> Kind:
    if fmt.sample_rate != mix_rate:
        return Kind.RESAMPLED
    if fmt.encoding is Encoding.PCMU:
        return Kind.ULAW
    if fmt.encoding is Encoding.PCMA:
        return Kind.ALAW
    return Kind.L16


Flag = Literal["deaf", "tapped", "overlaid", "detect"]


@dataclass(slots=True)
class MixerLeg:
    """One leg as the mixer sees it: its slot, formats, room and flags (not the machine's Leg)."""

    leg_id: str
    fmt: LegFormats
    slot: int
    room: str | None = None
    heard_by: frozenset[str] | None = None  # the only listeners that hear it (None: everyone)
    deaf: bool = False
    tapped: bool = False
    overlaid: bool = False
    detect: bool = False  # in-band DTMF detection: the tick needs this leg's audio decoded
    muted_for: frozenset[str] = frozenset()  # listeners that do not hear this leg


@dataclass(slots=True)
class RoomState:
    members: list[str] = field(default_factory=list)  # in joining order
    # (listener, speaker) -> gain, only entries that differ from mix-minus
    gains: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FormatGroup:
    """Active legs sharing both formats: decoded together (``kind``, ``frame_bytes``, input) and
    encoded together (``out_kind``, ``out_frame_bytes``, output)."""

    fmt: LegFormats
    kind: Kind
    frame_bytes: int
    out_kind: Kind
    out_frame_bytes: int
    slots: NDArray[np.intp]
    leg_ids: tuple[str, ...]  # in the order of ``slots``


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything the tick needs, as arrays; immutable, rebuilt when membership or gains change."""

    version: int
    active: NDArray[np.intp]  # slots the tick decodes and mixes: those of ``groups``
    active_frame_bytes: NDArray[np.int64]
    silent: NDArray[np.intp]  # hear nothing from a room (alone, or in no room)
    swap_dst: NDArray[np.intp]  # default two-party rooms: dst hears src
    swap_src: NDArray[np.intp]
    sums: tuple[NDArray[np.intp], ...]  # default rooms of k >= 3, one (R, k) array per k
    weighted: tuple[tuple[NDArray[np.intp], NDArray[np.float32]], ...]  # (R, k), (R, k, k)
    groups: tuple[FormatGroup, ...]  # mixed legs: decoded, mixed, encoded
    sniffed: tuple[FormatGroup, ...]  # passthrough legs with detection (media.sniff_batch)
    detect: NDArray[np.intp]  # mixed slots with in-band DTMF detection on, ascending
    taps: tuple[tuple[str, int], ...]
    overlays: tuple[str, ...]  # legs with an overlay
    overlay_slots: NDArray[np.intp]  # their slots, in the same order


_EMPTY: NDArray[np.intp] = np.zeros(0, dtype=np.intp)


def _rows(rooms: dict[str, tuple[int, ...]], k: int) -> NDArray[np.intp]:
    flat = np.fromiter(chain.from_iterable(rooms.values()), dtype=np.intp, count=len(rooms) * k)
    return flat.reshape(len(rooms), k)


class Rooms:
    """Membership, hear-matrix and passthrough state of every leg one mixer knows.

    It also keeps each room filed where the tick will want it (passthrough, a mix-minus room of
    size k, or a weighted room with its matrix) and each mixed leg filed by format. A change
    refiles only its room, so ``layout`` is a handful of C-speed conversions at any leg count.
    """

    def __init__(self, *, passthrough: bool = True) -> None:
        self._passthrough = passthrough
        self._legs: dict[str, MixerLeg] = {}
        self._rooms: dict[str, RoomState] = {}
        # Passthrough partner of each leg in a passthrough room, and of those of them whose
        # input the tick does not need (no detection): the mixer's put_frame reads ``forward``
        # on every frame, so both are kept up to date eagerly, on every change. A leg enters
        # ``forward`` only once the mixer has ``settled`` it (sent its peer what it still had
        # queued); until then it is listed in ``entered``, so no frame overtakes queued ones.
        self.peers: dict[str, str] = {}
        self.forward: dict[str, str] = {}
        self.entered: dict[str, str] = {}
        self.version = 0
        self._frame_bytes: dict[AudioFormat, int] = {}  # per format, at the mixer's frame length
        self._solo: dict[str, int] = {}  # legs in no room -> slot
        self._default: defaultdict[int, dict[str, tuple[int, ...]]] = defaultdict(dict)
        self._weighted: dict[str, tuple[tuple[int, ...], NDArray[np.float32]]] = {}
        self._filed: dict[str, int] = {}  # room -> k in _default, or 0 when in _weighted
        self._active: defaultdict[LegFormats, dict[str, int]] = defaultdict(dict)
        self._sniffed: defaultdict[LegFormats, dict[str, int]] = defaultdict(dict)
        self._tapped: dict[str, int] = {}
        self._overlaid: dict[str, int] = {}
        self._detect: dict[str, int] = {}
        self._filed_flags = {
            "tapped": self._tapped,
            "overlaid": self._overlaid,
            "detect": self._detect,
        }

    # -- legs -------------------------------------------------------------------------------

    def leg(self, leg_id: str) -> MixerLeg:
        try:
            return self._legs[leg_id]
        except KeyError:
            raise UnknownLeg(leg_id) from None

    def add(self, leg_id: str, fmt: LegFormats, slot: int, frame_ms: int) -> None:
        if leg_id in self._legs:
            raise DuplicateLeg(leg_id)
        self._legs[leg_id] = MixerLeg(leg_id, fmt, slot)
        for one in (fmt.inbound, fmt.outbound):
            self._frame_bytes[one] = one.frame_bytes(frame_ms)
        self._solo[leg_id] = slot
        self._active[fmt][leg_id] = slot
        self.version += 1

    def remove(self, leg_id: str) -> MixerLeg:
        state = self.leg(leg_id)
        self.leave(leg_id)
        del self._legs[leg_id]
        del self._solo[leg_id]
        del self._active[state.fmt][leg_id]
        for filed in self._filed_flags.values():
            filed.pop(leg_id, None)
        self.version += 1
        return state

    # -- membership -------------------------------------------------------------------------

    def join(self, leg_id: str, room_id: str) -> None:
        state = self.leg(leg_id)
        if state.room == room_id:
            return
        self.leave(leg_id)
        room = self._rooms.setdefault(room_id, RoomState())
        room.members.append(leg_id)
        state.room = room_id
        del self._solo[leg_id]
        self._changed(room_id)

    def leave(self, leg_id: str) -> None:
        state = self.leg(leg_id)
        room_id = state.room
        if room_id is None:
            return
        room = self._rooms[room_id]
        self._unpeer(leg_id)
        room.members.remove(leg_id)
        room.gains = {k: g for k, g in room.gains.items() if leg_id not in k}
        state.room = None
        self._solo[leg_id] = state.slot
        if not room.members:
            del self._rooms[room_id]
        self._changed(room_id)

    def room_of(self, leg_id: str) -> str | None:
        return self.leg(leg_id).room

    def members(self, room_id: str) -> tuple[str, ...]:
        room = self._rooms.get(room_id)
        return tuple(room.members) if room is not None else ()

    def is_passthrough(self, room_id: str) -> bool:
        room = self._rooms.get(room_id)
        return room is not None and room.members[0] in self.peers

    def settled(self, leg_id: str) -> None:
        """The mixer has sent the peer of this leg, just entered passthrough, all it had queued;
        from now on it is forwarded by ``forward`` alone, or, sniffed, queued too."""
        peer = self.entered.pop(leg_id)
        if not self._legs[leg_id].detect:
            self.forward[leg_id] = peer

    # -- hear-matrix ------------------------------------------------------------------------

    def _room(self, room_id: str) -> RoomState:
        try:
            return self._rooms[room_id]
        except KeyError:
            raise UnknownRoom(room_id) from None

    def set_gain(self, room_id: str, listener: str, speaker: str, gain: float) -> None:
        room = self._room(room_id)
        for leg_id in (listener, speaker):
            if self.leg(leg_id).room != room_id:
                raise NotInRoom(leg_id, room_id)
        if not (math.isfinite(gain) and gain >= 0):
            raise InvalidGain(gain)
        default = 0.0 if listener == speaker else 1.0
        if gain == default:
            room.gains.pop((listener, speaker), None)
        else:
            room.gains[(listener, speaker)] = float(gain)
        self._changed(room_id)

    def gain(self, room_id: str, listener: str, speaker: str) -> float:
        """The effective gain, mute and deaf included."""
        members = self._room(room_id).members
        for leg_id in (listener, speaker):
            if leg_id not in members:
                raise NotInRoom(leg_id, room_id)
        matrix = self._matrix(self._rooms[room_id])
        return float(matrix[members.index(listener), members.index(speaker)])

    def reset_gains(self, room_id: str) -> None:
        """Back to plain mix-minus: pair gains dropped, members unmuted and undeafened."""
        room = self._room(room_id)
        room.gains.clear()
        for leg_id in room.members:
            state = self._legs[leg_id]
            state.heard_by, state.deaf = None, False
        self._changed(room_id)

    def set_flag(self, leg_id: str, name: Flag, on: bool) -> None:
        state = self.leg(leg_id)
        if getattr(state, name) == on:
            return
        setattr(state, name, on)
        filed = self._filed_flags.get(name)
        if filed is not None:
            if on:
                filed[leg_id] = state.slot
            else:
                del filed[leg_id]
        self._leg_changed(state)

    def hear_only(self, leg_id: str, listeners: frozenset[str] | None) -> None:
        """Only ``listeners`` hear the leg (None: everyone), in whatever room it is."""
        state = self.leg(leg_id)
        if state.heard_by != listeners:
            state.heard_by = listeners
            self._leg_changed(state)

    def mute_for(self, leg_id: str, listeners: frozenset[str]) -> None:
        """Exactly ``listeners`` do not hear the leg (in whatever room they share with it)."""
        state = self.leg(leg_id)
        if state.muted_for == listeners:
            return
        before, state.muted_for = state.muted_for, listeners
        room = self._rooms.get(state.room) if state.room is not None else None
        # Only its room's matrix can change, and only if a listener named before or now is in it.
        if room is not None and not (before | listeners).isdisjoint(room.members):
            self._leg_changed(state)

    def _leg_changed(self, state: MixerLeg) -> None:
        self.version += 1
        if state.room is not None:
            self._changed(state.room)

    def _matrix(self, room: RoomState) -> NDArray[np.float32]:
        members = room.members
        k = len(members)
        matrix = np.ones((k, k), dtype=np.float32)
        np.fill_diagonal(matrix, 0.0)
        position = {leg_id: i for i, leg_id in enumerate(members)}
        for (listener, speaker), gain in room.gains.items():
            matrix[position[listener], position[speaker]] = gain
        for i, leg_id in enumerate(members):
            state = self._legs[leg_id]
            if state.deaf:
                matrix[i, :] = 0.0
            if state.heard_by is not None:
                deny = [p for leg, p in position.items() if leg not in state.heard_by]
                matrix[deny, i] = 0.0
            if state.muted_for:
                for listener in state.muted_for.intersection(position):
                    matrix[position[listener], i] = 0.0
        return matrix

    def _is_default(self, room: RoomState) -> bool:
        if room.gains:
            return False
        members = room.members
        for state in map(self._legs.__getitem__, members):
            others = set(members) - {state.leg_id}
            heard_by_all = not state.muted_for or state.muted_for.isdisjoint(members)
            if state.heard_by is not None and not state.heard_by.issuperset(others):
                heard_by_all = False
            if state.deaf or not heard_by_all:
                return False
        return True

    # -- filing: passthrough, mix-minus by size, weighted -----------------------------------

    def _changed(self, room_id: str) -> None:
        """Refile one room after any change to it (it may have just been deleted)."""
        self.version += 1
        k = self._filed.pop(room_id, None)
        if k == 0:
            del self._weighted[room_id]
        elif k is not None:
            del self._default[k][room_id]
        room = self._rooms.get(room_id)
        if room is None:
            return
        for leg_id in room.members:
            self._unpeer(leg_id)
        if self._forwards(room):
            a, b = (self._legs[m] for m in room.members)
            for leg, peer in ((a, b), (b, a)):
                self.peers[leg.leg_id] = peer.leg_id
                self.entered[leg.leg_id] = peer.leg_id
                del self._active[leg.fmt][leg.leg_id]
                if leg.detect:
                    self._sniffed[leg.fmt][leg.leg_id] = leg.slot
            return
        slots = tuple(self._legs[m].slot for m in room.members)
        if self._is_default(room):
            self._default[len(slots)][room_id] = slots
            self._filed[room_id] = len(slots)
        else:
            self._weighted[room_id] = (slots, self._matrix(room))
            self._filed[room_id] = 0

    def _unpeer(self, leg_id: str) -> None:
        peer = self.peers.pop(leg_id, None)
        if peer is not None:
            del self.peers[peer]
            for state in (self._legs[leg_id], self._legs[peer]):
                self.forward.pop(state.leg_id, None)
                self.entered.pop(state.leg_id, None)
                self._sniffed[state.fmt].pop(state.leg_id, None)
                self._active[state.fmt][state.leg_id] = state.slot

    def _forwards(self, room: RoomState) -> bool:
        if not self._passthrough or len(room.members) != 2 or not self._is_default(room):
            return False
        a, b = (self._legs[m] for m in room.members)
        speaks_as_heard = a.fmt.inbound == b.fmt.outbound and b.fmt.inbound == a.fmt.outbound
        return speaks_as_heard and not (a.tapped or b.tapped or a.overlaid or b.overlaid)

    # -- layout -----------------------------------------------------------------------------

    def layout(self, mix_rate: int) -> Layout:
        default = self._default
        solo = np.fromiter(self._solo.values(), dtype=np.intp, count=len(self._solo))
        silent = np.concatenate((solo, _rows(default[1], 1).ravel())) if default[1] else solo
        pairs = _rows(default[2], 2)
        weighted: dict[int, tuple[list[tuple[int, ...]], list[NDArray[np.float32]]]] = {}
        for slots, matrix in self._weighted.values():
            rows, matrices = weighted.setdefault(len(slots), ([], []))
            rows.append(slots)
            matrices.append(matrix)
        groups = self._groups(self._active, mix_rate)
        active = [g.slots for g in groups]
        # Sniffed legs are detected from media.sniff_batch, not from the tick's decoded input.
        detect = [slot for leg_id, slot in self._detect.items() if leg_id not in self.peers]
        return Layout(
            version=self.version,
            active=np.concatenate(active) if active else _EMPTY,
            active_frame_bytes=np.repeat(
                np.array([g.frame_bytes for g in groups], dtype=np.int64),
                [g.slots.size for g in groups],
            ),
            silent=silent,
            swap_dst=pairs.ravel(),
            swap_src=pairs[:, ::-1].ravel(),
            sums=tuple(_rows(rooms, k) for k, rooms in default.items() if k > 2 and rooms),
            weighted=tuple(
                (np.array(rows, dtype=np.intp), np.stack(matrices))
                for rows, matrices in weighted.values()
            ),
            groups=groups,
            sniffed=self._groups(self._sniffed, mix_rate),
            detect=np.sort(np.array(detect, dtype=np.intp)),
            taps=tuple(self._tapped.items()),
            overlays=tuple(self._overlaid),
            overlay_slots=np.fromiter(
                self._overlaid.values(), dtype=np.intp, count=len(self._overlaid)
            ),
        )

    def _groups(
        self, by_format: dict[LegFormats, dict[str, int]], mix_rate: int
    ) -> tuple[FormatGroup, ...]:
        return tuple(
            FormatGroup(
                fmt=fmt,
                kind=kind_of(fmt.inbound, mix_rate),
                frame_bytes=self._frame_bytes[fmt.inbound],
                out_kind=kind_of(fmt.outbound, mix_rate),
                out_frame_bytes=self._frame_bytes[fmt.outbound],
                slots=np.fromiter(legs.values(), dtype=np.intp, count=len(legs)),
                leg_ids=tuple(legs),
            )
            for fmt, legs in by_format.items()
            if legs
        )
