"""The seam between the engine and the providers: what the runtime asks of them.

A ``ProviderGateway`` carries out provider effects for the legs it owns (answer, hang up,
reject, dial) and, when it can (``ReportsStatus``), says what the provider knows of a leg. The
adapters implement one per provider; the runtime never knows which one a leg is on. A gateway
raises ``ProviderError`` when the provider refuses or cannot be reached
(``engine.providers.calls.ProviderCallError`` with the HTTP status, so the runtime can tell a
transient fault from a refusal), and treats "already ended" at the provider as success for
hangups and rejects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.errors import ProviderError, ValidationError
from engine.machine.effects import DialCall
from engine.machine.model import Leg, RejectCause


class CallGone(ProviderError):
    """The provider says the leg's call is over (ended, or unknown to it): a request on it can
    never succeed, so it is not retried, and the leg ends as one its provider no longer has."""

    status = 502


class CallPresence(enum.Enum):
    """What a provider says of a call when asked (``ReportsStatus.status``)."""

    UP = "up"  # answered and still up
    NOT_UP = "not_up"  # known but not up: still ringing, or (Telnyx cannot tell) ended
    GONE = "gone"  # ended, or unknown to the provider


class ProviderGateway(Protocol):
    name: str

    async def answer(self, call_control_id: str) -> None: ...

    async def restart_media(self, call_control_id: str) -> None:
        """Ask the provider to open the answered leg's media stream to callbridge again."""

    async def hangup(self, call_control_id: str) -> None: ...

    async def reject(self, call_control_id: str, cause: RejectCause) -> None: ...

    async def dial(self, dial: DialCall) -> str | None:
        """Place the outgoing call; its progress arrives later as events. Returns the adapter's
        reference to the provider's call (kept as ``Leg.carrier``), or None if it has none."""

    def forget(self, call_control_id: str) -> None:
        """The leg ended: drop whatever the gateway kept for it."""


@runtime_checkable
class ReportsStatus(Protocol):
    """A gateway that can ask its provider about a call (the REST providers; a websocket agent
    leg has nobody to ask). The runtime's reconciliation asks only these."""

    async def status(self, call_control_id: str) -> CallPresence:
        """What the provider says of the leg's call; ``ProviderError`` if it cannot say."""


@runtime_checkable
class DialsIdempotently(Protocol):
    """A gateway whose dial can be repeated after a fault without placing a second call."""

    dial_is_idempotent: bool


def dial_is_idempotent(gateway: ProviderGateway) -> bool:
    """Unknown means no: a dial that may have been placed is never sent twice."""
    return isinstance(gateway, DialsIdempotently) and gateway.dial_is_idempotent


@dataclass(frozen=True, slots=True)
class AdoptedLeg:
    """A stored leg the adapters can reach again: its gateway and, for an incoming leg, the
    bridge and number it came in on (they count its channel); ``call``, its provider call
    (``engine.admission.live.provider_call``), held with it so its webhooks find the adopter."""

    gateway: ProviderGateway
    bridge_id: int | None = None
    number: str | None = None
    call: str | None = None


class GatewayResolver(Protocol):
    async def for_dial(self, org_id: int, connection_id: str, to: str) -> ProviderGateway:
        """The gateway that places a call for ``connection_id`` to ``to``; ``ValidationError``
        naming the field when none can."""

    async def adopt(self, leg: Leg) -> AdoptedLeg | None:
        """Take back a leg an earlier process carried, from its ``Leg.carrier``; None when no
        adapter can reach its call any more (no carrier, unknown provider, configuration
        deleted)."""


class NoGateways:
    """The resolver of an engine with no provider adapters wired in: it can place no call."""

    async def for_dial(self, org_id: int, connection_id: str, to: str) -> ProviderGateway:
        raise ValidationError(
            f"no provider can place calls for connection_id {connection_id!r}",
            field="connection_id",
        )

    async def adopt(self, leg: Leg) -> AdoptedLeg | None:
        return None
