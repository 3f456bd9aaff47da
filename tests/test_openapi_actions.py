"""Issue 14 point 9: every parameter a Call Control action accepts is in /openapi.json.

For each action, each field of the official SDK's params for it (telnyx 4.x,
``telnyx/types/calls/action_<name>_params.py``) is given to callbridge's parser: a field the
parser refuses as one callbridge does not carry out ("... is not supported by callbridge") need
not be documented; every other one is read, so it must be in the action's request body schema.
"""

from __future__ import annotations

import importlib
import typing
from typing import Any

import pytest

from engine.config import Settings
from engine.machine.commands import ACTIONS, ParameterError, parse_dial
from tests.test_commands import DIAL, MINIMAL, parse_command

# The SDK's name for each action whose module is not named after the action.
SDK_NAMES = {
    "playback_start": "start_playback", "playback_stop": "stop_playback",
    "record_start": "start_recording", "record_stop": "stop_recording",
    "record_pause": "pause_recording", "record_resume": "resume_recording",
    "gather_stop": "stop_gather", "streaming_start": "start_streaming",
    "streaming_stop": "stop_streaming",
}  # fmt: skip
NOT_IN_SDK = {"unbridge", "client_state_update"}  # callbridge's own, and a PUT Telnyx documents


def sdk_fields(action: str) -> set[str]:
    name = SDK_NAMES.get(action, action)
    module = importlib.import_module(f"telnyx.types.calls.action_{name}_params")
    (params,) = [
        getattr(module, n) for n in dir(module) if n.startswith("Action") and n.endswith("Params")
    ]
    return set(typing.get_type_hints(params))


def read_by_callbridge(action: str, field: str) -> bool:
    """Whether the parser reads ``field`` (anything but refusing it as not carried out)."""
    try:
        parse_command(action, MINIMAL[action] | {field: [1]})
    except ParameterError as refused:
        return not (refused.field == field and "not supported" in str(refused))
    except Exception:
        return True
    return True


def body_fields(doc: dict[str, Any]) -> set[str]:
    schemas = doc["components"]["schemas"]

    def props(schema: dict[str, Any]) -> set[str]:
        if "$ref" in schema:
            return props(schemas[schema["$ref"].split("/")[-1]])
        found = set(schema.get("properties", {}))
        for key in ("allOf", "anyOf", "oneOf"):
            for part in schema.get(key, []):
                found |= props(part)
        return found

    post = doc["paths"]["/v2/calls/{call_control_id}/actions/{action}"]["post"]
    return props(post["requestBody"]["content"]["application/json"]["schema"])


@pytest.fixture
async def documented(aiohttp_client: Any, settings: Settings) -> set[str]:
    from engine.app import create_app

    client = await aiohttp_client(create_app(settings))
    reply = await client.get("/openapi.json")
    return body_fields(await reply.json())


@pytest.mark.parametrize("action", sorted(set(ACTIONS) - NOT_IN_SDK))
async def test_every_field_an_action_reads_is_documented(action: str, documented: set[str]) -> None:
    read = {f for f in sdk_fields(action) if read_by_callbridge(action, f)}
    assert read - documented == set(), f"{action} reads fields /openapi.json does not show"


async def test_every_field_dial_reads_is_documented(
    aiohttp_client: Any, settings: Settings
) -> None:
    from telnyx.types import call_dial_params

    from engine.app import create_app

    client = await aiohttp_client(create_app(settings))
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    documented = set(schemas["DialRequest"].get("properties", {}))
    read = set()
    for field in typing.get_type_hints(call_dial_params.CallDialParams):
        try:
            parse_dial(DIAL | {field: [1]})
        except ParameterError as refused:
            if refused.field == field and "not supported" in str(refused):
                continue
        except Exception:
            pass
        read.add(field)
    assert read - documented == set(), "dial reads fields /openapi.json does not show"
