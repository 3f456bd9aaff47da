"""Connecting a phone number to callbridge on the Telnyx side (issue 5, point 5).

A Telnyx configuration's ``account_sid`` is its Call Control connection (application) id. To
attach a number, callbridge:

1. looks the number up (``GET /v2/phone_numbers?filter[phone_number]=``): not on the account ->
   ``ValidationError`` (the platform API answers 400 with the reason);
2. points the number at the connection (``PATCH /v2/phone_numbers/{id}`` ``connection_id``)
   unless it already is;
3. points the connection's webhooks at callbridge (``PATCH /v2/call_control_applications/{id}``
   ``webhook_event_url`` and ``webhook_event_failover_url``) unless they already are: on Telnyx
   the webhook URL belongs to the connection, not the number, and the connection named by the
   configuration is callbridge's. The failover URL (``CallControlApplicationUpdateParams``:
   "The failover URL where webhooks related to this connection will be sent if sending to the
   primary URL fails") is callbridge's webhook too, so a webhook callbridge answered with a 5xx
   (an input it failed on and rolled back) comes back and is handled afresh.
   The update repeats the application's own ``application_name``, read with
   ``GET /v2/call_control_applications/{id}`` just before: the telnyx SDK's
   ``CallControlApplicationUpdateParams``
   (``telnyx/types/call_control_application_update_params.py``) marks both
   ``application_name`` and ``webhook_event_url`` ``Required``.

Detaching sets the number's ``connection_id`` back to null if it still names callbridge's
connection. Telnyx documents no "unset" for that field, so a refusal is logged and the
disconnect goes on: the number then still reaches callbridge, which finds it on no bridge and
ignores the call (logged). The connection's webhook URL is left alone: other numbers may use it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from adapters.telnyx.gateway import TelnyxReply, TelnyxRest
from adapters.telnyx.webhooks import (
    TelnyxRequest,
    lookup_phone_number,
    update_phone_number_connection,
)
from engine.errors import ProviderError, ValidationError
from engine.logs import get_logger
from engine.store.base import ProviderConfigRecord

__all__ = ["attach_number", "detach_number"]

log = get_logger("callbridge.telnyx")


def _refused_credentials(reply: TelnyxReply) -> None:
    if reply.status in (401, 403):
        raise ValidationError(
            f"Telnyx refused this configuration's API key (auth_token): {reply.error_text()}",
            field="auth_token",
        )


def _number_record(reply: TelnyxReply, number: str) -> dict[str, Any] | None:
    """The account's record of exactly ``number`` in a lookup answer (the filter is partial)."""
    try:
        document = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise ProviderError("Telnyx phone number lookup returned invalid JSON") from None
    records = document.get("data") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise ProviderError("Telnyx phone number lookup lacks the 'data' list")
    wanted = "+" + number.removeprefix("+")
    for record in records:
        if isinstance(record, dict) and record.get("phone_number") == wanted:
            if not isinstance(record.get("id"), str):
                raise ProviderError("Telnyx phone number record lacks its id")
            return record
    return None


async def _lookup(rest: TelnyxRest, number: str) -> dict[str, Any] | None:
    try:
        request = lookup_phone_number(number)
    except ValueError as exc:
        raise ValidationError(str(exc), field="phone_number") from None
    reply = await rest.send(request, "phone number lookup")
    _refused_credentials(reply)
    if not reply.ok:
        raise ProviderError(f"Telnyx refused the phone number lookup: {reply.error_text()}")
    return _number_record(reply, number)


def _application(connection_id: str, body: dict[str, Any] | None = None) -> TelnyxRequest:
    path = f"/v2/call_control_applications/{quote(connection_id, safe='')}"
    return TelnyxRequest("GET" if body is None else "PATCH", path, body)


async def attach_number(
    rest: TelnyxRest, config: ProviderConfigRecord, number: str, webhook_url: str
) -> None:
    record = await _lookup(rest, number)
    if record is None:
        raise ValidationError(
            f"{number} is not a phone number of this Telnyx account", field="phone_number"
        )
    connection_id = config.account_sid
    if str(record.get("connection_id")) != connection_id:
        reply = await rest.send(
            update_phone_number_connection(record["id"], connection_id), "phone number update"
        )
        _refused_credentials(reply)
        if reply.status == 422:
            raise ValidationError(
                f"Telnyx refused connection {connection_id} (the configuration's account_sid)"
                f" for {number}: {reply.error_text()}",
                field="account_sid",
            )
        if not reply.ok:
            raise ProviderError(f"Telnyx refused the phone number update: {reply.error_text()}")
    await _point_connection(rest, connection_id, webhook_url)
    log.info("telnyx number attached", number=number, connection_id=connection_id)


async def _point_connection(rest: TelnyxRest, connection_id: str, webhook_url: str) -> None:
    reply = await rest.send(_application(connection_id), "connection lookup")
    _refused_credentials(reply)
    if reply.status == 404:
        raise ValidationError(
            f"{connection_id} (the configuration's account_sid) is not a Call Control"
            " connection of this Telnyx account",
            field="account_sid",
        )
    if not reply.ok:
        raise ProviderError(f"Telnyx refused the connection lookup: {reply.error_text()}")
    application = reply.data()
    if (
        application.get("webhook_event_url") == webhook_url
        and application.get("webhook_event_failover_url") == webhook_url
    ):
        return
    name = application.get("application_name")
    if not isinstance(name, str) or not name:
        # The update must repeat it (see the module docstring); inventing one would rename
        # the user's application.
        raise ProviderError(
            f"Telnyx's Call Control application {connection_id} has no application_name"
        )
    body = {
        "application_name": name,
        "webhook_event_url": webhook_url,
        "webhook_event_failover_url": webhook_url,
        "webhook_api_version": "2",
    }
    reply = await rest.send(_application(connection_id, body), "connection update")
    if not reply.ok:
        raise ProviderError(f"Telnyx refused the connection update: {reply.error_text()}")
    log.info("telnyx connection webhooks point at callbridge", connection_id=connection_id)


async def detach_number(rest: TelnyxRest, config: ProviderConfigRecord, number: str) -> None:
    try:
        record = await _lookup(rest, number)
    except (ValidationError, ProviderError) as exc:
        log.warning("telnyx number detach: lookup failed", number=number, error=exc.detail)
        return
    if record is None or str(record.get("connection_id")) != config.account_sid:
        log.info("telnyx number detach: not on callbridge's connection", number=number)
        return
    request = TelnyxRequest(
        "PATCH", f"/v2/phone_numbers/{quote(record['id'], safe='')}", {"connection_id": None}
    )
    try:
        reply = await rest.send(request, "phone number update")
    except ProviderError as exc:
        log.warning("telnyx number detach failed", number=number, error=exc.detail)
        return
    if reply.ok:
        log.info("telnyx number detached", number=number)
    else:
        log.warning("telnyx number detach refused", number=number, error=reply.error_text())
