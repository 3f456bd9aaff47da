"""Twilio wire layer: signature, TwiML, Media Streams frames, webhooks and REST requests.

Frames and forms follow the recorded shapes in PROTOCOLS.md 4-5 (twilio/media-streams wire log,
twilio-python); the signature vector is Twilio's documentation example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from multidict import MultiDict

from adapters.streams import (
    DROP_REASONS,
    BadFrame,
    StreamCodec,
    StreamConnected,
    StreamDtmf,
    StreamMark,
    StreamMedia,
    StreamProtocolError,
    StreamStart,
    StreamStop,
    StreamUnknown,
)
from adapters.twilio import signature, twiml, webhooks
from adapters.twilio.stream import (
    TwilioStreamCodec,
    parse_message,
    render_clear,
    render_mark,
    render_media,
)
from media.inbound import MediaFormat

# --- X-Twilio-Signature --------------------------------------------------------------------

DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_TOKEN = "12345"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
TOKEN = "auth-token-of-the-account"


def reference_signature(token: str, data: str) -> str:
    """HMAC-SHA1 of an already-concatenated string, written out independently of the module."""
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_documentation_example_signature_is_reproduced() -> None:
    assert signature.compute_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert signature.validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_params_are_appended_sorted_by_name_then_distinct_sorted_values() -> None:
    params = {"b": "2", "a": ["z", "x", "x"], "B": "3"}
    expected = reference_signature(TOKEN, "https://h/p" + "B3" + "axaz" + "b2")
    assert signature.compute_signature(TOKEN, "https://h/p", params) == expected


def test_multidict_form_fields_sign_like_lists() -> None:
    form = MultiDict([("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered")])
    as_lists = {"StatusCallbackEvent": ["ringing", "answered"]}
    assert signature.compute_signature(TOKEN, "https://h/p", form) == (
        signature.compute_signature(TOKEN, "https://h/p", as_lists)
    )


def test_no_params_signs_the_url_alone() -> None:
    url = "https://h/voice?CallSid=CA1&From=%2B1555"
    assert signature.compute_signature(TOKEN, url, None) == reference_signature(TOKEN, url)
    assert signature.compute_signature(TOKEN, url, {}) == reference_signature(TOKEN, url)


@pytest.mark.parametrize(
    ("configured_url", "signed_url"),
    [
        ("https://h.example/voice", "https://h.example:443/voice"),
        ("https://h.example:443/voice", "https://h.example/voice"),
        ("https://h.example:8443/voice", "https://h.example/voice"),
        ("https://h.example:8443/voice", "https://h.example:8443/voice"),
        ("http://h.example/voice", "http://h.example:80/voice"),
    ],
)
def test_url_with_and_without_port_are_both_accepted(configured_url: str, signed_url: str) -> None:
    sig = signature.compute_signature(TOKEN, signed_url, DOC_PARAMS)
    assert signature.validate_signature(TOKEN, configured_url, DOC_PARAMS, sig)


def test_https_default_port_is_443_not_80() -> None:
    sig = signature.compute_signature(TOKEN, "https://h.example:80/voice", DOC_PARAMS)
    assert not signature.validate_signature(TOKEN, "https://h.example/voice", DOC_PARAMS, sig)


def test_get_webhook_carries_its_params_in_the_signed_url() -> None:
    url = "https://h.example/voice?CallSid=CA1&To=%2B15550002222"
    sig = reference_signature(TOKEN, url)
    assert signature.validate_signature(TOKEN, url, None, sig)
    tampered = url.replace("CA1", "CA2")
    assert not signature.validate_signature(TOKEN, tampered, None, sig)


def json_webhook(body: bytes) -> tuple[str, str]:
    url = f"https://h.example/hook?bodySHA256={hashlib.sha256(body).hexdigest()}"
    return url, reference_signature(TOKEN, url)


def test_body_sha256_variant_signs_url_and_checks_body_hash() -> None:
    body = b'{"CallSid":"CA1","CallStatus":"ringing"}'
    url, sig = json_webhook(body)
    assert signature.validate_signature(TOKEN, url, None, sig, body=body)


def test_body_sha256_variant_ignores_params_it_is_given() -> None:
    body = b'{"a":1}'
    url, sig = json_webhook(body)
    assert signature.validate_signature(TOKEN, url, {"a": "1"}, sig, body=body)


@pytest.mark.parametrize("body", [b'{"CallSid":"CA2"}', None])
def test_body_sha256_variant_rejects_other_or_missing_body(body: bytes | None) -> None:
    url, sig = json_webhook(b'{"CallSid":"CA1"}')
    assert not signature.validate_signature(TOKEN, url, None, sig, body=body)


def test_websocket_upgrade_is_signed_over_the_wss_url() -> None:
    url = "wss://cb.example.com/media/twilio"
    sig = reference_signature(TOKEN, url)
    assert signature.validate_signature(TOKEN, url, None, sig)


def test_websocket_upgrade_also_accepts_the_https_form() -> None:
    sig = reference_signature(TOKEN, "https://cb.example.com/media/twilio")
    assert signature.validate_signature(TOKEN, "wss://cb.example.com/media/twilio", None, sig)


def test_https_form_is_not_accepted_for_another_path() -> None:
    sig = reference_signature(TOKEN, "https://cb.example.com/media/other")
    assert not signature.validate_signature(TOKEN, "wss://cb.example.com/media/twilio", None, sig)


@pytest.mark.parametrize(
    ("token", "params", "sig"),
    [
        ("54321", DOC_PARAMS, DOC_SIGNATURE),
        (DOC_TOKEN, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIGNATURE),
        (DOC_TOKEN, {**DOC_PARAMS, "Extra": "x"}, DOC_SIGNATURE),
        (DOC_TOKEN, DOC_PARAMS, None),
        (DOC_TOKEN, DOC_PARAMS, ""),
        (DOC_TOKEN, DOC_PARAMS, DOC_SIGNATURE[:-2]),
        ("", DOC_PARAMS, DOC_SIGNATURE),
    ],
    ids=["wrong-token", "tampered", "added-param", "no-header", "empty", "truncated", "no-token"],
)
def test_signature_rejections(token: str, params: dict[str, str], sig: str | None) -> None:
    assert not signature.validate_signature(token, DOC_URL, params, sig)


# --- TwiML -----------------------------------------------------------------------------------

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def test_connect_stream_renders_parameters() -> None:
    document = twiml.connect_stream(
        "wss://cb.example.com/media/twilio", {"leg_token": "t0k", "bridge": "b1"}
    )
    assert document == (
        DECLARATION + '<Response><Connect><Stream url="wss://cb.example.com/media/twilio">'
        '<Parameter name="leg_token" value="t0k"/><Parameter name="bridge" value="b1"/>'
        "</Stream></Connect></Response>"
    )


def test_connect_stream_without_parameters_is_an_empty_element() -> None:
    assert twiml.connect_stream("wss://h/m", name="leg-1") == (
        DECLARATION
        + '<Response><Connect><Stream url="wss://h/m" name="leg-1"/></Connect></Response>'
    )


def test_connect_stream_escapes_attribute_values_and_round_trips() -> None:
    hostile = "a&b<c>\"d'\n\te"
    document = twiml.connect_stream("wss://h/m", {hostile: hostile})
    assert '"a&amp;b&lt;c&gt;&quot;d\'&#10;&#9;e"' in document
    assert twiml.parse_twiml(document) == (
        twiml.ConnectStream(url="wss://h/m", parameters={hostile: hostile}),
    )


@pytest.mark.parametrize(
    "url",
    [
        "wss://h/m?token=1",
        "wss://h/m?",
        "wss://h/m#frag",
        "https://h/m",
        "wss:///m",
    ],
)
def test_connect_stream_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="stream url"):
        twiml.connect_stream(url)


def test_connect_stream_refuses_oversized_parameter() -> None:
    with pytest.raises(ValueError, match="499"):
        twiml.connect_stream("wss://h/m", {"k": "v" * 499})
    twiml.connect_stream("wss://h/m", {"k": "v" * 498})


def test_connect_stream_refuses_characters_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match="XML"):
        twiml.connect_stream("wss://h/m", {"k": "a\x00b"})


def test_reject_and_hangup_documents() -> None:
    assert twiml.reject("busy") == DECLARATION + '<Response><Reject reason="busy"/></Response>'
    assert twiml.reject() == DECLARATION + '<Response><Reject reason="rejected"/></Response>'
    assert twiml.hangup() == DECLARATION + "<Response><Hangup/></Response>"
    assert twiml.parse_twiml(twiml.reject("busy")) == (twiml.Reject("busy"),)
    assert twiml.parse_twiml(twiml.hangup()) == (twiml.Hangup(),)


def test_reject_refuses_unknown_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        twiml.reject("later")  # type: ignore[arg-type]


def test_parse_twiml_reads_reject_default_and_bytes() -> None:
    assert twiml.parse_twiml(b"<Response><Reject/></Response>") == (twiml.Reject("rejected"),)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<Response><Say>hi</Say></Response>", "unsupported TwiML verb <Say>"),
        ("<Reject/>", "root"),
        ("<Response><Reject", "well-formed"),
        ('<Response><Reject reason="later"/></Response>', "reason"),
        ("<Response><Connect/></Response>", "exactly one"),
        ('<Response><Connect><Stream url="wss://h"><X/></Stream></Connect></Response>', "Param"),
        ("<Response><Connect><Stream/></Connect></Response>", "url"),
    ],
)
def test_parse_twiml_refuses_what_callbridge_never_renders(document: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        twiml.parse_twiml(document)


# --- Media Streams frames --------------------------------------------------------------------

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA1c4e9c3b2b6a4f8e9d7c6b5a4f3e2d1c"
ACCOUNT_SID = "AC2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"
MULAW_20MS = bytes(range(160))


def frame(obj: object) -> str:
    return orjson.dumps(obj).decode()


START: dict[str, Any] = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": ACCOUNT_SID,
        "streamSid": STREAM_SID,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"leg_token": "t0k"},
    },
    "streamSid": STREAM_SID,
}
MEDIA: dict[str, Any] = {
    "event": "media",
    "sequenceNumber": "3",
    "streamSid": STREAM_SID,
    "media": {
        "track": "inbound",
        "chunk": "2",
        "timestamp": "52",
        "payload": base64.b64encode(MULAW_20MS).decode(),
    },
}


def test_parse_connected() -> None:
    message = parse_message('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
    assert message == StreamConnected(version="1.0.0")


def test_parse_start() -> None:
    assert parse_message(frame(START)) == StreamStart(
        stream_id=STREAM_SID,
        call_id=CALL_SID,
        fmt=MediaFormat("audio/x-mulaw", 8000, 1),
        custom_parameters={"leg_token": "t0k"},
        client_state=None,
        tracks=("inbound",),
    )


def test_parse_start_with_stream_sid_only_at_top_level_and_no_parameters() -> None:
    dropped = ("streamSid", "customParameters")
    start = {k: v for k, v in START["start"].items() if k not in dropped}
    message = parse_message(frame({**START, "start": start}))
    assert isinstance(message, StreamStart)
    assert message.stream_id == STREAM_SID
    assert message.custom_parameters == {}


def test_parse_media_decodes_payload_and_string_counters() -> None:
    # The chunk orders the media; the message counter is read only when there is no chunk.
    assert parse_message(frame(MEDIA).encode()) == StreamMedia(
        payload=MULAW_20MS, chunk=2, sequence=None, track="inbound"
    )
    no_chunk = {**MEDIA, "media": {k: v for k, v in MEDIA["media"].items() if k != "chunk"}}
    assert parse_message(frame(no_chunk)) == StreamMedia(MULAW_20MS, None, 3, "inbound")


def test_fields_callbridge_does_not_use_never_cost_a_media_frame() -> None:
    # The media timestamp is not read, and the message counter only without a chunk: a value
    # a newer protocol sends in either must not drop the audio.
    for media in (with_media(timestamp="-5"), with_media(timestamp=True),
                  frame({**MEDIA, "sequenceNumber": "3.0"})):  # fmt: skip
        message = parse_message(media)
        assert isinstance(message, StreamMedia)
        assert message.payload == MULAW_20MS


def test_parse_dtmf_mark_stop() -> None:
    dtmf = {"event": "dtmf", "streamSid": STREAM_SID, "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": "1"}}  # fmt: skip
    mark = {"event": "mark", "sequenceNumber": "103", "streamSid": STREAM_SID,
            "mark": {"name": "greeting-done"}}  # fmt: skip
    stop = {"event": "stop", "sequenceNumber": "104", "streamSid": STREAM_SID,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}}  # fmt: skip
    assert parse_message(frame(dtmf)) == StreamDtmf("1")
    assert parse_message(frame(mark)) == StreamMark("greeting-done")
    assert parse_message(frame(stop)) == StreamStop()


def with_start(**changes: object) -> str:
    return frame({**START, "start": {**START["start"], **changes}})


def with_media(**changes: object) -> str:
    return frame({**MEDIA, "media": {**MEDIA["media"], **changes}})


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        (b"\xff\xfe{}", "bad_json", "not valid JSON"),
        ("[1, 2]", "not_object", "not a JSON object"),
        ('"media"', "not_object", "not a JSON object"),
        ('{"streamSid": "MZ"}', "missing_event", "no 'event'"),
        ('{"event": 7}', "missing_event", "no 'event'"),
        ('{"event": "media"}', "missing_field", "lacks the 'media' object"),
        (with_media(payload="@@@"), "bad_base64", "not valid base64"),
        (with_media(payload="AAA"), "bad_base64", "not valid base64"),
        (with_media(payload=None), "missing_field", "lacks the 'payload'"),
        (with_media(chunk="two"), "bad_field", "non-numeric 'chunk'"),
        (with_media(track=1), "bad_field", "non-string 'track'"),
        (frame({**MEDIA, "sequenceNumber": "3.0", "media": {**MEDIA["media"], "chunk": None}}),
         "bad_field", "non-numeric 'sequenceNumber'"),
        ('{"event": "mark", "mark": {}}', "missing_field", "lacks the 'name'"),
        ('{"event": "mark"}', "missing_field", "lacks the 'mark' object"),
        ('{"event": "dtmf", "dtmf": {"digit": 1}}', "missing_field", "lacks the 'digit'"),
        (with_start(callSid=None), "missing_field", "lacks the 'callSid'"),
        (frame({"event": "start", "start": {**START["start"], "streamSid": None}}),
         "missing_field", "lacks the 'streamSid'"),
        (with_start(mediaFormat=None), "missing_field", "lacks the 'mediaFormat'"),
        (with_start(customParameters={"a": 1}), "bad_field", "not a string map"),
        (with_start(tracks="inbound"), "bad_field", "'tracks'"),
    ],
)  # fmt: skip
def test_unreadable_frames_raise_bad_frame_with_a_drop_reason(
    text: str | bytes, kind: str, reason: str
) -> None:
    with pytest.raises(BadFrame, match=reason) as caught:
        parse_message(text)
    assert caught.value.kind == kind
    assert caught.value.kind in DROP_REASONS
    assert caught.value.close_code == 1007
    assert len(caught.value.reason.encode()) < 120
    # The event is known once the frame got that far: the session keeps a bad start fatal.
    unnamed = kind in ("bad_json", "not_object", "missing_event")
    assert caught.value.event == (None if unnamed else orjson.loads(text)["event"])


def test_start_format_errors_stay_refusals() -> None:
    # The media format is read before the stream is bound, so what it cannot say is fatal.
    with pytest.raises(StreamProtocolError, match="sampleRate") as caught:
        parse_message(with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000"}))
    assert caught.value.close_code == 1007


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ('{"event": "hello"}', "hello"),
        ('{"event": "transcription", "transcription": {"text": "hi"}, "sequenceNumber": "9"}',
         "transcription"),
        ('{"event": "error", "error": {"code": 31951}}', "error"),  # Twilio documents no error
        (frame({"event": "é" * 500}), "é" * 40),
    ],
)  # fmt: skip
def test_unknown_events_are_ignored_not_refused(text: str, event: str) -> None:
    assert parse_message(text) == StreamUnknown(event)


def test_unknown_fields_are_ignored_everywhere() -> None:
    extra = {"newField": {"nested": [1, 2]}, "anotherOne": None}
    media = {**MEDIA, **extra, "media": {**MEDIA["media"], **extra}}
    assert parse_message(frame(media)) == parse_message(frame(MEDIA))
    start = {**START, **extra, "start": {**START["start"], **extra}}
    assert parse_message(frame(start)) == parse_message(frame(START))
    mark = {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "m", **extra}, **extra}
    assert parse_message(frame(mark)) == StreamMark("m")
    dtmf = {"event": "dtmf", "dtmf": {"digit": "5", "duration": "100", **extra}, **extra}
    assert parse_message(frame(dtmf)) == StreamDtmf("5")
    stop = {"event": "stop", "stop": "not even an object", **extra}
    assert parse_message(frame(stop)) == StreamStop()


@pytest.mark.parametrize("version", [None, 2, 1.5, True, [], {"v": 1}, ""])
def test_connected_with_an_odd_version_is_still_read(version: object) -> None:
    message = parse_message(frame({"event": "connected", "protocol": "Call", "version": version}))
    expected = str(version) if isinstance(version, int | float) and version is not True else None
    assert message == StreamConnected(version=expected)


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/G722", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    ],
)
def test_the_start_reports_the_format_as_announced(media_format: dict[str, object]) -> None:
    # Whether callbridge can decode it is judged once the stream is bound to its leg
    # (media.inbound), so a format it cannot take ends that leg cleanly, not the parse.
    message = parse_message(with_start(mediaFormat=media_format))
    assert isinstance(message, StreamStart)
    assert message.fmt == MediaFormat(
        str(media_format["encoding"]), int(str(media_format["sampleRate"])),
        int(str(media_format["channels"])),
    )  # fmt: skip


def test_protocol_error_reason_fits_a_close_frame() -> None:
    error = StreamProtocolError("é" * 500)
    assert len(error.reason.encode()) < 120
    error.reason.encode("utf-8").decode("utf-8")
    bad = BadFrame("bad_field", "é" * 500, "media")
    assert len(bad.reason.encode()) < 120
    bad.reason.encode("utf-8").decode("utf-8")


def test_render_media_has_exactly_twilios_keys() -> None:
    text = render_media(STREAM_SID, MULAW_20MS)
    assert orjson.loads(text) == {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": base64.b64encode(MULAW_20MS).decode()},
    }


def test_render_mark_and_clear() -> None:
    assert orjson.loads(render_mark(STREAM_SID, "m1")) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": "m1"},
    }
    assert orjson.loads(render_clear(STREAM_SID)) == {"event": "clear", "streamSid": STREAM_SID}


def test_codec_is_the_stream_codec_seam() -> None:
    codec: StreamCodec = TwilioStreamCodec()
    assert codec.provider == "twilio"
    assert codec.parse(frame(MEDIA)) == parse_message(frame(MEDIA))
    assert codec.media_renderer("MZ1")(b"\xff") == render_media("MZ1", b"\xff")
    assert codec.render_mark("MZ1", "x") == render_mark("MZ1", "x")
    assert codec.render_clear("MZ1") == render_clear("MZ1")


# --- webhooks and REST requests ---------------------------------------------------------------

VOICE_FORM = {
    "AccountSid": ACCOUNT_SID,
    "ApiVersion": "2010-04-01",
    "CallSid": CALL_SID,
    "CallStatus": "ringing",
    "Called": "+15550002222",
    "Caller": "+15550001111",
    "Direction": "inbound",
    "From": "+15550001111",
    "FromCountry": "US",
    "To": "+15550002222",
    "ToCountry": "US",
    "CallToken": "%7B%22parentCallInfoToken%22%3A...",
    "StirVerstat": "TN-Validation-Passed-A",
}


def test_parse_voice_call() -> None:
    assert webhooks.parse_voice_call(VOICE_FORM) == webhooks.TwilioVoiceCall(
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        from_="+15550001111",
        to="+15550002222",
        direction="inbound",
        call_status="ringing",
    )


@pytest.mark.parametrize("missing", ["CallSid", "AccountSid", "From", "To", "Direction"])
def test_parse_voice_call_names_the_missing_field(missing: str) -> None:
    form = {k: v for k, v in VOICE_FORM.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        webhooks.parse_voice_call(form)


def test_parse_status_completed() -> None:
    form = {
        **VOICE_FORM,
        "CallStatus": "no-answer",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "2",
        "Timestamp": "Mon, 06 Jan 2025 12:00:05 +0000",
        "CallDuration": "0",
        "Duration": "0",
        "SipResponseCode": "487",
        "Direction": "outbound-api",
    }
    assert webhooks.parse_status(form) == webhooks.TwilioStatus(
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        call_status="no-answer",
        sequence_number=2,
        duration=0,
        sip_response_code=487,
        timestamp="Mon, 06 Jan 2025 12:00:05 +0000",
        direction="outbound-api",
        from_="+15550001111",
        to="+15550002222",
    )


def test_parse_status_refuses_non_numeric_counter() -> None:
    with pytest.raises(ValueError, match="SequenceNumber"):
        webhooks.parse_status({**VOICE_FORM, "SequenceNumber": "one"})
    with pytest.raises(ValueError, match="CallStatus"):
        webhooks.parse_status({k: v for k, v in VOICE_FORM.items() if k != "CallStatus"})


ACCOUNT_BASE = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"


def test_create_call_request() -> None:
    request = webhooks.create_call(
        ACCOUNT_SID,
        to="+15550002222",
        from_="+15550001111",
        url="https://cb.example.com/webhooks/twilio/voice",
        status_callback="https://cb.example.com/webhooks/twilio/status",
        timeout=30,
    )
    method, url, form = request
    assert (method, url) == ("POST", f"{ACCOUNT_BASE}/Calls.json")
    assert form == {
        "To": "+15550002222",
        "From": "+15550001111",
        "Url": "https://cb.example.com/webhooks/twilio/voice",
        "StatusCallback": "https://cb.example.com/webhooks/twilio/status",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "Timeout": "30",
    }


def test_create_call_with_twiml_and_custom_base() -> None:
    request = webhooks.create_call(
        ACCOUNT_SID, to="+1", from_="+2", twiml=twiml.hangup(), base_url="http://sim:9000/"
    )
    assert request.url == f"http://sim:9000/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert request.form == {"To": "+1", "From": "+2", "Twiml": twiml.hangup()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"url": "https://u", "twiml": "<Response/>"}, "exactly one"),
        (
            {"url": "https://u", "status_callback": "https://s", "status_callback_events": ["x"]},
            "unknown status callback events",
        ),
        ({"url": "https://u", "timeout": 0}, "timeout"),
    ],
)
def test_create_call_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhooks.create_call(ACCOUNT_SID, to="+1", from_="+2", **kwargs)  # type: ignore[arg-type]


def test_hangup_request_quotes_the_call_sid() -> None:
    assert webhooks.hangup_call(ACCOUNT_SID, CALL_SID) == (
        "POST",
        f"{ACCOUNT_BASE}/Calls/{CALL_SID}.json",
        {"Status": "completed"},
    )
    assert webhooks.hangup_call(ACCOUNT_SID, "../x?y").url.endswith("/Calls/..%2Fx%3Fy.json")


def test_phone_number_lookup_and_update_requests() -> None:
    method, url, form = webhooks.lookup_phone_number(ACCOUNT_SID, "+15550002222")
    assert (method, form) == ("GET", {})
    assert url == f"{ACCOUNT_BASE}/IncomingPhoneNumbers.json?PhoneNumber=%2B15550002222"
    assert parse_qs(urlsplit(url).query) == {"PhoneNumber": ["+15550002222"]}
    assert webhooks.update_phone_number(
        ACCOUNT_SID,
        "PN0123",
        voice_url="https://cb/webhooks/twilio/voice",
        status_callback="https://cb/webhooks/twilio/status",
    ) == (
        "POST",
        f"{ACCOUNT_BASE}/IncomingPhoneNumbers/PN0123.json",
        {
            "VoiceUrl": "https://cb/webhooks/twilio/voice",
            "VoiceMethod": "POST",
            "StatusCallback": "https://cb/webhooks/twilio/status",
            "StatusCallbackMethod": "POST",
        },
    )


def test_phone_number_sid_from_lookup_response() -> None:
    found = b'{"incoming_phone_numbers": [{"sid": "PN0123", "phone_number": "+15550002222"}]}'
    assert webhooks.phone_number_sid(found) == "PN0123"
    assert webhooks.phone_number_sid(b'{"incoming_phone_numbers": []}') is None
    with pytest.raises(ValueError, match="incoming_phone_numbers"):
        webhooks.phone_number_sid(b"{}")


def test_is_call_gone() -> None:
    gone = b'{"code": 20404, "message": "The requested resource was not found", "status": 404}'
    assert webhooks.is_call_gone(404, gone)
    assert not webhooks.is_call_gone(404, b'{"code": 20003}')
    assert not webhooks.is_call_gone(400, gone)
    assert not webhooks.is_call_gone(404, b"<html>")


def test_a_stream_document_can_hold_the_caller_after_the_stream() -> None:
    # Twilio runs the next verb once the stream's socket closes; the pause holds the caller
    # while callbridge (restarted, or after a dropped socket) asks for a new stream.
    document = twiml.connect_stream("wss://cb.example/media", {"t": "x"}, hold_s=60)
    verbs = twiml.parse_twiml(document)
    assert verbs[1:] == (twiml.Pause(60),) and isinstance(verbs[0], twiml.ConnectStream)
    with pytest.raises(ValueError, match="Pause"):
        twiml.connect_stream("wss://cb.example/media", hold_s=0)
