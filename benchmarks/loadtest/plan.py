"""Who calls whom in a load test: legs, rooms, providers, numbers, and each leg's tone.

Frequencies are exact DFT bins of a 20 ms frame (multiples of 50 Hz, see ``checker.py``) in the
telephone band, 300 to 3400 Hz: 63 bins. A room of ``k`` legs takes one *slot*: the bins
``first + slot + seat * (63 // k)``, so within a room tones are at least 100 Hz apart (in
practice ``63 // k * 50`` Hz: 1550 Hz in pairs, 600 Hz in rooms of 5). Successive rooms take
successive slots, so neighbouring rooms never share a bin; once the slots are used up the next
rooms start again at slot 0 one *generation* down, 4 dB quieter. The loudest generation,
``-12 dBFS - 20 log10(k - 1)``, leaves headroom for ``k - 1`` tones summed in one mix; the
quietest is ``MIN_LEVEL_DBFS``. A leg's identity is its (bin, level); identities are unique up
to ``Plan.unique_identities`` legs (434 in pairs, 315 in rooms of 3, 180 in rooms of 5) and
repeat beyond.

Why the levels stop at -36 dBFS: G.711 distorts a pure tone into harmonics (and a mix into
intermodulation products) about 35 dB below the tones, which land on other bins. The checker
calls any other bin above ``foreign_floor_dbfs`` (-42 dBFS, 6 dB below the quietest identity)
foreign, so the distortion of the loudest room (-12 dBFS, products at -48 dBFS at worst) must
stay below that floor while every foreign leg, however quiet, stays above it.

Legs dial their own number (a number carries one live leg unless told otherwise). With
``--provider mixed`` seats alternate Twilio, Telnyx, Twilio, ... so every pair is cross-provider.

Codecs: Twilio legs are PCMU (Twilio Media Streams carry audio/x-mulaw at 8 kHz only); Telnyx
legs negotiate ``telnyx_codec``: PCMU, PCMA, or G722, which Telnyx streams as G.722 at 16 kHz
(the simulator's ``place_inbound_call(codec=)``). A room with a G.722 leg is *wideband*: its audio
is resampled between 8 and 16 kHz on the way (by the simulator and by callbridge), which delays
it by a fraction of a frame; the checker then judges the frame that holds a speaker's marker
turn differently (``frames.py``). Every leg's tone stays in the telephone band either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from benchmarks.loadtest.frames import BIN_HZ, Speaker, Thresholds, amplitude_for

__all__ = [
    "FIRST_BIN",
    "LAST_BIN",
    "TELNYX_CODECS",
    "WIDEBAND",
    "LegPlan",
    "Plan",
    "Provider",
    "ProviderChoice",
    "RoomPlan",
    "TelnyxCodec",
    "make_plan",
]

Provider = Literal["twilio", "telnyx"]
ProviderChoice = Literal["twilio", "telnyx", "mixed"]
TelnyxCodec = Literal["PCMU", "PCMA", "G722"]
TELNYX_CODECS: Final = ("PCMU", "PCMA", "G722")
WIDEBAND: Final = frozenset({"G722"})  # codecs streamed at 16 kHz

FIRST_BIN: Final = 6  # 300 Hz
LAST_BIN: Final = 68  # 3400 Hz
POOL: Final = LAST_BIN - FIRST_BIN + 1
LEVEL_STEP_DB: Final = 4.0
MIN_LEVEL_DBFS: Final = -36.0
MARKER_PERIOD: Final = 20  # frames between phase markers: 400 ms


@dataclass(frozen=True, slots=True)
class LegPlan:
    index: int
    provider: Provider
    room: int
    seat: int
    bin: int
    level_dbfs: float
    marker_offset: int
    caller: str  # the From number
    number: str  # the number it dials, connected to the room's bridge
    codec: str = "PCMU"  # what its call negotiated (Telnyx legs: the plan's telnyx_codec)

    @property
    def wideband(self) -> bool:
        return self.codec in WIDEBAND

    @property
    def freq_hz(self) -> float:
        return self.bin * BIN_HZ

    @property
    def amplitude(self) -> float:
        return amplitude_for(self.level_dbfs)

    def speaker(self) -> Speaker:
        return Speaker(self.bin, self.amplitude, self.marker_offset)


@dataclass(frozen=True, slots=True)
class RoomPlan:
    index: int
    legs: tuple[int, ...]

    @property
    def kind(self) -> Literal["pair", "conference"]:
        return "pair" if len(self.legs) == 2 else "conference"


@dataclass(frozen=True, slots=True)
class Plan:
    legs: tuple[LegPlan, ...]
    rooms: tuple[RoomPlan, ...]
    room_size: int
    marker_period: int
    unique_identities: int
    telnyx_codec: TelnyxCodec = "PCMU"

    @property
    def shared_identities(self) -> int:
        """Legs whose (bin, level) another leg of the plan also has."""
        return max(0, len(self.legs) - self.unique_identities)

    def peers(self, leg: int) -> tuple[int, ...]:
        room = self.rooms[self.legs[leg].room]
        return tuple(other for other in room.legs if other != leg)

    def first_rooms(self, count: int) -> tuple[RoomPlan, ...]:
        return self.rooms[:count]

    def speakers(self) -> list[Speaker]:
        return [leg.speaker() for leg in self.legs]

    def wideband_rooms(self) -> list[bool]:
        """Per room: does a leg of it stream at 16 kHz (so its audio is resampled)?"""
        return [any(self.legs[leg].wideband for leg in room.legs) for room in self.rooms]

    def thresholds(self) -> Thresholds:
        """The checker's thresholds: foreign tones are anything 6 dB below the quietest leg."""
        quietest = min(leg.level_dbfs for leg in self.legs)
        return Thresholds(foreign_floor_dbfs=quietest - 6.0)


def top_level_dbfs(room_size: int) -> float:
    """The loudest level that leaves ``room_size - 1`` summed tones below full scale."""
    return -12.0 - 20 * math.log10(max(1, room_size - 1))


def make_plan(
    legs: int,
    room_size: int,
    provider: ProviderChoice,
    *,
    marker_period: int = MARKER_PERIOD,
    telnyx_codec: TelnyxCodec = "PCMU",
) -> Plan:
    """``legs`` legs (rounded down to whole rooms) in rooms of ``room_size``; Telnyx legs
    negotiate ``telnyx_codec``."""
    if telnyx_codec not in TELNYX_CODECS:
        raise ValueError(f"--telnyx-codec must be one of {', '.join(TELNYX_CODECS)}")
    if not 2 <= room_size <= POOL // 2:
        raise ValueError(f"room size must be 2 to {POOL // 2}, not {room_size}")
    rooms = legs // room_size
    if rooms < 1:
        raise ValueError(f"{legs} legs do not fill one room of {room_size}")
    slots = POOL // room_size
    top = top_level_dbfs(room_size)
    generations = max(1, int((top - MIN_LEVEL_DBFS) // LEVEL_STEP_DB) + 1)
    plans: list[LegPlan] = []
    room_plans: list[RoomPlan] = []
    for room in range(rooms):
        slot, generation = room % slots, (room // slots) % generations
        members: list[int] = []
        for seat in range(room_size):
            index = room * room_size + seat
            provider_of_seat = _provider(provider, seat)
            plans.append(
                LegPlan(
                    index=index,
                    provider=provider_of_seat,
                    room=room,
                    seat=seat,
                    bin=FIRST_BIN + slot + seat * slots,
                    level_dbfs=top - generation * LEVEL_STEP_DB,
                    # Spread markers so a room's legs never turn phase on the same frame.
                    marker_offset=(7 * room + seat * max(1, marker_period // room_size))
                    % marker_period,
                    caller=f"+1666{index:07d}",
                    number=f"+1555{index:07d}",
                    codec=telnyx_codec if provider_of_seat == "telnyx" else "PCMU",
                )
            )
            members.append(index)
        room_plans.append(RoomPlan(room, tuple(members)))
    return Plan(
        legs=tuple(plans),
        rooms=tuple(room_plans),
        room_size=room_size,
        marker_period=marker_period,
        unique_identities=min(len(plans), slots * generations * room_size),
        telnyx_codec=telnyx_codec,
    )


def _provider(choice: ProviderChoice, seat: int) -> Provider:
    if choice == "mixed":
        return "twilio" if seat % 2 == 0 else "telnyx"
    return choice
