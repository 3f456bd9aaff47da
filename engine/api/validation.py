"""Reading request bodies and query strings into typed values, or clear errors.

Each helper raises ``ValidationError`` naming the field, so every bad input gets an
envelope that says what was wrong and where, and nothing is written before all input is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from engine.errors import ValidationError

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_MISSING = object()


async def json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. The size limit is enforced by aiohttp (413)."""
    raw = await request.read()
    if not raw and allow_empty:  # no body at all; whitespace is a body, and not JSON
        return {}
    if not raw.strip():
        raise ValidationError("Request body must be a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError("Request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("Request body must be a JSON object")
    return body


def required_str(body: Mapping[str, Any], field: str, *, missing: str, max_len: int = 255) -> str:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationError(missing, field=field)
    return _checked_str(value, field, max_len).strip()


def optional_str(
    body: Mapping[str, Any], field: str, *, max_len: int = 255, default: str | None = None
) -> str | None:
    value = body.get(field, _MISSING)
    if value is _MISSING or value is None:
        return default
    return _checked_str(value, field, max_len)


def _checked_str(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    if len(value) > max_len:
        raise ValidationError(f"{field} must be at most {max_len} characters", field=field)
    return value


def optional_bool(body: Mapping[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false", field=field)
    return value


def int_id(value: Any, field: str) -> int:
    """An integer id given as a JSON number or a numeric string (both occur in the seeds)."""
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be an integer", field=field)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (parsed := digits(value.strip())) is not None:
        number = parsed
    else:
        raise ValidationError(f"{field} must be an integer", field=field)
    if not 0 < number < 2**63:
        raise ValidationError(f"{field} must be a positive integer", field=field)
    return number


def optional_count(body: Mapping[str, Any], field: str, *, hi: int) -> int | None:
    """A count from 1 to ``hi`` given as a JSON integer; None when absent or null (not given,
    as for every optional field of this API). Unlike ids, a count is never read from a string:
    ``true`` (a bool is an int in Python), ``"2"`` and ``2.0`` are refused."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValidationError(f"{field} must be an integer from 1 to {hi}", field=field)
    return value


def e164(value: Any, field: str = "phone_number") -> str:
    if not isinstance(value, str) or not E164.match(value.strip()):
        raise ValidationError(
            "Phone number must be in E.164 format (e.g. +14155550100)", field=field
        )
    return value.strip()


def http_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError(f"{field} must be an http or https URL", field=field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"{field} must be an http or https URL", field=field)
    return value


def optional_url(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return None
    return http_url(value, field)


def query_int(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    number = digits(raw)
    if number is None or not lo <= number <= hi:
        raise ValidationError(f"{name} must be an integer from {lo} to {hi}", field=name)
    return number


def digits(raw: str) -> int | None:
    """A non-negative integer written in ASCII digits, None otherwise. ``str.isdigit`` alone
    also accepts "²" and other Unicode digits that ``int`` refuses, and ``int`` refuses more
    than 4300 digits: both would escape as 500s. No id or count needs more than 20 digits."""
    if not raw or len(raw) > 20 or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)
