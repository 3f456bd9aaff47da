"""OpenAPI description of the conferences on the Call Control API (engine/api/conferences.py)."""

from __future__ import annotations

from engine.api.conferences import DEFAULT_PAGE_SIZE, MAX_PAGE_NUMBER, MAX_PAGE_SIZE, STATUSES
from engine.api.openapi import Schema, json_body, nullable, obj, ref, response, string
from engine.api.openapi_calls import BOOL, COMMON, ERRORS, INT, SECURITY
from engine.machine.conference_commands import MAX_NAME, RECORD_CHANNELS, RECORD_FORMATS

TIME = string(format="date-time")
PAGE_META = obj(
    ["page_number", "page_size", "total_pages", "total_results"],
    page_number=INT,
    page_size=INT,
    total_pages=INT,
    total_results=INT,
)
CONFERENCE: Schema = obj(
    ["record_type", "id", "name", "created_at", "expires_at"],
    record_type=string(enum=["conference"]),
    id=string(format="uuid"),
    name=string(),
    status=string(enum=["in_progress", "completed"]),
    connection_id=string(),
    created_at=TIME,
    updated_at=TIME,
    expires_at={**TIME, "description": "4 hours after created_at"},
    end_reason=nullable(string(enum=["all_left", "ended_via_api"])),
    ended_by=nullable(obj(None, call_control_id=string(), call_session_id=string())),
    region=nullable(string()),
)
PARTICIPANT: Schema = obj(
    ["record_type", "id", "call_control_id", "call_leg_id", "conference", "status", "muted"],
    record_type=string(enum=["participant"]),
    id=string(description="the leg's call_leg_id"),
    call_control_id=string(),
    call_leg_id=string(),
    conference=obj(["id", "name"], id=string(format="uuid"), name=string()),
    conference_id=string(format="uuid"),
    status=string(enum=["joined"]),
    muted=BOOL,
    on_hold={**BOOL, "description": "put on hold by the hold action, until unhold"},
    end_conference_on_exit=BOOL,
    soft_end_conference_on_exit=BOOL,
    whisper_call_control_ids={
        "type": "array",
        "items": string(),
        "description": "who hears it, when its supervisor_role is whisper",
    },
    label=nullable(string()),
    created_at={**TIME, "description": "when the leg joined"},
    updated_at=TIME,
)


def _closed(required: list[str], description: str, **properties: Schema) -> Schema:
    schema = obj(required, **properties)
    schema["additionalProperties"] = False
    schema["description"] = description + " Other fields are refused (422 naming them)."
    return schema


CREATE = _closed(
    ["call_control_id", "name"],
    "Make a conference from the leg, which joins it.",
    call_control_id=string(),
    name=string(maxLength=MAX_NAME),
    max_participants={"type": "integer", "minimum": 2, "maximum": 800, "default": 250},
    start_conference_on_create={**BOOL, "enum": [True], "default": True},
    **COMMON,
)
SUPERVISOR: dict[str, Schema] = {
    "supervisor_role": string(
        enum=["none", "barge", "monitor", "whisper"],
        description="none, barge: heard by all; monitor: by none; whisper: only by "
        "whisper_call_control_ids",
    ),
    "whisper_call_control_ids": {
        "type": "array",
        "items": string(),
        "description": "participants that hear a whisper supervisor (only with whisper; "
        "none: nobody hears it)",
    },
}
IDS = {"type": "array", "items": string(), "description": "none or empty: every participant"}
AUDIO_URL = string(description="http(s), or file:/// in the media directory")
LOOP = {
    "oneOf": [{"type": "integer", "minimum": 1, "maximum": 100}, string(enum=["infinity"])],
    "default": 1,
}
ACTIONS: dict[str, Schema] = {
    "join": _closed(
        ["call_control_id"],
        "A leg of the organization joins; client_state is set on that leg.",
        call_control_id=string(),
        mute=BOOL,
        **SUPERVISOR,
        **COMMON,
    ),
    "leave": _closed(
        ["call_control_id"],
        "The participant leaves, parked.",
        call_control_id=string(),
        command_id=string(),
    ),
    "mute": _closed([], "Nobody hears these participants.", call_control_ids=IDS),
    "unmute": _closed([], "These participants are heard again.", call_control_ids=IDS),
    "end": _closed([], "Hang up every participant; end_reason ended_via_api.", command_id=string()),
    "hold": _closed(
        [],
        "These participants hear only the hold audio (audio_url or media_name; else the built-in"
        " tone on hold) and nobody hears them, until unhold or they leave.",
        call_control_ids=IDS,
        audio_url=AUDIO_URL,
        media_name=string(),
    ),
    "unhold": _closed(
        ["call_control_ids"],
        "These participants hear the room and are heard again.",
        call_control_ids={"type": "array", "items": string(), "minItems": 1},
    ),
    "play": _closed(
        [],
        "Play audio_url or media_name (one of them) to these participants (none: the whole room,"
        " conference.playback.*; named: conference.participant.playback.* each); replaces the"
        " conference's current playback.",
        call_control_ids=IDS,
        audio_url=AUDIO_URL,
        media_name=string(),
        loop=LOOP,
    ),
    "stop": _closed(
        [], "Stop the conference's playback for these participants.", call_control_ids=IDS
    ),
    "send_dtmf": _closed(
        ["digits"],
        "Queue the digits on each of these participants, as a leg's send_dtmf does.",
        call_control_ids=IDS,
        digits=string(pattern="^[0-9A-D*#wW]+$"),
        duration_millis={"type": "integer", "minimum": 100, "maximum": 500, "default": 250},
    ),
    "update": _closed(
        ["call_control_id", "supervisor_role"],
        "Set a participant's supervisor role (who hears it; it hears everyone).",
        call_control_id=string(),
        **SUPERVISOR,
        command_id=string(),
    ),
    "record_start": _closed(
        ["format"],
        "Record the conference's mix, as a silent listener in it hears it (participants heard"
        " by everyone, what is played to the whole room), until record_stop or the conference"
        " ends; then conference.recording.saved, and the recording is listed in /v2/recordings."
        " One at a time.",
        format=string(enum=list(RECORD_FORMATS)),
        channels=string(
            enum=list(RECORD_CHANNELS),
            default="single",
            description="dual: the creator on the first channel, the rest on the second",
        ),
        custom_file_name=string(
            pattern="^[A-Za-z0-9._-]{1,40}$", description="a bare file name, never overwriting"
        ),
        play_beep={**BOOL, "description": "a 1 kHz beep of 250 ms to the room as it starts"},
        trim=string(enum=["trim-silence"]),
        command_id=string(),
    ),
    "record_stop": _closed(
        [],
        "Stop the recording in progress (422 if none); client_state replaces the conference's.",
        recording_id=string(description="the recording in progress, if given"),
        **COMMON,
    ),
    "record_pause": _closed(
        [],
        "The recording takes no audio until record_resume (one file).",
        recording_id=string(),
        command_id=string(),
    ),
    "record_resume": _closed(
        [], "The recording takes audio again.", recording_id=string(), command_id=string()
    ),
}
SCHEMAS: dict[str, Schema] = {
    "Conference": obj(["data"], data=CONFERENCE),
    "ConferenceList": obj(
        ["data", "meta"], data={"type": "array", "items": CONFERENCE}, meta=PAGE_META
    ),
    "Participant": obj(["data"], data=PARTICIPANT),
    "ParticipantList": obj(
        ["data", "meta"], data={"type": "array", "items": PARTICIPANT}, meta=PAGE_META
    ),
    "ConferenceCreate": CREATE,
    **{f"Conference{name.capitalize()}Action": body for name, body in ACTIONS.items()},
}

CONFERENCE_ID = {"name": "conference_id", "in": "path", "required": True, "schema": string()}
NOT_FOUND = response(
    "Unknown conference, leg or participant (or another organization's)", ref("TelnyxErrors")
)
KNOWN = {**ERRORS, "404": NOT_FOUND}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PAGES = [
    _query("page[number]", {**INT, "minimum": 1, "maximum": MAX_PAGE_NUMBER}),
    _query(
        "page[size]", {**INT, "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}
    ),
]


def conference_paths() -> dict[str, Schema]:
    action = {
        "name": "action",
        "in": "path",
        "required": True,
        "schema": string(enum=list(ACTIONS)),
    }
    bodies = [ref(f"Conference{name.capitalize()}Action") for name in ACTIONS]
    return {
        "/v2/conferences": {
            "post": {
                "summary": "Create a conference from a leg (the SDK's conferences.create)",
                "security": SECURITY,
                "requestBody": json_body(ref("ConferenceCreate")),
                "responses": {"200": response("The new conference", ref("Conference")), **KNOWN},
            },
            "get": {
                "summary": "The organization's conferences, live and ended, oldest first",
                "security": SECURITY,
                "parameters": [
                    *PAGES,
                    _query("filter[name]", string(description="exact, case-sensitive")),
                    _query("filter[status]", string(enum=list(STATUSES))),
                ],
                "responses": {"200": response("One page", ref("ConferenceList")), **KNOWN},
            },
        },
        "/v2/conferences/{conference_id}": {
            "get": {
                "summary": "One conference",
                "security": SECURITY,
                "parameters": [CONFERENCE_ID],
                "responses": {"200": response("The conference", ref("Conference")), **KNOWN},
            }
        },
        "/v2/conferences/{conference_id}/participants": {
            "get": {
                "summary": "Who is in the conference now, in the order they joined",
                "security": SECURITY,
                "parameters": [
                    CONFERENCE_ID,
                    *PAGES,
                    *(_query(f"filter[{f}]", BOOL) for f in ("muted", "on_hold", "whispering")),
                ],
                "responses": {"200": response("One page", ref("ParticipantList")), **KNOWN},
            }
        },
        "/v2/conferences/{conference_id}/participants/{participant_id}": {
            "get": {
                "summary": "One participant, by its id (call_leg_id) or call_control_id",
                "security": SECURITY,
                "parameters": [
                    CONFERENCE_ID,
                    {"name": "participant_id", "in": "path", "required": True, "schema": string()},
                ],
                "responses": {"200": response("The participant", ref("Participant")), **KNOWN},
            }
        },
        "/v2/conferences/{conference_id}/actions/{action}": {
            "post": {
                "summary": "join, leave, mute, unmute, hold, unhold, play, stop, send_dtmf, update,"
                " end (the SDK's end_conference), record_start, record_stop, record_pause or"
                " record_resume",
                "security": SECURITY,
                "parameters": [CONFERENCE_ID, action],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"anyOf": bodies}}},
                },
                "responses": {"200": response("Accepted", ref("CommandResult")), **KNOWN},
            }
        },
    }
