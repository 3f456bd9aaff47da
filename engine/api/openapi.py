"""The OpenAPI 3.1 document of every route, with request and response schemas.

Kept beside the handlers and checked by a test that validates the document and compares its
paths with the application's router, so a route cannot be added without being described.
"""

from __future__ import annotations

from typing import Any

from engine.api.bridges import MAX_CHANNELS
from engine.api.envelopes import uses_telnyx_envelope
from engine.api.rate_limit import LIMITED_PREFIXES

Schema = dict[str, Any]

PLATFORM = "/api/v2/platform/telephony"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: list[str] | None = None, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def ok_envelope(data: Schema, *, counted: bool = False) -> Schema:
    props: dict[str, Schema] = {
        "status_code": {"type": "integer"},
        "message": string(),
        "data": data,
    }
    required = ["status_code", "message", "data"]
    if counted:
        props["count"] = {"type": "integer"}
        required.append("count")
    return {"type": "object", "properties": props, "required": required}


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def response(description: str, schema: Schema | None = None) -> Schema:
    out: Schema = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def platform_errors(*statuses: int) -> dict[str, Schema]:
    names = {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        # The provider's API could not be reached or refused the change (number attach/detach).
        502: "Provider unreachable or refused the request",
        # The live legs could not be counted (CALLBRIDGE_REDIS_URL's Redis unreachable).
        503: "Live legs cannot be counted now",
    }
    return {str(s): response(names[s], ref("PlatformError")) for s in (401, 403, *statuses)}


def platform_op(
    summary: str,
    ok_status: int,
    ok_schema: Schema,
    *errors: int,
    body: Schema | None = None,
    params: list[Schema] | None = None,
) -> Schema:
    op: Schema = {
        "summary": summary,
        "security": [{"PlatformToken": [], "OrgHandle": []}],
        "parameters": [{"$ref": "#/components/parameters/ProductID"}, *(params or [])],
        "responses": {str(ok_status): response("Success", ok_schema), **platform_errors(*errors)},
    }
    if body is not None:
        op["requestBody"] = json_body(body)
    return op


def path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


STATUS = string(enum=["ACTIVE", "DRAFT", "INACTIVE"])


def any_case(*words: str) -> Schema:
    """A string equal to one of ``words`` in any ASCII case, as the API reads statuses."""
    letters = ("".join(f"[{c.upper()}{c.lower()}]" for c in word) for word in words)
    return string(pattern=f"^(?:{'|'.join(letters)})$")


# What requests may send, as the handlers read it: a status in any case; null (and for URLs
# "") meaning "not given"; a URL the URL policy then judges (engine/url_policy.py).
STATUS_IN = any_case("ACTIVE", "DRAFT", "INACTIVE")
OPTIONAL_URL = nullable({"anyOf": [string(format="uri"), string(maxLength=0)]})
SLUG = path_param("slug", string())
CONFIG_ID = path_param("config_id", {"type": "integer"})
PAGING = [
    query_param("page", {"type": "integer", "minimum": 1}),
    query_param("page_size", {"type": "integer", "minimum": 1, "maximum": 100}),
]
ID_OR_STRING: Schema = {"anyOf": [{"type": "integer"}, string(pattern=r"^\d+$")]}

SCHEMAS: dict[str, Schema] = {
    "PlatformError": obj(
        ["status_code", "message", "errors"],
        status_code={"type": "integer"},
        message=string(),
        errors={},
    ),
    "Number": obj(
        ["id", "number_id", "number", "state", "active", "channels_count", "status"],
        id={"type": "integer"},
        number_id={"type": "integer"},
        number=string(),
        state=string(),
        active={"type": "boolean"},
        channels_count={"type": "integer", "minimum": 1},
        status=string(),
    ),
    "ProviderCredential": obj(
        ["id", "name", "provider", "provider_details", "active"],
        id={"type": "integer"},
        name=string(),
        provider={"type": "integer"},
        provider_details=obj(
            ["id", "name", "type"], id={"type": "integer"}, name=string(), type=string()
        ),
        active={"type": "boolean"},
    ),
    "BridgeSummary": obj(
        ["id", "name", "slug", "status", "description"],
        id={"type": "integer"},
        name=string(),
        slug=string(),
        status=STATUS,
        description=string(),
    ),
    "Bridge": obj(
        [
            "id",
            "name",
            "description",
            "status",
            "documents_status",
            "slug",
            "numbers",
            "hub",
            "region",
        ],
        id={"type": "integer"},
        name=string(),
        description=string(),
        status=STATUS,
        documents_status=string(),
        slug=string(),
        numbers={"type": "array", "items": ref("Number")},
        hub={"type": "integer"},
        region=string(),
        webhook_url=nullable(string(format="uri")),
        provider_credential=nullable(ref("ProviderCredential")),
        created=string(format="date-time"),
        modified=string(format="date-time"),
        organization=ref("Organization"),
    ),
    "Organization": obj(
        ["org_id", "name", "domain_handle"],
        org_id={"type": "integer"},
        name=string(),
        domain_handle=string(),
        domain=string(),
        token=nullable(string()),
        created=string(),
        modified=string(),
        status=string(),
    ),
    "Provider": obj(
        ["id", "name", "slug", "type"],
        id={"type": "integer"},
        name=string(),
        slug=string(),
        type=string(enum=["TELEPHONY"]),
    ),
    "ProviderConfig": obj(
        ["id", "provider", "account_sid", "created_at"],
        id={"type": "integer"},
        provider=string(enum=["twilio", "telnyx"]),
        name=string(),
        account_sid=string(),
        public_key=nullable(string()),
        api_base_url=nullable(string(format="uri")),
        active={"type": "boolean"},
        created_at=string(format="date-time"),
        modified=string(format="date-time"),
    ),
    "Connection": obj(
        ["message", "bridge_slug"],
        message=string(),
        bridge_slug=string(),
        phone_number=string(),
        channels_count={"type": "integer", "minimum": 1},
        id={"type": "integer"},
        name=string(),
        slug=string(),
        provider_credential=nullable(ref("ProviderCredential")),
    ),
}

BRIDGE_CREATE = obj(
    ["name"],
    name=string(),
    description=nullable(string()),
    region=nullable(string()),
    status=nullable(STATUS_IN),
    webhook_url=OPTIONAL_URL,
)
BRIDGE_UPDATE = obj(
    None,
    name=string(),
    description=nullable(string()),
    region=string(),
    status=STATUS_IN,
    webhook_url=OPTIONAL_URL,
)
CONNECT = obj(
    None,
    provider_config_id=nullable(ID_OR_STRING),
    provider_credential_id=nullable(ID_OR_STRING),
    phone_number=nullable(string(pattern=r"^\+[1-9]\d{6,14}$")),
    channels_count=nullable(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_CHANNELS,
            "description": "How many live legs phone_number carries at once (needs "
            "phone_number). A newly connected number gets 100 when not given; connecting it "
            "again to the same bridge sets it when given and keeps it when not.",
        }
    ),
)
DISCONNECT = obj(
    None,
    phone_number=nullable(string()),
    provider_config_id=nullable(ID_OR_STRING),
    provider_credential_id=nullable(ID_OR_STRING),
)
CONFIG_CREATE = obj(
    ["provider", "account_sid", "auth_token"],
    provider={"anyOf": [string(), {"type": "integer"}]},
    account_sid=string(),
    auth_token=string(writeOnly=True),
    name=nullable(string()),
    public_key=nullable(string()),
    api_base_url=OPTIONAL_URL,
)
CONFIG_UPDATE = obj(
    None,
    name=string(),
    account_sid=string(),
    auth_token=string(writeOnly=True),
    public_key=nullable(string()),
    api_base_url=OPTIONAL_URL,
    active={"type": "boolean"},
)


def platform_paths() -> dict[str, Schema]:
    b = f"{PLATFORM}/bridges/"
    c = f"{PLATFORM}/providers-configurations/"
    empty = ok_envelope(obj())
    return {
        b: {
            "post": platform_op(
                "Create a bridge", 201, ok_envelope(ref("Bridge")), 400, 413, body=BRIDGE_CREATE
            ),
            "get": platform_op(
                "List bridges",
                200,
                ok_envelope({"type": "array", "items": ref("BridgeSummary")}, counted=True),
                400,
                params=[*PAGING, query_param("status", STATUS_IN)],
            ),
        },
        b + "{slug}/": {
            "get": platform_op("Get a bridge", 200, ok_envelope(ref("Bridge")), 404, params=[SLUG]),
            "patch": platform_op(
                "Update a bridge",
                200,
                ok_envelope(ref("Bridge")),
                400,
                404,
                413,
                body=BRIDGE_UPDATE,
                params=[SLUG],
            ),
            "delete": platform_op(
                "Delete a bridge (releases its numbers)", 200, empty, 404, 409, 503, params=[SLUG]
            ),
        },
        b + "{slug}/connect-provider/": {
            "post": platform_op(
                "Connect a provider configuration and number",
                200,
                ok_envelope(ref("Connection")),
                400,
                404,
                413,
                502,
                body=CONNECT,
                params=[SLUG],
            ),
        },
        b + "{slug}/disconnect-provider/": {
            "post": platform_op(
                "Disconnect a number or the provider",
                200,
                ok_envelope(ref("Connection")),
                400,
                404,
                413,
                502,
                body=DISCONNECT,
                params=[SLUG],
            ),
        },
        f"{PLATFORM}/providers/": {
            "get": platform_op(
                "List supported providers",
                200,
                ok_envelope({"type": "array", "items": ref("Provider")}, counted=True),
            ),
        },
        c: {
            "post": platform_op(
                "Create a provider configuration",
                201,
                ok_envelope(ref("ProviderConfig")),
                400,
                409,
                413,
                body=CONFIG_CREATE,
            ),
            "get": platform_op(
                "List provider configurations",
                200,
                ok_envelope({"type": "array", "items": ref("ProviderConfig")}, counted=True),
                400,
                params=PAGING,
            ),
        },
        c + "{config_id}/": {
            "get": platform_op(
                "Get a provider configuration",
                200,
                ok_envelope(ref("ProviderConfig")),
                404,
                params=[CONFIG_ID],
            ),
            "patch": platform_op(
                "Update (or rotate the token of) a provider configuration",
                200,
                ok_envelope(ref("ProviderConfig")),
                400,
                404,
                409,
                413,
                body=CONFIG_UPDATE,
                params=[CONFIG_ID],
            ),
            "delete": platform_op(
                "Delete a provider configuration", 200, empty, 404, 409, params=[CONFIG_ID]
            ),
        },
    }


def rate_limited(envelope: Schema) -> Schema:
    return {
        **response(
            "Over the organization's limit: its API request rate, or (dial) its live legs",
            envelope,
        ),
        "headers": {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


def with_rate_limits(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Add the 429 of ``engine.api.rate_limit`` to every operation of both API families, in
    the family's envelope; whatever else a path answers is its own document's business."""
    for path, operations in paths.items():
        if not path.startswith(LIMITED_PREFIXES):
            continue
        envelope = ref("TelnyxErrors") if uses_telnyx_envelope(path) else ref("PlatformError")
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:  # not "parameters"
                operation["responses"].setdefault("429", rate_limited(envelope))
    return paths


def build_openapi(
    extra_paths: dict[str, Schema] | None = None, extra_schemas: dict[str, Schema] | None = None
) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callbridge",
            "version": "0.1.0",
            "description": "Bridges platform API (Unpod-compatible), Call Control API "
            "(Telnyx-compatible), provider webhooks and operations.",
        },
        "paths": with_rate_limits({**platform_paths(), **(extra_paths or {})}),
        "components": {
            "schemas": {**SCHEMAS, **(extra_schemas or {})},
            "parameters": {
                "ProductID": {
                    "name": "Product-ID",
                    "in": "header",
                    "required": False,
                    "schema": string(),
                }
            },
            "securitySchemes": {
                "PlatformToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Token <token>",
                },
                "OrgHandle": {"type": "apiKey", "in": "header", "name": "Org-Handle"},
                "BearerToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
