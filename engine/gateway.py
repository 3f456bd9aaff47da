"""The seam between the engine and the providers: what the runtime asks of them.

A ``ProviderGateway`` carries out provider effects for the legs it owns (answer, hang up,
reject, dial). The adapters implement one per provider; the runtime never knows which one a
leg is on. A gateway raises ``ProviderError`` when the provider refuses or cannot be reached,
and treats "already ended" at the provider as success for hangups.
"""

from __future__ import annotations

from typing import Protocol

from engine.effects import DialCall
from engine.errors import ValidationError
from engine.model import RejectCause


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
