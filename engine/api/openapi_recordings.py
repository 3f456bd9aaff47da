"""OpenAPI description of the recordings on the Call Control API (engine/api/recordings.py)."""

from __future__ import annotations

from engine.api.openapi import Schema, nullable, obj, ref, response, string
from engine.api.openapi_calls import ERRORS, SECURITY
from engine.api.recordings import DEFAULT_PAGE_SIZE, MAX_PAGE_NUMBER, MAX_PAGE_SIZE

INT: Schema = {"type": "integer"}
FORMATS = ["wav", "mp3"]
TIME = string(format="date-time")
PAGE_SIZE: Schema = {**INT, "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}

RECORDING: Schema = obj(
    ["record_type", "id", "call_control_id", "channels", "download_urls"],
    record_type=string(enum=["recording"]),
    id=string(format="uuid"),
    call_control_id=string(description="the leg's; a conference's: its creator's"),
    call_leg_id=nullable(string()),
    call_session_id=nullable(string()),
    connection_id=string(description="the bridge (its slug) the call came through"),
    conference_id=nullable(string(description="a conference's recording: the conference")),
    **{"from": nullable(string())},
    to=nullable(string()),
    channels=string(enum=["single", "dual"]),
    source=string(enum=["call", "conference"]),
    status=string(enum=["completed"]),
    duration_millis=INT,
    recording_started_at=TIME,
    recording_ended_at=TIME,
    created_at=TIME,
    updated_at=TIME,
    download_urls={
        **obj(None, wav=nullable(string(format="uri")), mp3=nullable(string(format="uri"))),
        "description": "signed links that work without a token until they expire "
        "(CALLBRIDGE_RECORDING_URL_TTL_S, 10 minutes by default)",
    },
)

SCHEMAS: dict[str, Schema] = {
    "Recording": obj(["data"], data=RECORDING),
    "RecordingList": obj(
        ["data", "meta"],
        data={"type": "array", "items": RECORDING},
        meta=obj(
            ["page_number", "page_size", "total_pages", "total_results"],
            page_number=INT,
            page_size=INT,
            total_pages=INT,
            total_results=INT,
        ),
    ),
}

RECORDING_ID = {"name": "recording_id", "in": "path", "required": True, "schema": string()}
NOT_FOUND = response("Unknown recording, or another organization's", ref("TelnyxErrors"))
STORED = {"401": ERRORS["401"], "404": NOT_FOUND, "500": ERRORS["500"]}


def _query(name: str, schema: Schema, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def recording_paths() -> dict[str, Schema]:
    audio = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    return {
        "/v2/recordings": {
            "get": {
                "summary": "The organization's recordings, newest first",
                "security": SECURITY,
                "parameters": [
                    _query("page[number]", {**INT, "minimum": 1, "maximum": MAX_PAGE_NUMBER}),
                    _query("page[size]", PAGE_SIZE),
                    _query("filter[call_control_id]", string()),
                    _query("filter[conference_id]", string()),
                ],
                "responses": {
                    "200": response("One page", ref("RecordingList")),
                    "401": ERRORS["401"],
                    "422": response("A page parameter out of range", ref("TelnyxErrors")),
                    "500": ERRORS["500"],
                },
            }
        },
        "/v2/recordings/{recording_id}": {
            "get": {
                "summary": "One recording, with fresh download_urls",
                "security": SECURITY,
                "parameters": [RECORDING_ID],
                "responses": {"200": response("The recording", ref("Recording")), **STORED},
            },
            "delete": {
                "summary": "Delete the recording's file and record; answers the deleted recording",
                "security": SECURITY,
                "parameters": [RECORDING_ID],
                "responses": {"200": response("The deleted recording", ref("Recording")), **STORED},
            },
        },
        "/v2/recordings/{recording_id}/download": {
            "get": {
                "summary": "The recording's file, through a signed link (no token)",
                "parameters": [
                    RECORDING_ID,
                    _query("format", string(enum=FORMATS), required=True),
                    _query("expires", string(pattern="^[0-9]+$"), required=True),
                    _query("signature", string(), required=True),
                ],
                "responses": {
                    "200": {
                        "description": "The audio file",
                        "content": {"audio/wav": audio, "audio/mpeg": audio},
                    },
                    "403": response(
                        "The link is incomplete, its signature does not match, or it expired",
                        ref("TelnyxErrors"),
                    ),
                    "404": response(
                        "The recording was deleted, or its file is gone", ref("TelnyxErrors")
                    ),
                    "500": ERRORS["500"],
                },
            }
        },
    }
