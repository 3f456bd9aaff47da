"""An adapter's reference to a provider's call, kept with the leg (``Leg.carrier``).

The engine stores it as an opaque string with the rest of the leg's live state, so a process
that adopts the leg after a restart (``ProviderDirectory.adopt``) can give it back to the
adapter that made it: which provider and configuration carry the call, the provider's own id
for it, and, for an incoming leg, the bridge and number it came in on (they count its channel).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


class BadCarrier(ValueError):
    """A stored reference this code cannot read."""


@dataclass(frozen=True, slots=True)
class Carrier:
    provider: str  # the kit's name: "twilio", "telnyx"
    config_id: int
    call: str | None  # Telnyx call_control_id, Twilio CallSid (None while a dial is placed)
    bridge_id: int | None = None
    number: str | None = None
    outbound: bool = False

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, raw: str) -> Carrier:
        try:
            data = json.loads(raw)
            return cls(
                provider=str(data["provider"]),
                config_id=int(data["config_id"]),
                call=None if data.get("call") is None else str(data["call"]),
                bridge_id=None if data.get("bridge_id") is None else int(data["bridge_id"]),
                number=None if data.get("number") is None else str(data["number"]),
                outbound=bool(data.get("outbound", False)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadCarrier(f"unreadable carrier reference {raw!r}: {exc}") from None
