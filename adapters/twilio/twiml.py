"""The three TwiML documents callbridge answers a voice webhook with, and a reader for them.

- ``connect_stream``: ``<Connect><Stream>``, a bidirectional media stream to the engine. Twilio
  refuses a stream URL with a query string (error 31920), so the leg token travels as a
  ``<Parameter>`` and comes back in the start frame's ``customParameters``.
- ``reject``: ``<Reject reason="busy|rejected"/>``; the call is never answered, so not billed.
- ``hangup``: ``<Hangup/>``.

``parse_twiml`` reads these back (and only these) for the Twilio simulator.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

__all__ = [
    "ConnectStream",
    "Hangup",
    "Pause",
    "Reject",
    "RejectReason",
    "TwimlVerb",
    "connect_stream",
    "hangup",
    "parse_twiml",
    "reject",
]

RejectReason = Literal["busy", "rejected"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
# Twilio: a Parameter's name and value together must stay under 500 characters.
_MAX_PARAMETER_LENGTH = 499
# XML 1.0 cannot carry these control characters at all, escaped or not.
_FORBIDDEN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# Whitespace in attributes is escaped so XML attribute normalization does not turn it into spaces.
_ATTRIBUTE_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass(frozen=True, slots=True)
class ConnectStream:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason = "rejected"


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Pause:
    length_s: int


TwimlVerb: TypeAlias = ConnectStream | Reject | Hangup | Pause


def _attribute(value: str) -> str:
    if _FORBIDDEN_XML.search(value):
        raise ValueError(f"TwiML attribute value holds a character XML cannot carry: {value!r}")
    return '"' + escape(value, _ATTRIBUTE_ENTITIES) + '"'


def connect_stream(
    url: str,
    parameters: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    hold_s: int | None = None,
) -> str:
    """``<Connect><Stream url=...>`` with one ``<Parameter>`` per entry of ``parameters``, and
    with ``hold_s`` a ``<Pause length>`` after it: Twilio runs the next verb when the stream's
    socket closes and ends the call when none is left (PROTOCOLS.md 4.4; twilio.com/docs/voice/
    twiml/connect), so the pause holds the caller while a new stream is asked for."""
    split = urlsplit(url)
    # ws:// is allowed for local simulators; Twilio itself only dials wss://.
    if split.scheme not in ("wss", "ws") or not split.netloc:
        raise ValueError(f"stream url must be a wss:// URL, not {url!r}")
    if split.query or split.fragment or "?" in url:
        raise ValueError("stream url must not carry a query string: send values as parameters")
    stream_attributes = f"url={_attribute(url)}"
    if name is not None:
        stream_attributes += f" name={_attribute(name)}"
    children = []
    for key, value in (parameters or {}).items():
        if len(key) + len(value) > _MAX_PARAMETER_LENGTH:
            raise ValueError(f"stream parameter {key!r}: name and value exceed 499 characters")
        children.append(f"<Parameter name={_attribute(key)} value={_attribute(value)}/>")
    stream = (
        f"<Stream {stream_attributes}>{''.join(children)}</Stream>"
        if children
        else f"<Stream {stream_attributes}/>"
    )
    if hold_s is not None and hold_s < 1:
        raise ValueError("<Pause> length must be a whole number of seconds above 0")
    hold = f'<Pause length="{hold_s}"/>' if hold_s is not None else ""
    return f"{_DECLARATION}<Response><Connect>{stream}</Connect>{hold}</Response>"


def reject(reason: RejectReason = "rejected") -> str:
    """``<Reject>``: Twilio plays a busy signal (``busy``) or a not-in-service tone."""
    if reason not in ("busy", "rejected"):
        raise ValueError(f"reject reason must be 'busy' or 'rejected', not {reason!r}")
    return f'{_DECLARATION}<Response><Reject reason="{reason}"/></Response>'


def hangup() -> str:
    return f"{_DECLARATION}<Response><Hangup/></Response>"


def parse_twiml(document: str | bytes) -> tuple[TwimlVerb, ...]:
    """The verbs of a TwiML document callbridge renders. Raises ValueError on anything else.

    Only for callbridge's own documents (the simulator); it is not hardened for hostile XML
    beyond what the stdlib parser already refuses.
    """
    # ElementTree refuses a str that still carries an encoding declaration; bytes are fine.
    raw = document.encode("utf-8") if isinstance(document, str) else document
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ValueError(f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise ValueError(f"TwiML root must be <Response>, not <{root.tag}>")
    return tuple(_parse_verb(element) for element in root)


def _parse_verb(element: ET.Element) -> TwimlVerb:
    if element.tag == "Hangup":
        return Hangup()
    if element.tag == "Reject":
        reason = element.get("reason", "rejected")
        if reason == "busy":
            return Reject("busy")
        if reason == "rejected":
            return Reject("rejected")
        raise ValueError(f"unknown <Reject> reason {reason!r}")
    if element.tag == "Connect":
        streams = list(element)
        if len(streams) != 1 or streams[0].tag != "Stream":
            raise ValueError("<Connect> must hold exactly one <Stream>")
        return _parse_stream(streams[0])
    if element.tag == "Pause":
        length = element.get("length", "1")
        if not (length.isascii() and length.isdigit()) or int(length) < 1:
            raise ValueError(f"<Pause> length must be a whole number of seconds, not {length!r}")
        return Pause(int(length))
    raise ValueError(f"unsupported TwiML verb <{element.tag}>")


def _parse_stream(stream: ET.Element) -> ConnectStream:
    url = stream.get("url")
    if not url:
        raise ValueError("<Stream> lacks its url attribute")
    parameters: dict[str, str] = {}
    for child in stream:
        name, value = child.get("name"), child.get("value")
        if child.tag != "Parameter" or name is None or value is None:
            raise ValueError("<Stream> children must be <Parameter name=.. value=..>")
        parameters[name] = value
    return ConnectStream(url=url, parameters=parameters, name=stream.get("name"))
