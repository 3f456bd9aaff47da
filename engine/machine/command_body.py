"""Typed, field-naming reads of a Call Control v2 JSON body, for ``engine.machine.commands``.

``Body`` reads one field at a time and raises ``ParameterError`` naming it (422: code 10004 for a
missing required field, 10015 for a bad value), the way Call Control v2 answers bad fields. It
also holds the checks that depend on the deployment: URLs callbridge will connect to pass the
URL policy (``engine.url_policy``), and ``file://`` audio must lie in the media directory.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TypedDict
from urllib.parse import unquote, urlsplit

from engine.errors import ValidationError
from engine.url_policy import check_url

__all__ = [
    "Body",
    "CommandBase",
    "Common",
    "ParameterError",
    "not_a_media_file",
    "parse_audio",
    "parse_digits",
    "parse_loop",
]

_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
DTMF_DIGITS = re.compile(r"^[0-9A-D*#wW]+$")


class ParameterError(ValidationError):
    """A bad body field. Call Control v2 answers those with 422, not the generic 400."""

    status = 422


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandBase:
    """What every command carries: ``client_state`` (base64, echoed on later webhooks) and
    ``command_id`` (a repeat on the same leg within 60 s is carried out once)."""

    client_state: str | None = None
    command_id: str | None = None


class Common(TypedDict):
    client_state: str | None
    command_id: str | None


class Body:
    """Typed, field-naming reads of a JSON body. Absent and null both mean "not given"."""

    def __init__(
        self,
        body: Mapping[str, object],
        *,
        allow_private_urls: bool,
        media_dir: str | None = None,
    ) -> None:
        self._body = body
        self._allow_private_urls = allow_private_urls
        self._media_dir = media_dir
        self._read: set[str] = set()  # the fields a parser looked at (``refuse_unread``)

    def media_file(self, name: str) -> str | None:
        """A ``file:///`` URL naming a file inside the media directory, else 422. The check is
        on the path alone, so a file outside gets the same answer whether or not it exists
        (the media plane checks again, after symlinks, when it opens the file)."""
        url = self.string(name)
        if url is None:
            return None
        refused = not_a_media_file(name)
        if self._media_dir is None or not url.startswith("file:///"):
            raise refused
        path = PurePosixPath(unquote(urlsplit(url).path))
        root = PurePosixPath(self._media_dir)
        if ".." in path.parts or not root.is_absolute() or root not in path.parents:
            raise refused
        return url

    def audio_url(self, name: str) -> str | None:
        """An http(s) URL callbridge may fetch for the tenant (``engine.url_policy``), or a
        ``file:///`` URL in the media directory (``media_file``)."""
        url = self.string(name)
        if url is not None and url.startswith(("http://", "https://")):
            return self.reachable(name, url)
        return self.media_file(name)

    def only(self, known: Collection[str]) -> None:
        """Refuse a field outside ``known``: for commands that take nothing they would ignore."""
        for name in self._body:
            if name not in known and name not in ("client_state", "command_id"):
                raise ParameterError(f"'{name}' is not supported by this command", field=name)

    def refuse_unread(self) -> None:
        """After a parser: a field it never looked at is one callbridge would ignore, so it is
        refused, named (422), rather than accepted and ignored (Telnyx's fields callbridge does
        not carry out, and anything unknown)."""
        for name, value in self._body.items():
            if name not in self._read and value is not None:
                raise ParameterError(f"'{name}' is not supported by callbridge", field=name)

    def has(self, name: str) -> bool:
        self._read.add(name)
        return self._body.get(name) is not None

    def raw(self, name: str) -> object:
        """The field as the JSON gave it (None when absent), for a shape no reader here has."""
        self._read.add(name)
        return self._body.get(name)

    def _get(self, name: str, required: bool) -> object:
        self._read.add(name)
        value = self._body.get(name)
        if value is None and required:
            raise ParameterError(f"'{name}' is required", field=name, code="10004")
        return value

    def string(
        self, name: str, *, required: bool = False, max_len: int | None = None
    ) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ParameterError(f"'{name}' must be a string", field=name)
        if value == "" and required:
            raise ParameterError(f"'{name}' must not be empty", field=name)
        if max_len is not None and not 1 <= len(value) <= max_len:
            raise ParameterError(f"'{name}' must be 1 to {max_len} characters", field=name)
        return value

    def file_name(self, name: str) -> str | None:
        """A file name a tenant may choose: letters, digits, '.', '_' and '-', at most 40, never
        '.' or '..': it can neither leave its directory nor name one."""
        value = self.string(name, max_len=40)
        if value is not None and (not _FILE_NAME.fullmatch(value) or value in (".", "..")):
            raise ParameterError(
                f"'{name}' may hold only letters, digits, '.', '_' and '-', and not be '.' or '..'",
                field=name,
            )
        return value

    def req_string(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None  # required=True never returns None
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.string(name)
        if value is None:
            return default
        if value not in allowed:
            raise ParameterError(f"'{name}' must be one of: {', '.join(allowed)}", field=name)
        return value

    def opt_choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        if not self.has(name):
            return None
        return self.choice(name, allowed, "")

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ParameterError(f"'{name}' must be a boolean", field=name)
        return value

    def integer(self, name: str, lo: int, hi: int | None, default: int | None) -> int | None:
        value = self._get(name, False)
        if value is None:
            return default
        # JSON true is an int to Python; Call Control's integer fields refuse it.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"'{name}' must be an integer", field=name)
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ParameterError(f"'{name}' must be {bound}", field=name)
        return value

    def req_integer(self, name: str, lo: int, hi: int | None, default: int) -> int:
        value = self.integer(name, lo, hi, default)
        assert value is not None  # a default was given
        return value

    def self_only(self, name: str) -> bool:
        """`park_after_unbridge`: Call Control v2 documents the single value "self"."""
        return self.opt_choice(name, ("self",)) is not None

    def base64(self, name: str, *, required: bool = False) -> str | None:
        value = self.string(name, required=required)
        if value is None:
            return None
        try:
            b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ParameterError(f"'{name}' must be valid base64", field=name) from None
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.string(name)
        if value is not None and not value.startswith(schemes):
            raise ParameterError(f"'{name}' must be a {' or '.join(schemes)} URL", field=name)
        return self.reachable(name, value) if value is not None else None

    def reachable(self, name: str, url: str) -> str:
        """``url`` if callbridge may connect there for a tenant (engine/url_policy.py)."""
        schemes = ("http", "https") if url.startswith("http") else ("ws", "wss")
        try:
            return check_url(url, name, schemes=schemes, allow_private=self._allow_private_urls)
        except ValidationError as exc:
            raise ParameterError(exc.detail, field=name) from None

    def common(self) -> Common:
        return {
            "client_state": self.base64("client_state"),
            "command_id": self.string("command_id"),
        }


def not_a_media_file(field: str = "audio_url") -> ParameterError:
    """The one answer for audio that is not a file in the media directory: a path outside it, a
    file that does not exist in it, or no media directory at all, so nobody learns which."""
    return ParameterError(
        f"'{field}' must be an http(s) URL, or a file:/// URL of an existing file in the media"
        " directory (CALLBRIDGE_MEDIA_DIR)",
        field=field,
    )


# Fields several commands read alike (calls' and conferences').
def parse_loop(b: Body) -> int | None:
    """Call Control's ``loop``: 1-100, or "infinity" (None)."""
    value = b._get("loop", False)
    if value == "infinity":
        return None
    if isinstance(value, str):
        raise ParameterError("'loop' must be an integer or \"infinity\"", field="loop")
    return b.integer("loop", 1, 100, 1)


def parse_audio(b: Body, *, required: bool = True) -> tuple[str | None, str | None]:
    """``audio_url`` and ``media_name``: at most one of them ("cannot be used together in one
    request"), and with ``required`` exactly one."""
    audio_url, media_name = b.audio_url("audio_url"), b.string("media_name")
    if audio_url is not None and media_name is not None:
        raise ParameterError(
            "'audio_url' and 'media_name' cannot be used together", field="audio_url"
        )
    if required and audio_url is None and media_name is None:
        raise ParameterError(
            "'audio_url' or 'media_name' is required", field="audio_url", code="10004"
        )
    return audio_url, media_name


def parse_digits(b: Body) -> tuple[str, int]:
    """send_dtmf's ``digits`` and ``duration_millis`` (100-500 ms, 250 by default)."""
    digits = b.req_string("digits")
    if not DTMF_DIGITS.match(digits):
        raise ParameterError("'digits' may hold only 0-9, A-D, *, #, w and W", field="digits")
    return digits, b.req_integer("duration_millis", 100, 500, 250)
