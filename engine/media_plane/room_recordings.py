"""The ears of conference recordings: listeners the media plane puts in a room's mix.

A conference's recording (``engine.machine.conference_recording``) records what a silent
listener in its room hears. That listener is a leg of the plane's own in the mixer: it joins the
room, says nothing (one frame of silence is fed to it before each tick, so the mixer counts no
frame missing), and is tapped. What it hears is what the mixer's hear-matrix lets any member
hear that no audience names: every participant heard by everyone (``engine.machine.hearing``),
and nobody muted, held, monitoring or whispering (their audience is a set without the
listener), as members join and leave; plus its overlay, which the machine sets under the
conference's id (the whole room's playbacks and beeps). Its id in the mixer is the conference's
id, the recording's key in ``engine.media_plane.recordings``, so its tap feeds the recording as
a leg's tap feeds the leg's, and the plane keeps it as a leg whose output goes nowhere. The
listener reads no real leg's tap, so a participant's own recording or stream is not disturbed.

``channels`` dual: a second listener (``creator_ear``) hears only the creator (the pair gain of
every other member to it is 0) and the first everyone but the creator (its gain to the creator
is 0); the recording takes the creator's as its first channel, in the place of a leg's own
audio, and the rest as its second, as ``media.recorder`` lays out a leg's dual recording. A
pair gain lasts while both legs are in the room (``media.rooms``), so the plane calls
``joined`` for every leg that joins a room, and the gains are set again.

A listener counts in the mixer's frames mixed (one per tick); the live metrics leave it out
of a room's size.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.machine.effects import RoomMix
from media.codecs import AudioFormat, Encoding
from media.mix_results import Tap
from media.mixer import Mixer

__all__ = ["RoomListeners", "Unheard", "creator_ear"]


def creator_ear(owner: str) -> str:
    """The mixer id of a dual recording's listener to the creator."""
    return f"{owner}/creator"


class Unheard:
    """Where a recording listener's own mix goes: nowhere (its tap is what counts)."""

    def send_frame(self, payload: bytes) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Ears:
    room_id: str
    creator: str | None  # dual: the leg on the first channel

    def ids(self, owner: str) -> tuple[str, ...]:
        return (owner,) if self.creator is None else (owner, creator_ear(owner))


class RoomListeners:
    """The recording listeners of one mixer, by the recording's owner (a conference id)."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer
        # L16 at the mixer's rate: nothing to convert either way.
        self.format = AudioFormat(Encoding.L16, mixer.sample_rate, "little")
        self._silence = bytes(self.format.frame_bytes(mixer.frame_ms))
        self._ears: dict[str, _Ears] = {}
        self._fed: list[str] = []  # every listener's mixer id
        self._creators: dict[str, str] = {}  # creator ear -> owner, of the dual ones

    def __contains__(self, owner: str) -> bool:
        return owner in self._ears

    def is_ear(self, leg_id: str) -> bool:
        """Whether the mixer's ``leg_id`` is a recording's listener, not a participant (the
        live metrics count rooms by their participants)."""
        return leg_id in self._fed

    def add(self, owner: str, room: RoomMix) -> None:
        """Put ``owner``'s listener(s) in the room, tapped."""
        ears = _Ears(room.room_id, room.creator)
        for ear in ears.ids(owner):
            self.mixer.add_leg(ear, self.format)
            self.mixer.join(ear, room.room_id)
            self.mixer.set_tap(ear, True)
            self._fed.append(ear)
        self._ears[owner] = ears
        if room.creator is not None:
            self._creators[creator_ear(owner)] = owner
            for member in self.mixer.members(room.room_id):
                self.joined(member, room.room_id)

    def remove(self, owner: str) -> None:
        ears = self._ears.pop(owner, None)
        if ears is None:
            return
        for ear in ears.ids(owner):
            self.mixer.remove_leg(ear)
            self._fed.remove(ear)
            self._creators.pop(ear, None)

    def joined(self, leg_id: str, room_id: str) -> None:
        """``leg_id`` is in the mixer's room ``room_id`` now: each dual listener there hears it
        on its channel only."""
        for ear, owner in self._creators.items():
            ears = self._ears[owner]
            if ears.room_id != room_id or leg_id in (owner, ear):
                continue
            if leg_id == ears.creator:
                self.mixer.set_gain(room_id, owner, leg_id, 0.0)
            else:
                self.mixer.set_gain(room_id, ear, leg_id, 0.0)

    def feed(self) -> None:
        """Before each tick: the listeners' silence."""
        for ear in self._fed:
            self.mixer.put_frame(ear, self._silence)

    def taps(self, taps: list[Tap]) -> list[Tap]:
        """The tick's taps as they feed recordings: a dual recording's creator channel in the
        place of its listener's own (silent) audio; the creator listeners' own taps taken out."""
        if not self._creators:
            return taps
        creators = {leg_id: heard for leg_id, heard, _ in taps if leg_id in self._creators}
        fed: list[Tap] = []
        for leg_id, heard, spoken in taps:
            if leg_id in self._creators:
                continue
            if leg_id in self._ears:
                spoken = creators.get(creator_ear(leg_id), spoken)
            fed.append((leg_id, heard, spoken))
        return fed
