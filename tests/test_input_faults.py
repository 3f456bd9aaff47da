"""An input the machine fails on is answered with an error and changes nothing; every other call
carries on (issue 11, point 2), through the real app and runtime.

The fault is planted in ``engine.machine.legs.end_leg``, wrapped to raise after doing its work
for one chosen leg: a bug half-way through a hangup, after the leg and its room have changed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.config import Settings
from engine.logs import configure_logging
from engine.machine import legs as machine_legs
from engine.machine.model import TimerKind
from engine.runtime.runtime import TIMER_RETRY_S
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, hear_each_other

UUID = re.compile(r"fault id ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class PlantedFault(Exception):
    pass


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


@pytest.fixture
def faulty_end_leg(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The legs whose ending raises half-way (after ``end_leg`` has done its work)."""
    doomed: set[str] = set()
    real: Callable[..., Any] = machine_legs.end_leg

    def end_leg(core: Any, leg: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(core, leg, *args, **kwargs)
        if leg.call_control_id in doomed:
            raise PlantedFault(f"planted fault ending {leg.call_control_id}")
        return result

    monkeypatch.setattr(machine_legs, "end_leg", end_leg)
    return doomed


@pytest.fixture
def json_logs() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_callbridge", False)]:
        root.removeHandler(handler)


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_a_command_that_fails_half_way_is_a_500_with_a_logged_fault_id_and_changes_nothing(
    h: Harness,
    faulty_end_leg: set[str],
    json_logs: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    # One leg of the other pair in another codec: its room is mixed by the media tick.
    a, b, c, d = await h.up(), await h.up(), await h.up(), await h.up(media=PCMA_8K)
    await h.bridged(a, b)
    await h.bridged(c, d)
    room_ab, room_cd = h.room_of(a), h.room_of(c)
    before = h.runtime.machine.snapshot()
    faulty_end_leg.add(a)

    reply = await h.act(a, "hangup")

    assert reply.status == 500, reply
    (err,) = reply.body["errors"]
    assert (err["code"], err["title"]) == ("10007", "Unexpected error")
    found = UUID.search(err["detail"])
    assert found is not None, err
    fault_id = found.group(1)
    (line,) = [ln for ln in log_lines(capsys.readouterr().err) if ln.get("fault_id") == fault_id]
    assert line["level"] == "error" and line["leg_id"] == a and line["input"] == "Hangup"
    assert "PlantedFault" in line["exception"], "the traceback is on the fault's line"
    # Nothing of the hangup happened: machine, mixer and provider as before.
    assert h.runtime.machine.snapshot() == before
    assert h.room_of(a) == h.room_of(b) == room_ab is not None
    assert "hangup" not in h.gateway.ops(a)
    # Every other call carries on: the other pair still hears each other, its commands work.
    await hear_each_other(h, c, d)
    reply = await h.request(
        "PUT", f"/v2/calls/{c}/actions/client_state_update", {"client_state": "aGk="}
    )
    assert reply.status == 200, reply
    await h.ok(d, "hangup")
    await h.receiver.next("call.hangup", d)
    assert h.state(c) != "bridged" and room_cd is not None
    # And the failed leg's own call is intact: the same command, fault gone, applies wholly.
    faulty_end_leg.clear()
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    assert h.state(a) == "hangup" and h.room_of(b) is None


async def test_a_provider_event_that_fails_is_raised_to_the_adapter_and_retried_whole(
    h: Harness, faulty_end_leg: set[str]
) -> None:
    from engine.errors import InputFailed

    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    faulty_end_leg.add(a)
    with pytest.raises(InputFailed) as failed:
        await h.hung_up(a)
    assert UUID.search(failed.value.detail) is not None
    assert h.state(a) == h.state(b) == "bridged"
    faulty_end_leg.clear()
    await h.hung_up(a)  # the provider's retry
    assert h.state(a) == "hangup" and h.room_of(b) is None


async def test_a_timer_whose_firing_fails_is_armed_again(
    h: Harness, faulty_end_leg: set[str]
) -> None:
    a = await h.up()
    faulty_end_leg.add(a)
    h.timers.fire(a, TimerKind.TIME_LIMIT)
    await h.runtime.settle()
    assert h.state(a) == "answered", "the failed firing changed nothing"
    assert h.timers.delay(a, TimerKind.TIME_LIMIT) == TIMER_RETRY_S
    faulty_end_leg.clear()
    h.timers.fire(a, TimerKind.TIME_LIMIT)
    await h.runtime.settle()
    assert h.state(a) == "hangup"
    assert h.gateway.ops(a)[-1] == "hangup"
