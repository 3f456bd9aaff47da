"""OpenAPI description of the console's routes (engine/console): pages, session and feed."""

from __future__ import annotations

from engine.api.openapi import Schema, obj, path_param, response, string
from engine.console.controls import CONTROLS
from engine.console.guard import COOKIE, CSRF_HEADER

__all__ = ["SECURITY_SCHEME", "console_paths"]

SECURITY_SCHEME: Schema = {"type": "apiKey", "in": "cookie", "name": COOKIE}
SESSION: list[Schema] = [{"ConsoleSession": []}]
HTML: Schema = {"description": "An HTML page", "content": {"text/html": {"schema": string()}}}
ERROR = response("Not signed in (401), or a missing or wrong CSRF token or origin (403)")
OK = response("Done", obj(["data"], data=obj(["result"], result=string(enum=["ok"]))))
CSRF_PARAM: Schema = {"name": CSRF_HEADER, "in": "header", "required": True, "schema": string()}
TO_SIGN_IN: Schema = {"description": "Not signed in: to /console/signin"}


def console_paths() -> dict[str, Schema]:
    return {
        "/console": {
            "get": {
                "summary": "The operator console (signed in) or a redirect to sign in",
                "responses": {"200": HTML, "303": TO_SIGN_IN},
            }
        },
        "/console/signin": {
            "get": {"summary": "The sign-in page", "responses": {"200": HTML}},
            "post": {
                "summary": "Sign in with an organization's API token (form field `token`)",
                "requestBody": {
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": obj(["token"], token=string())
                        }
                    }
                },
                "responses": {
                    "303": {"description": "To /console with the session cookie, or back"},
                    "403": response("From another origin"),
                },
            },
        },
        "/console/signout": {
            "post": _op("End the session", OK, params=[CSRF_PARAM]),
        },
        "/console/static/{name}": {
            "get": {
                "summary": "The console's script, style and vendored toolkit",
                "parameters": [path_param("name", string())],
                "responses": {"200": {"description": "The file"}, "404": {"description": "No"}},
            }
        },
        "/console/api/session": {
            "get": _op("The organization signed in and the session's CSRF token", OK),
        },
        "/console/api/feed": {
            "get": {
                **_op("The organization's live view as server-sent events", OK),
                "responses": {
                    "200": {
                        "description": "events live, levels, bridges, webhooks, audit",
                        "content": {"text/event-stream": {"schema": string()}},
                    },
                    "401": ERROR,
                },
            }
        },
        "/console/api/rooms/{room_id}/audio": {
            "get": {
                **_op("Listen to a room: its members' audio summed, as server-sent events", OK),
                "parameters": [path_param("room_id", string())],
                "responses": {
                    "200": {
                        "description": "events audio: {rate: 8000, pcm: base64 of 16-bit "
                        "little-endian PCM (about 100 ms), level: dBFS}",
                        "content": {"text/event-stream": {"schema": string()}},
                    },
                    "401": ERROR,
                    "404": response("Another organization's, ended or unknown room"),
                },
            }
        },
        "/console/api/audit": {
            "get": _op("The organization's newest control actions", OK),
        },
        "/console/api/calls/{call_control_id}/actions/{action}": {
            "post": _op(
                "A control on a leg, through the Call Control API's parsing and runtime",
                OK,
                params=[
                    path_param("call_control_id", string()),
                    path_param("action", string(enum=sorted(CONTROLS))),
                    CSRF_PARAM,
                ],
                body=True,
            )
        },
    }


def _op(
    summary: str, ok: Schema, *, params: list[Schema] | None = None, body: bool = False
) -> Schema:
    op: Schema = {
        "summary": summary,
        "security": SESSION,
        "parameters": params or [],
        "responses": {
            "200": ok,
            "401": ERROR,
            "403": ERROR,
            **({"404": response("Another organization's or unknown leg")} if body else {}),
            **({"422": response("A bad field, or a state that refuses it")} if body else {}),
        },
    }
    if body:
        op["requestBody"] = {"content": {"application/json": {"schema": obj()}}}
    return op
