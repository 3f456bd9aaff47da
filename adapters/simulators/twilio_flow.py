"""TwiML execution for the Twilio simulator: ``TwimlFlow`` fetches one call's TwiML and runs it
verb by verb, as Twilio does; ``TwilioCall`` owns the call itself (ringing, answer, status
callbacks, webhooks, the REST resource) and hands its documents here.

A document is fetched with the call's signed webhook and read by the simulator's own strict
``twiml.parse``; the verbs then run in order:

- ``<Reject>`` first: never answered; ends ``busy`` (reason busy) or ``no-answer`` (rejected);
- ``<Hangup>``: answered, then completed;
- ``<Pause length>``: silence for that long; as the first verb it delays the answer;
- ``<Redirect method>URL``: fetches (signed) and runs new TwiML; a failed fetch ends the call;
- ``<Connect action method><Stream>``: answered; opens the bidirectional media stream
  (``TwilioStream``) and moves on only when it closes: to the TwiML ``action`` returns, else to
  the next verb; nothing left ends the call.

A document Twilio would refuse, or one the simulator cannot run, is a protocol error (12100,
12200 or ``sim-unsupported``) and the call fails; so does a fetch that gets no answer (11205) or
an error status (11200). A call update with ``Twiml`` (``run_instead``) stops what the call was
running and runs the new verbs in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from adapters.simulators.common import CallState
from adapters.simulators.streaming import StreamOpenError
from adapters.simulators.twilio_stream import TwilioStream
from adapters.simulators.twiml import Connect, Hangup, Pause, Redirect, Reject, TwimlError, Verb
from adapters.simulators.twiml import parse as parse_twiml

if TYPE_CHECKING:
    from adapters.simulators.twilio_calls import TwilioCall

__all__ = ["TwimlFlow"]


class TwimlFlow:
    """Runs one call's TwiML. At most one document runs at a time: the task running it is kept
    so that ``run_instead`` can stop it."""

    def __init__(self, call: TwilioCall) -> None:
        self.call = call
        self._task: asyncio.Task[Any] | None = None  # the task running the call's TwiML

    def parse(self, document: bytes) -> tuple[Verb, ...] | None:
        """The verbs of ``document``; None, with the protocol error recorded, if it is refused."""
        try:
            return parse_twiml(document)
        except TwimlError as exc:
            self.call.add_protocol_error(exc.code, exc.detail, document[:200])
            return None

    async def fetch(
        self,
        url: str,
        method: str,
        kind: str = "voice",
        *,
        fallback: tuple[str, str] | None = None,
    ) -> tuple[Verb, ...] | None:
        """Ask ``url`` for TwiML as Twilio does; on failure the call fails (None), unless a
        ``fallback`` (URL, method: the number's ``VoiceFallbackUrl``) gives TwiML instead.

        Twilio: "If Twilio is unable to retrieve or execute TwiML from your web server, a
        request is immediately made to the number's Fallback URL. Twilio submits the
        ``ErrorCode`` and ``ErrorUrl`` parameters" (twilio.com/docs/usage/security/
        availability-reliability)."""
        call = self.call
        params = call.webhook_params()
        got = await self._retrieve(kind, url, method, params)
        if isinstance(got, str) and fallback is not None:
            params |= {"ErrorCode": got, "ErrorUrl": url}
            got = await self._retrieve("voice_fallback", *fallback, params)
        if not isinstance(got, str):
            return got
        await call.end("failed")
        return None

    async def _retrieve(
        self, kind: str, url: str, method: str, params: dict[str, str]
    ) -> tuple[Verb, ...] | str:
        """The TwiML at ``url``, or the code of Twilio's error for why there is none (recorded
        as a protocol error, as Twilio's debugger logs it)."""
        record = await self.call.post_webhook(kind, url, method, params)
        if record.status is None:
            code, detail = "11205", f"HTTP connection failure: {record.error}"
        elif not record.ok:
            code, detail = "11200", f"HTTP retrieval failure: {record.status}"
        else:
            verbs = self.parse(record.response)
            return verbs if verbs is not None else "12100"  # parse() has recorded it
        self.call.add_protocol_error(code, detail, "")
        return code

    async def follow(self, verbs: tuple[Verb, ...], document_url: str) -> None:
        """Run TwiML verb by verb, as Twilio does. ``<Redirect>`` and a ``<Connect action>``
        replace the document with the one their URL returns (relative URLs resolve against the
        current document's); running out of verbs ends the call."""
        call = self.call
        self._task = asyncio.current_task()
        current: tuple[Verb, ...] | None = verbs
        while current is not None:
            following: tuple[Verb, ...] | None = None
            for index, verb in enumerate(current):
                if call.state is CallState.ENDED:
                    return
                if isinstance(verb, Reject):
                    await self._reject(verb)
                    return
                if isinstance(verb, Pause):
                    # "If <Pause> is the first verb in a TwiML document, Twilio will wait the
                    # specified number of seconds before picking up the call"
                    # (twilio.com/docs/voice/twiml/pause); later it holds the caller in silence.
                    if index or call.state >= CallState.ANSWERED:
                        call.answer()
                    await self._wait_or_end(verb.length_s)
                    continue
                call.answer()
                if isinstance(verb, Hangup):
                    break
                if isinstance(verb, Redirect):
                    document_url = urljoin(document_url, verb.url)
                    following = await self.fetch(document_url, verb.method, "redirect")
                    if following is None:
                        return  # the fetch failed and ended the call
                    break
                await self._connect_stream(verb)
                if verb.action is not None and call.state is not CallState.ENDED:
                    document_url = urljoin(document_url, verb.action)
                    following = await self.fetch(document_url, verb.method, "action")
                    if following is None:
                        return
                    break
            current = following
        await call.end("completed")

    async def run_instead(self, verbs: tuple[Verb, ...]) -> None:
        """A call update with ``Twiml``: what the call was running stops, a stream with a
        ``stop`` message and a normal close, and ``verbs`` run in its place (twilio-python
        ``CallInstance.update(twiml=...)``: "TwiML instructions for the call Twilio will use
        without fetching Twiml from url"; Twilio's "Modify live calls" guide: the call leaves
        what it is doing at once)."""
        call = self.call
        stream = call.stream  # taken first: the cancelled flow lets go of it
        flow, self._task = self._task, None
        if flow is not None and flow is not asyncio.current_task() and not flow.done():
            flow.cancel()
            await asyncio.gather(flow, return_exceptions=True)
        if stream is not None:
            await stream.stop()
        if call.state is not CallState.ENDED:
            call.spawn(self.follow(verbs, ""))

    async def _reject(self, verb: Reject) -> None:
        if self.call.state < CallState.ANSWERED:
            await self.call.end("busy" if verb.reason == "busy" else "no-answer")
        else:
            await self.call.end("completed")

    async def _wait_or_end(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.ended_event.wait(), seconds)

    async def _connect_stream(self, verb: Connect) -> None:
        call = self.call
        split = urlsplit(verb.url)
        if split.scheme not in ("wss", "ws") or split.query or "?" in verb.url:
            # Twilio refuses such a URL (31920) and moves on to the next verb.
            call.add_protocol_error("31920", "Stream URL must be wss:// with no query", verb.url)
            return
        stream = TwilioStream(call, verb.url, call.new_stream_sid(), verb.parameters)
        try:
            await stream.open()
        except StreamOpenError as exc:
            call.add_protocol_error("31920", f"Stream - WebSocket - Handshake Error: {exc}", "")
            return
        await stream.run()
