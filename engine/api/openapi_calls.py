"""OpenAPI description of the Call Control API (Telnyx-compatible) and its webhooks."""

from __future__ import annotations

from engine.api.openapi import Schema, json_body, nullable, obj, ref, response, string
from engine.machine.commands import ACTIONS
from engine.machine.gather_commands import MAX_WAIT_MILLIS
from engine.machine.model import RINGTONES

BOOL: Schema = {"type": "boolean"}
INT: Schema = {"type": "integer"}
COMMON: dict[str, Schema] = {
    "client_state": string(contentEncoding="base64"),
    "command_id": string(),
}
RECORD: dict[str, Schema] = {
    "record": string(enum=["record-from-answer"]),
    "record_channels": string(enum=["single", "dual"]),
    "record_format": string(enum=["wav", "mp3"]),
    "record_max_length": {"type": "integer", "minimum": 0, "maximum": 43200},
    "record_timeout_secs": {
        "type": "integer",
        "minimum": 0,
        "description": "seconds of silence after speech that end the recording; 0: never",
    },
    "record_track": string(enum=["both", "inbound", "outbound"]),
    "record_trim": string(enum=["trim-silence"]),
    "record_custom_file_name": string(),
}

# callbridge's extension to Telnyx's call status (engine/media_plane/stats.py); null before media.
_MEDIA_COUNTS = [
    "streams",
    "frames_in",
    "frames_out",
    "lost",
    "late",
    "reordered",
    "concealed",
    "output_dropped",
    "output_queue",
]
MEDIA_STATS: Schema = obj(
    [*_MEDIA_COUNTS, "jitter_ms"],
    **dict.fromkeys(_MEDIA_COUNTS, INT),
    jitter_ms={"type": "number", "minimum": 0},
)
MEDIA_STATS["description"] = (
    "What the leg's media streams carried (callbridge's extension): frames in and out, inbound "
    "frames lost (numbered and never played), late, reordered; ticks concealed with silence; "
    "outbound frames dropped and waiting; RFC 3550 inter-arrival jitter"
)

# The DTMF gathers (engine/machine/gather_commands.py: defaults from Telnyx's API reference).
DTMF_KEYS = "^[0-9A-D*#]+$"
WAIT_MILLIS: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MILLIS}
GATHER_RULES: dict[str, Schema] = {
    "minimum_digits": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1},
    "maximum_digits": {"type": "integer", "minimum": 1, "maximum": 128, "default": 128},
    "terminating_digit": string(
        pattern="^[0-9A-D*#]?$", default="#", description='"" collects "#" like any digit'
    ),
    "valid_digits": string(pattern=DTMF_KEYS, default="0123456789#*"),
    "inter_digit_timeout_millis": {**WAIT_MILLIS, "default": 5000},
}
GATHER_ENDED = (
    " Ends with call.gather.ended: digits, status valid | invalid | timeout | cancelled |"
    " call_hangup. Fields other than these are refused (422 naming them)."
)


def _gather_schemas() -> dict[str, Schema]:
    gather = obj(
        None,
        **GATHER_RULES,
        timeout_millis={**WAIT_MILLIS, "default": 60000, "description": "the whole gather"},
        initial_timeout_millis={**WAIT_MILLIS, "default": 5000},
        gather_id=string(maxLength=100, description="echoed in call.gather.ended"),
        **COMMON,
    )
    gather["additionalProperties"] = False
    gather["description"] = "gather: collect DTMF digits." + GATHER_ENDED
    audio = obj(
        None,
        **GATHER_RULES,
        timeout_millis={
            **WAIT_MILLIS,
            "default": 60000,
            "description": "the wait for a first digit once the prompt has played",
        },
        audio_url=string(description="http(s), or file:// in the media directory"),
        media_name=string(description="tone-<hz> or ringback-<country>"),
        invalid_audio_url=string(),
        invalid_media_name=string(),
        maximum_tries={"type": "integer", "minimum": 1, "default": 3},
        **COMMON,
    )
    audio["additionalProperties"] = False
    audio["description"] = (
        "gather_using_audio: play audio_url or media_name (a key press stops it) and collect"
        " DTMF digits; after invalid input or none, the invalid prompt, then the prompt again,"
        " up to maximum_tries." + GATHER_ENDED
    )
    stop = obj(None, **COMMON)
    stop["additionalProperties"] = False
    stop["description"] = "gather_stop: end the gather in progress (status cancelled)"
    return {"GatherAction": gather, "GatherUsingAudioAction": audio, "GatherStopAction": stop}


def _streaming_schemas() -> dict[str, Schema]:
    """streaming_start / streaming_stop (engine/machine/streaming_commands.py)."""
    start = obj(
        ["stream_url"],
        stream_url=string(description="ws:// or wss://, a public address (the URL policy)"),
        stream_track=string(
            enum=["inbound_track", "outbound_track", "both_tracks"],
            default="inbound_track",
            description="inbound: what the leg says; outbound: what it hears",
        ),
        stream_codec=string(
            enum=["PCMU", "PCMA", "default"],
            default="default",
            description="default: the leg's own G.711 law, else PCMU; G722, OPUS, AMR-WB and "
            "L16 are refused (422)",
        ),
        stream_bidirectional_mode=string(
            enum=["rtp"],
            description="rtp: raw audio the application sends back is played (mp3 is refused); "
            "without it the stream is one way",
        ),
        stream_bidirectional_codec=string(enum=["PCMU", "PCMA"], default="PCMU"),
        stream_bidirectional_sampling_rate={"type": "integer", "enum": [8000]},
        stream_bidirectional_target_legs=string(
            enum=["self", "opposite", "both"],
            default="opposite",
            description="who hears what the application sends: the leg, its room peers when "
            "the stream starts, or both",
        ),
        stream_auth_token=string(
            maxLength=4000,
            description="sent as the x-telnyx-streaming-auth-token header and in the connected "
            "frame",
        ),
        custom_parameters={
            "type": "array",
            "items": obj(["name"], name=string(), value=string()),
            "description": "in the start frame's custom_parameters",
        },
        enable_dialogflow={"type": "boolean", "enum": [False]},
        **COMMON,
    )
    start["additionalProperties"] = False
    start["description"] = (
        "streaming_start: the leg's audio to the application's websocket in Call Control's "
        "media-streaming format (connected, start, media, mark, error, stop). Webhooks: "
        "streaming.started (with stream_id), streaming.stopped (streaming_stop, the application "
        "closing its websocket, the leg's hangup), streaming.failed (failure_reason "
        "connection_failed or connection_lost). Other fields, dialogflow_config included, are "
        "refused (422 naming them)."
    )
    stop = obj(None, stream_id=string(description="omitted: every stream of the leg"), **COMMON)
    stop["additionalProperties"] = False
    stop["description"] = "streaming_stop: the stream gets its stop frame and is closed"
    return {"StreamingStartAction": start, "StreamingStopAction": stop}


SCHEMAS: dict[str, Schema] = {
    **_gather_schemas(),
    **_streaming_schemas(),
    "TelnyxErrors": obj(
        ["errors"],
        errors={
            "type": "array",
            "items": obj(
                ["code", "title", "detail"],
                code=string(),
                title=string(),
                detail=string(),
                source=obj(None, pointer=string()),
            ),
        },
    ),
    "CommandResult": obj(["data"], data=obj(["result"], result=string())),
    "Call": obj(
        ["data"],
        data=obj(
            ["call_control_id", "call_leg_id", "call_session_id", "is_alive"],
            record_type=string(),
            call_control_id=string(),
            call_leg_id=string(),
            call_session_id=string(),
            client_state=nullable(string()),
            is_alive=BOOL,
            call_duration=INT,
            state=string(),
            start_time=string(),
            end_time=nullable(string()),
            media=nullable(MEDIA_STATS),
        ),
    ),
    "DialRequest": obj(
        ["connection_id", "from", "to"],
        connection_id=string(description="a bridge slug"),
        **{"from": string()},
        to=string(description="+E.164, sip:, or ws:// / wss:// for a websocket agent leg"),
        link_to=string(),
        bridge_intent=BOOL,
        bridge_on_answer=BOOL,
        park_after_unbridge=string(enum=["self"]),
        prevent_double_bridge=BOOL,
        timeout_secs={"type": "integer", "minimum": 5, "maximum": 600},
        time_limit_secs={"type": "integer", "minimum": 30, "maximum": 14400},
        webhook_url=string(format="uri"),
        supervise_call_control_id=string(
            description="a leg in a bridge or conference: the new leg joins its room on answer"
        ),
        supervisor_role=string(
            enum=["barge", "whisper", "monitor"],
            description="required with supervise_call_control_id; barge: heard by all, "
            "whisper: only by the supervised leg, monitor: by none (it hears all)",
        ),
        **COMMON,
    ),
    "BridgeAction": obj(
        None,
        call_control_id=string(description="the other leg"),
        queue=string(),
        park_after_unbridge=string(enum=["self"]),
        hold_after_unbridge=BOOL,
        play_ringtone=BOOL,
        ringtone=string(enum=list(RINGTONES)),
        mute_dtmf=string(enum=["none", "both", "self", "opposite"]),
        prevent_double_bridge=BOOL,
        **RECORD,
        **COMMON,
    ),
    "ActionBody": {
        **obj(
            None,
            cause=string(
                enum=["CALL_REJECTED", "USER_BUSY", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE"]
            ),
            queue_name=string(),
            digits=string(
                pattern="^[0-9A-D*#wW]+$",
                description="send_dtmf: played after the leg's earlier sends (w: 0.5 s, W: 1 s)",
            ),
            duration_millis={"type": "integer", "minimum": 100, "maximum": 500, "default": 250},
            audio_url=string(),
            media_name=string(),
            format=string(enum=["wav", "mp3"]),
            channels=string(enum=["single", "dual"]),
            timeout_secs={"type": "integer", "minimum": 0, "default": 0},
            play_beep={"type": "boolean", "default": False},
            to=string(description="transfer: the new party (+E.164 or a SIP URI)"),
            target_leg_client_state=string(contentEncoding="base64"),
            early_media={"type": "boolean", "enum": [False]},
            role=string(
                enum=["barge", "whisper", "monitor"],
                description="switch_supervisor_role: the supervisor's new role (no "
                "client_state nor command_id)",
            ),
            recording_id=string(
                description="record_stop, record_pause, record_resume: the recording in "
                "progress (the only one a leg has; another id is refused)"
            ),
            recording_track=string(enum=["both", "inbound", "outbound"], default="both"),
            max_length={
                "type": "integer",
                "minimum": 0,
                "maximum": 14400,
                "default": 0,
                "description": "record_start: seconds of recorded time (0: no limit)",
            },
            trim=string(enum=["trim-silence"]),
            custom_file_name=string(
                pattern="^[A-Za-z0-9._-]{1,40}$",
                description="record_start: the file's name (not '.' or '..')",
            ),
            webhook_url=string(
                format="uri", description="answer: where the leg's later webhooks go"
            ),
            max_wait_time_secs={
                "type": "integer",
                "minimum": 1,
                "description": "enqueue: the wait limit",
            },
            max_size={"type": "integer", "minimum": 1, "description": "enqueue: the queue's size"},
            loop={
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 100},
                    {"type": "string", "enum": ["infinity"]},
                ],
                "default": 1,
                "description": "playback_start: passes of the audio",
            },
            overlay={
                "type": "boolean",
                "default": False,
                "description": "playback_start: mixed over the playing playback (self only); "
                "playback_stop: stop the overlay",
            },
            target_legs=string(enum=["self", "opposite", "both"], default="self"),
            stop=string(
                enum=["current", "all"],
                description="playback_start: cut the playing one (current) or the queue too "
                "(all); playback_stop: skip to the next (current) or clear (all, the default)",
            ),
            audio_type=string(enum=["mp3", "wav"]),
            cache_audio={"type": "boolean", "default": True},
            **COMMON,
        ),
        "description": "Fields of the action named in the path: bridge (see BridgeAction), "
        "unbridge (callbridge's extension), reject (cause), enqueue (queue_name, "
        "max_wait_time_secs, max_size), record_start (format, channels, max_length, trim, "
        "custom_file_name, recording_track, timeout_secs: seconds of silence after speech that "
        "end it, play_beep: a 1 kHz beep of 250 ms as it starts), record_pause and record_resume "
        "(recording_id: the recording in progress stops, or goes on, taking audio; one file, "
        "max_length counts recorded time), playback_start (audio_url "
        "file://, media_name, "
        "loop, overlay, target_legs, stop), send_dtmf (digits, duration_millis), "
        "switch_supervisor_role (role, of a leg dialled with supervise_call_control_id); gather, "
        "gather_using_audio and gather_stop: see GatherAction, GatherUsingAudioAction and "
        "GatherStopAction; streaming_start and streaming_stop: see StreamingStartAction and "
        "StreamingStopAction; transfer (to, from: default the leg's to, timeout_secs, "
        "time_limit_secs, target_leg_client_state, webhook_url: the new leg's, early_media: "
        "false only): the new party is dialled through the leg's bridge, bridged on answer.",
    },
    "PublicKey": obj(
        ["data"],
        data=obj(
            ["public_key", "keys"],
            public_key=string(
                contentEncoding="base64", description="the key signing webhooks now (Telnyx's)"
            ),
            keys={
                "type": "array",
                "description": "callbridge's addition: the current key first, then the keys a "
                "rotation replaced, newest first, each listed until its valid_until",
                "items": obj(
                    ["version", "public_key", "status", "retired_at", "valid_until"],
                    version=INT,
                    public_key=string(contentEncoding="base64"),
                    status=string(enum=["current", "retired"]),
                    retired_at=nullable(string(format="date-time")),
                    valid_until=nullable(string(format="date-time")),
                ),
            },
        ),
    ),
}

ERRORS = {
    "401": response("Bad or missing token", ref("TelnyxErrors")),
    "404": response("Unknown leg (or another organization's)", ref("TelnyxErrors")),
    "422": response(
        "Bad parameters, or the leg's state refuses the command (90018: ended)", ref("TelnyxErrors")
    ),
    "500": response(
        "The engine failed to apply the request and changed nothing; the detail names the fault"
        " id under which the error is logged",
        ref("TelnyxErrors"),
    ),
    "503": response(
        "The change could not be stored (the database refused the write) and was not made;"
        " the same request may be sent again",
        ref("TelnyxErrors"),
    ),
}
KEYS = ref("PublicKey")
CALL_ID = {"name": "call_control_id", "in": "path", "required": True, "schema": string()}
SECURITY: list[dict[str, list[str]]] = [{"BearerToken": []}]


def call_paths() -> dict[str, Schema]:
    action_param = {
        "name": "action",
        "in": "path",
        "required": True,
        "schema": string(enum=[*(a for a in ACTIONS if a != "client_state_update"), "transfer"]),
    }
    return {
        "/v2/calls": {
            "post": {
                "summary": "Dial: create an outgoing leg",
                "security": SECURITY,
                "requestBody": json_body(ref("DialRequest")),
                "responses": {"200": response("The new leg", ref("Call")), **ERRORS},
            }
        },
        "/v2/calls/{call_control_id}": {
            "get": {
                "summary": "Status of a leg",
                "security": SECURITY,
                "parameters": [CALL_ID],
                "responses": {"200": response("The leg", ref("Call")), **ERRORS},
            }
        },
        "/v2/calls/{call_control_id}/actions/{action}": {
            "post": {
                "summary": "A command on a leg (answer, bridge, unbridge, hangup, gather, ...)",
                "security": SECURITY,
                "parameters": [CALL_ID, action_param],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    ref("BridgeAction"),
                                    ref("GatherAction"),
                                    ref("GatherUsingAudioAction"),
                                    ref("GatherStopAction"),
                                    ref("StreamingStartAction"),
                                    ref("StreamingStopAction"),
                                    ref("ActionBody"),
                                ]
                            }
                        }
                    },
                },
                "responses": {"200": response("Accepted", ref("CommandResult")), **ERRORS},
            }
        },
        "/v2/calls/{call_control_id}/actions/client_state_update": {
            method: {
                "summary": "Replace the leg's client_state",
                "security": SECURITY,
                "parameters": [CALL_ID],
                "requestBody": json_body(obj(["client_state"], **COMMON)),
                "responses": {"200": response("Accepted", ref("CommandResult")), **ERRORS},
            }
            for method in ("put", "post")  # PUT as Telnyx documents it; POST as other actions
        },
        "/v2/public_key": {
            "get": {
                "summary": "The organization's Ed25519 webhook-signing public keys (base64)",
                "security": SECURITY,
                "responses": {
                    "200": response("The current key and those in their grace period", KEYS),
                    "401": ERRORS["401"],
                    "500": ERRORS["500"],
                },
            }
        },
        "/v2/public_key/actions/rotate": {
            "post": {
                "summary": "callbridge's extension: make a new webhook-signing key current; the "
                "replaced one stays listed for the grace period (CALLBRIDGE_SIGNING_KEY_GRACE_S)",
                "security": SECURITY,
                "responses": {
                    "200": response("The keys after the rotation", KEYS),
                    "401": ERRORS["401"],
                    "409": response(
                        "Another rotation of this organization's key won the race",
                        ref("TelnyxErrors"),
                    ),
                    "500": ERRORS["500"],
                },
            }
        },
    }
