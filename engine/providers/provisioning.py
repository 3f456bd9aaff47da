"""The seam through which connecting a number reaches the provider.

Connecting a phone number to a bridge must, with a real provider, check that the number
belongs to the account and point the number's voice webhook at callbridge; disconnecting
undoes it. That work belongs to the provider adapters, which supply a ``NumberProvisioner``
to the composition root. ``LocalOnlyProvisioner`` is what runs when no adapter is wired in:
it records the assignment in callbridge alone and touches no provider.
"""

from __future__ import annotations

from typing import Protocol

from engine.store.base import BridgeRecord, ProviderConfigRecord


class NumberProvisioner(Protocol):
    async def attach(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None:
        """Make the provider deliver calls for ``number`` to callbridge.

        Raises ``ValidationError`` with a clear reason when the number is not on the account,
        ``ProviderError`` when the provider cannot be reached.
        """

    async def detach(self, config: ProviderConfigRecord, auth_token: str, number: str) -> None: ...


class LocalOnlyProvisioner:
    async def attach(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None:
        return None

    async def detach(self, config: ProviderConfigRecord, auth_token: str, number: str) -> None:
        return None
