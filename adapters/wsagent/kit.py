"""Plugs websocket agent legs into the app: one gateway, reached for every ws:// or wss:// dial.

The provider directory routes a dial whose ``to`` is a websocket URL to
``context.websocket_kit()``; there is no provider configuration, number or route for these legs.
The gateway's streams are ended (``stop``, close) when the app shuts down, while the runtime and
the store are still up to hear about it.
"""

from __future__ import annotations

from aiohttp import web

from adapters.context import AdapterContext
from adapters.wsagent.gateway import WebsocketAgentGateway


def install(app: web.Application, context: AdapterContext) -> None:
    gateway = WebsocketAgentGateway(context)
    context.websocket_kit = lambda: gateway

    async def end_streams(_app: web.Application) -> None:
        await gateway.close()

    app.on_shutdown.append(end_streams)
