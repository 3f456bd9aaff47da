"""The Twilio simulator's own TwiML reader: strict, written from Twilio's TwiML reference and the
twilio-python SDK's ``twiml/voice_response.py`` (verb, noun and attribute names), apart from
callbridge's renderer so that the two cannot share a mistake.

It reads the verbs the simulator runs: ``<Connect action method><Stream url name track
statusCallback statusCallbackMethod><Parameter name value/></Stream></Connect>``,
``<Pause length>``, ``<Redirect method>URL</Redirect>``, ``<Hangup/>`` and ``<Reject reason>``.
What Twilio would refuse raises ``TwimlError`` with Twilio's code: 12100 "Document parse
failure" (not XML, or the root is not ``<Response>``) or 12200 "Schema validation warning" (an
unknown verb, noun or attribute, a bad value). A real verb the simulator does not run (``<Say>``,
``<Dial>``, ...) is refused with code ``sim-unsupported``, so no test passes by accident.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

__all__ = [
    "Connect",
    "Hangup",
    "Pause",
    "Redirect",
    "Reject",
    "TwimlError",
    "Verb",
    "parse",
]

# Voice verbs in twilio-python's VoiceResponse (twiml/voice_response.py) that the simulator
# does not run: Twilio would, so they are not schema errors.
_REAL_VERBS: Final = frozenset({
    "Dial", "Echo", "Enqueue", "Gather", "Leave", "Pay", "Play", "Prompt", "Queue", "Record",
    "Refer", "Say", "Sms", "Start", "Stop",
})  # fmt: skip
_METHODS: Final = frozenset({"GET", "POST"})
_TRACKS: Final = frozenset({"inbound_track", "outbound_track", "both_tracks"})


class TwimlError(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Connect:
    """``<Connect><Stream>``: a bidirectional stream; ``action`` is fetched when it ends."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Pause:
    length_s: int = 1


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Literal["busy", "rejected"] = "rejected"


Verb: TypeAlias = Connect | Pause | Redirect | Hangup | Reject


def _schema(detail: str) -> TwimlError:
    return TwimlError("12200", detail)


def _attributes(element: ET.Element, allowed: set[str]) -> dict[str, str]:
    unknown = set(element.attrib) - allowed
    if unknown:
        raise _schema(f"<{element.tag}> has unknown attribute(s) {sorted(unknown)}")
    return dict(element.attrib)


def _no_children(element: ET.Element) -> None:
    if len(element):
        raise _schema(f"<{element.tag}> cannot hold <{element[0].tag}>")


def _method(value: str | None, where: str) -> str:
    method = (value or "POST").upper()
    if method not in _METHODS:
        raise _schema(f"{where} method must be GET or POST, not {value!r}")
    return method


def parse(document: str | bytes) -> tuple[Verb, ...]:
    """The verbs of a TwiML document, in order; ``TwimlError`` for anything Twilio refuses."""
    # ElementTree refuses a str that still carries an encoding declaration; bytes are fine.
    raw = document.encode("utf-8") if isinstance(document, str) else document
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise TwimlError("12100", f"Document parse failure: {exc}") from None
    if root.tag != "Response":
        raise TwimlError("12100", f"Document parse failure: root is <{root.tag}>, not <Response>")
    _attributes(root, set())
    return tuple(_verb(element) for element in root)


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Hangup":
        _attributes(element, set())
        _no_children(element)
        return Hangup()
    if tag == "Reject":
        reason = _attributes(element, {"reason"}).get("reason", "rejected")
        _no_children(element)
        if reason not in ("busy", "rejected"):
            raise _schema(f"<Reject> reason must be busy or rejected, not {reason!r}")
        return Reject("busy" if reason == "busy" else "rejected")
    if tag == "Pause":
        length = _attributes(element, {"length"}).get("length", "1")
        _no_children(element)
        # twilio.com/docs/voice/twiml/pause: length is an "integer > 0", default 1 second.
        if not (length.isascii() and length.isdigit()) or int(length) == 0:
            raise _schema(f"<Pause> length must be a whole number of seconds, not {length!r}")
        return Pause(int(length))
    if tag == "Redirect":
        method = _method(_attributes(element, {"method"}).get("method"), "<Redirect>")
        _no_children(element)
        url = (element.text or "").strip()
        if not url:
            raise _schema("<Redirect> holds no URL")
        return Redirect(url, method)
    if tag == "Connect":
        return _connect(element)
    if tag in _REAL_VERBS:
        raise TwimlError("sim-unsupported", f"the simulator does not run <{tag}>")
    raise _schema(f"unknown verb <{tag}>")


def _connect(element: ET.Element) -> Connect:
    attributes = _attributes(element, {"action", "method"})
    nouns = list(element)
    if len(nouns) != 1 or nouns[0].tag != "Stream":
        # <Connect> also takes <Room>, <ConversationRelay>, ...: not simulated.
        raise TwimlError("sim-unsupported", "the simulator runs <Connect> with one <Stream>")
    stream = nouns[0]
    stream_attributes = _attributes(
        stream, {"url", "name", "track", "statusCallback", "statusCallbackMethod"}
    )
    url = stream_attributes.get("url")
    if not url:
        raise _schema("<Stream> lacks its url attribute")
    if stream_attributes.get("track", "inbound_track") not in _TRACKS:
        raise _schema(f"<Stream> track {stream_attributes['track']!r} is not a track")
    parameters: dict[str, str] = {}
    for child in stream:
        child_attributes = _attributes(child, {"name", "value"})
        name, value = child_attributes.get("name"), child_attributes.get("value")
        if child.tag != "Parameter" or name is None or value is None:
            raise _schema("<Stream> children must be <Parameter name=.. value=..>")
        _no_children(child)
        parameters[name] = value
    return Connect(
        url=url,
        parameters=parameters,
        name=stream_attributes.get("name"),
        action=attributes.get("action"),
        method=_method(attributes.get("method"), "<Connect>"),
    )
