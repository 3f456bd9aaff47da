"""The seam between the engine and the providers: what the runtime asks of them.

A ``ProviderGateway`` carries out provider effects for the legs it owns (answer, hang up,
reject, dial) and, when it can (``ReportsStatus``), says what the provider knows of a leg. The
adapters implement one per provider; the runtime never knows which one a leg is on. A gateway
raises ``ProviderError`` when the provider refuses or cannot be reached
(``engine.provider_calls.ProviderCallError`` with the HTTP status, so the runtime can tell a
transient fault from a refusal), and treats "already ended" at the provider as success for
hangups and rejects.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from engine.effects import DialCall
from engine.errors import ValidationError
from engine.model import RejectCause


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

    async def dial(self, dial: DialCall) -> None:
        """Place the outgoing call; its progress arrives later as events."""

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


class GatewayResolver(Protocol):
    async def for_dial(self, org_id: int, connection_id: str, to: str) -> ProviderGateway:
        """The gateway that places a call for ``connection_id`` to ``to``; ``ValidationError``
        naming the field when none can."""


class NoGateways:
    """The resolver of an engine with no provider adapters wired in: it can place no call."""

    async def for_dial(self, org_id: int, connection_id: str, to: str) -> ProviderGateway:
        raise ValidationError(
            f"no provider can place calls for connection_id {connection_id!r}",
            field="connection_id",
        )
