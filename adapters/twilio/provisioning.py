"""Connecting a Twilio number to callbridge, and undoing it (PROTOCOLS.md 4.2).

Attaching finds the number on the configuration's account
(``GET .../IncomingPhoneNumbers.json?PhoneNumber=``; an empty list means it is not there, which
is the user's mistake: ``ValidationError``, a 400) and points its voice webhook, its
``VoiceFallbackUrl`` and status callbacks at callbridge (``POST .../IncomingPhoneNumbers/
{PNsid}.json``). The fallback is the voice webhook itself: a voice webhook callbridge answers
with a 5xx (an input it failed on and rolled back) is sent again there, and handled afresh.
Detaching clears them,
but only while the voice webhook still points at callbridge: a number the user has meanwhile
pointed elsewhere is left alone. Twilio unreachable or refusing: ``ProviderError`` (a 502).

Two number settings override ``VoiceUrl`` at Twilio (the twilio SDK's ``IncomingPhoneNumber``
resource, ``twilio/rest/api/v2010/account/incoming_phone_number/__init__.py``: "If a
`voice_application_sid` is present, we ignore all of the voice urls"; "If a `trunk_sid` is
present, we ignore all of the voice urls and voice applications"):

- ``voice_application_sid`` (a TwiML App): attaching clears it (an empty ``VoiceApplicationSid``
  in the same update), else calls would keep going to the App while connect reported success;
- ``trunk_sid`` (an Elastic SIP Trunk): attaching refuses with a ``ValidationError`` (400) and
  changes nothing. The trunk is the user's routing decision, possibly serving other numbers and
  a PBX; taking the number off it is theirs to make, not a side effect of connect.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.twilio.gateway import RestReply, TwilioRest
from adapters.twilio.webhooks import lookup_phone_number, update_phone_number
from engine.errors import ProviderError, ValidationError
from engine.logs import get_logger

__all__ = ["IncomingNumber", "attach", "detach", "find_number"]

log = get_logger("callbridge.twilio")


@dataclass(frozen=True, slots=True)
class IncomingNumber:
    sid: str
    voice_url: str
    voice_application_sid: str | None = None  # a TwiML App that overrides voice_url
    trunk_sid: str | None = None  # a SIP trunk that takes every call to the number


def _text(entry: dict[str, object], name: str) -> str | None:
    """A string field of a lookup entry; Twilio writes null (or "") for an unset one."""
    value = entry.get(name)
    return value if isinstance(value, str) and value else None


def _refused(reply: RestReply, what: str) -> Exception:
    if reply.status in (401, 403):
        return ValidationError(
            f"Twilio refused the configuration's credentials while {what} ({reply.detail()}); "
            "check its account_sid and auth_token",
            field="provider_config_id",
        )
    return ProviderError(f"Twilio refused {what}: {reply.detail()}")


async def find_number(rest: TwilioRest, number: str) -> IncomingNumber | None:
    """The IncomingPhoneNumber for ``number`` on the account, or None if it is not there."""
    reply = await rest.send(lookup_phone_number(rest.account_sid, number, base_url=rest.base_url))
    if not reply.ok:
        raise _refused(reply, f"looking up phone number {number}")
    document = reply.json()
    numbers = document.get("incoming_phone_numbers") if isinstance(document, dict) else None
    if not isinstance(numbers, list):
        raise ProviderError("Twilio's phone number lookup lacks incoming_phone_numbers")
    for entry in numbers:
        if isinstance(entry, dict) and entry.get("phone_number", number) == number:
            sid = entry.get("sid")
            if not isinstance(sid, str):
                raise ProviderError("Twilio's phone number lookup entry lacks its sid")
            return IncomingNumber(
                sid,
                _text(entry, "voice_url") or "",
                voice_application_sid=_text(entry, "voice_application_sid"),
                trunk_sid=_text(entry, "trunk_sid"),
            )
    return None


async def attach(rest: TwilioRest, number: str, *, voice_url: str, status_url: str) -> None:
    found = await find_number(rest, number)
    if found is None:
        raise ValidationError(
            f"phone number {number} is not on this Twilio account", field="phone_number"
        )
    if found.trunk_sid is not None:
        raise ValidationError(
            f"phone number {number} is on Twilio SIP trunk {found.trunk_sid}, so Twilio sends "
            "its calls to the trunk and never to callbridge; remove the number from the trunk "
            "first, then connect it again",
            field="phone_number",
        )
    request = update_phone_number(
        rest.account_sid,
        found.sid,
        voice_url=voice_url,
        status_callback=status_url,
        voice_fallback_url=voice_url,
        # Sent even when the lookup showed none: it costs nothing and closes the window in
        # which someone sets an App between our lookup and this update.
        clear_voice_application=True,
        base_url=rest.base_url,
    )
    reply = await rest.send(request)
    if not reply.ok:
        raise _refused(reply, f"updating phone number {number}")
    log.info(
        "twilio number points at callbridge",
        number=number, number_sid=found.sid,
        cleared_voice_application=found.voice_application_sid,
    )  # fmt: skip


async def detach(rest: TwilioRest, number: str, *, voice_url: str) -> None:
    found = await find_number(rest, number)
    if found is None:
        log.info("twilio number already gone from the account", number=number)
        return
    if found.voice_url != voice_url:
        log.info(
            "twilio number no longer points at callbridge; left as it is",
            number=number,
            voice_url=found.voice_url,
        )
        return
    request = update_phone_number(
        rest.account_sid,
        found.sid,
        voice_url="",
        status_callback="",
        voice_fallback_url="",
        base_url=rest.base_url,
    )
    reply = await rest.send(request)
    if not reply.ok:
        raise _refused(reply, f"resetting phone number {number}")
    log.info("twilio number released", number=number, number_sid=found.sid)
