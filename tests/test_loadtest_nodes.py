"""The load test against several nodes (benchmarks/loadtest/nodes.py, issue 16): the front
spreads new calls over the nodes in turn and keeps each call's webhooks on its node; a run with
``--engine-workers`` needs a spawned engine; the run itself is in BENCHMARKS.md."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.simulators.common import LocalServer
from benchmarks.loadtest.config import LoadConfig
from benchmarks.loadtest.nodes import WebhookFront


async def test_the_front_spreads_new_calls_and_keeps_each_calls_webhooks_on_its_node() -> None:
    seen: list[tuple[int, str, str]] = []

    def node(index: int) -> LocalServer:
        async def hook(request: web.Request) -> web.Response:
            if request.path == "/webhooks/telnyx":
                call = (await request.json())["data"]["payload"]["call_control_id"]
            else:
                call = (await request.post())["CallSid"]
            seen.append((index, request.path, str(call)))
            return web.Response(text=f"node {index}")

        app = web.Application()
        app.router.add_post("/webhooks/telnyx", hook)
        app.router.add_post("/webhooks/twilio/voice", hook)
        return LocalServer(app)

    nodes = [node(0), node(1)]
    front = WebhookFront([await server.start() for server in nodes])
    url = await front.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def telnyx(call: str) -> str:
                body = orjson.dumps({"data": {"payload": {"call_control_id": call}}})
                async with session.post(f"{url}/webhooks/telnyx", data=body) as reply:
                    return await reply.text()

            async def twilio(sid: str) -> str:
                async with session.post(f"{url}/webhooks/twilio/voice?x=1",
                                        data={"CallSid": sid}) as reply:  # fmt: skip
                    return await reply.text()

            answers = [await telnyx("c1"), await twilio("CA2"), await telnyx("c3")]
            answers += [await telnyx("c1"), await twilio("CA2"), await telnyx("c1")]
        assert answers == ["node 0", "node 1", "node 0", "node 0", "node 1", "node 0"]
        assert [index for index, _path, call in seen if call == "c1"] == [0, 0, 0]
        assert ("/webhooks/twilio/voice", "CA2") in [(path, call) for _i, path, call in seen]
    finally:
        await front.close()
        for server in nodes:
            await server.close()


def test_several_workers_need_a_spawned_engine() -> None:
    with pytest.raises(ValueError, match="--spawn-engine"):
        LoadConfig(legs=20, engine_workers=2).steps()
    assert LoadConfig(legs=20, engine_workers=2, spawn_engine=True).steps() == [20]
