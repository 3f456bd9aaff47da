"""The errors of ``media.rooms`` (all ``MediaError``): a leg or room the mixer does not know,
a leg not in the room named, a gain it cannot apply."""

from __future__ import annotations

from media.errors import MediaError


class UnknownLeg(MediaError):
    def __init__(self, leg_id: str) -> None:
        super().__init__(f"unknown leg {leg_id!r}")
        self.leg_id = leg_id


class DuplicateLeg(MediaError):
    def __init__(self, leg_id: str) -> None:
        super().__init__(f"leg {leg_id!r} is already known")
        self.leg_id = leg_id


class UnknownRoom(MediaError):
    def __init__(self, room_id: str) -> None:
        super().__init__(f"no room {room_id!r}")
        self.room_id = room_id


class NotInRoom(MediaError):
    def __init__(self, leg_id: str, room_id: str) -> None:
        super().__init__(f"leg {leg_id!r} is not in room {room_id!r}")
        self.leg_id = leg_id
        self.room_id = room_id


class InvalidGain(MediaError):
    def __init__(self, gain: float) -> None:
        super().__init__(f"gain must be finite and >= 0, got {gain!r}")
        self.gain = gain
