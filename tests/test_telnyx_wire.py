"""Telnyx wire layer: Ed25519 webhook signatures, media-stream frames, webhooks, REST requests.

Frames and webhooks follow the shapes in PROTOCOLS.md 1-3 (telnyx-python models, Telnyx's
streaming docs, a captured webhook log).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.streams import (
    DROP_REASONS,
    BadFrame,
    StreamCodec,
    StreamConnected,
    StreamDtmf,
    StreamError,
    StreamMark,
    StreamMedia,
    StreamProtocolError,
    StreamStart,
    StreamStop,
    StreamUnknown,
    media_message,
)
from adapters.telnyx import webhooks
from adapters.telnyx.signature import SignatureError, public_key_b64, sign_webhook, verify_webhook
from adapters.telnyx.stream import (
    TelnyxStreamCodec,
    parse_message,
    render_clear,
    render_mark,
    render_media,
)
from media.inbound import MediaFormat

# --- Ed25519 webhook signatures -------------------------------------------------------------

PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLIC_KEY = public_key_b64(PRIVATE_KEY)
BODY = b'{"data":{"event_type":"call.initiated","id":"e1","payload":{}}}'
SENT_AT = 1_700_000_000


def test_public_key_is_base64_of_32_raw_bytes() -> None:
    assert len(base64.b64decode(PUBLIC_KEY)) == 32


def test_signature_verifies_over_timestamp_pipe_body() -> None:
    # Signed with the raw key API, not sign_webhook, so the message layout is checked on its own.
    raw = PRIVATE_KEY.sign(b"1700000000|" + BODY)
    verify_webhook(PUBLIC_KEY, BODY, base64.b64encode(raw).decode(), "1700000000", SENT_AT)


def test_sign_webhook_round_trips() -> None:
    sig = sign_webhook(PRIVATE_KEY, BODY, SENT_AT)
    verify_webhook(PUBLIC_KEY, BODY, sig, str(SENT_AT), SENT_AT + 12.5)


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamp_at_the_tolerance_edge_is_accepted(skew: int) -> None:
    sig = sign_webhook(PRIVATE_KEY, BODY, SENT_AT)
    verify_webhook(PUBLIC_KEY, BODY, sig, str(SENT_AT), SENT_AT + skew)


GOOD_SIG = sign_webhook(PRIVATE_KEY, BODY, SENT_AT)


@pytest.mark.parametrize(
    ("key", "body", "sig", "timestamp", "now", "reason"),
    [
        (public_key_b64(OTHER_KEY), BODY, GOOD_SIG, str(SENT_AT), SENT_AT, "does not match"),
        (PUBLIC_KEY, BODY + b" ", GOOD_SIG, str(SENT_AT), SENT_AT, "does not match"),
        (PUBLIC_KEY, BODY, GOOD_SIG, str(SENT_AT + 1), SENT_AT, "does not match"),
        (PUBLIC_KEY, BODY, GOOD_SIG, str(SENT_AT), SENT_AT + 301, "301 s old"),
        (PUBLIC_KEY, BODY, GOOD_SIG, str(SENT_AT), SENT_AT - 301, "301 s in the future"),
        (PUBLIC_KEY, BODY, GOOD_SIG, "17e8", SENT_AT, "not a Unix time"),
        (PUBLIC_KEY, BODY, GOOD_SIG, "9" * 5000, SENT_AT, "not a Unix time"),
        (PUBLIC_KEY, BODY, None, str(SENT_AT), SENT_AT, "missing telnyx-signature-ed25519"),
        (PUBLIC_KEY, BODY, GOOD_SIG, None, SENT_AT, "missing telnyx-timestamp"),
        (PUBLIC_KEY, BODY, "not base64!", str(SENT_AT), SENT_AT, "signature is not valid base64"),
        (PUBLIC_KEY, BODY, base64.b64encode(bytes(63)).decode(), str(SENT_AT), SENT_AT, "64 bytes"),
        (base64.b64encode(b"k" * 31).decode(), BODY, GOOD_SIG, str(SENT_AT), SENT_AT, "32 bytes"),
        ("%%%", BODY, GOOD_SIG, str(SENT_AT), SENT_AT, "public key is not valid base64"),
    ],
    ids=[
        "other-key",
        "tampered-body",
        "other-timestamp",
        "stale",
        "future",
        "non-numeric-timestamp",
        "huge-timestamp",
        "no-signature",
        "no-timestamp",
        "bad-base64-signature",
        "short-signature",
        "short-key",
        "bad-base64-key",
    ],
)
def test_signature_rejections(
    key: str, body: bytes, sig: str | None, timestamp: str | None, now: float, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason) as caught:
        verify_webhook(key, body, sig, timestamp, now)
    assert caught.value.reason == str(caught.value)


def test_custom_tolerance() -> None:
    with pytest.raises(SignatureError, match="old"):
        verify_webhook(PUBLIC_KEY, BODY, GOOD_SIG, str(SENT_AT), SENT_AT + 61, tolerance_s=60)


# --- media-stream frames ----------------------------------------------------------------------

STREAM_ID = "32de0dea-53cb-4b21-89a4-9f3f4b7d2c1e"
CONTROL_ID = "v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO"
PCMU_20MS = bytes(range(96, 256))


def frame(obj: object) -> str:
    return orjson.dumps(obj).decode()


START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": STREAM_ID,
    "start": {
        "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
        "call_control_id": CONTROL_ID,
        "call_session_id": "ff55a038-9d7b-11ef-a9d2-02420aef0a1f",
        "from": "+15550001111",
        "to": "+15550002222",
        "tags": ["A"],
        "client_state": "aGk=",
        "custom_parameters": {"leg_token": "t0k"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}
MEDIA: dict[str, Any] = {
    "event": "media",
    "sequence_number": "4",
    "stream_id": STREAM_ID,
    "media": {
        "track": "inbound",
        "chunk": "2",
        "timestamp": "5",
        "payload": base64.b64encode(PCMU_20MS).decode(),
    },
}


def with_start(**changes: object) -> str:
    return frame({**START, "start": {**START["start"], **changes}})


def with_media(**changes: object) -> str:
    return frame({**MEDIA, "media": {**MEDIA["media"], **changes}})


def test_parse_connected_with_and_without_auth_token() -> None:
    assert parse_message('{"event": "connected", "version": "1.0.0"}') == StreamConnected("1.0.0")
    with_token = {
        "event": "connected",
        "version": "1.0.0",
        "connected": {"x-telnyx-streaming-auth-token": "leg-token"},
    }
    assert parse_message(frame(with_token)) == StreamConnected("1.0.0", auth_token="leg-token")


def test_parse_start() -> None:
    assert parse_message(frame(START)) == StreamStart(
        stream_id=STREAM_ID,
        call_id=CONTROL_ID,
        fmt=MediaFormat("PCMU", 8000, 1),
        custom_parameters={"leg_token": "t0k"},
        client_state="aGk=",
        tracks=(),
    )


@pytest.mark.parametrize(
    ("encoding", "rate"),
    # Both spellings Telnyx has documented (PROTOCOLS.md 3.2), and codecs callbridge may not
    # decode: the parser reports the announcement; media.inbound judges it once the stream is
    # bound to its leg, so an undecodable codec ends that leg cleanly rather than the parse.
    [("PCMU", 8000), ("audio/x-mulaw", 8000), ("PCMA", 8000), ("L16", 16000), ("G722", 16000),
     ("OPUS", 48000), ("AMR-WB", 16000)],
)  # fmt: skip
def test_start_reports_the_format_as_announced(encoding: str, rate: int) -> None:
    media_format = {"encoding": encoding, "sample_rate": rate, "channels": 1}
    message = parse_message(with_start(media_format=media_format))
    assert isinstance(message, StreamStart)
    assert message.fmt == MediaFormat(encoding, rate, 1, "big")


def test_l16_byte_order_is_a_codec_setting() -> None:
    l16 = with_start(media_format={"encoding": "L16", "sample_rate": 8000, "channels": 1})
    little = TelnyxStreamCodec(l16_byte_order="little").parse(l16)
    big = TelnyxStreamCodec().parse(l16)
    assert isinstance(little, StreamStart)
    assert isinstance(big, StreamStart)
    assert (little.fmt.byte_order, big.fmt.byte_order) == ("little", "big")


def test_codec_refuses_unknown_byte_order() -> None:
    with pytest.raises(ValueError, match="l16_byte_order"):
        TelnyxStreamCodec(l16_byte_order="middle")  # type: ignore[arg-type]


def test_start_accepts_custom_parameters_as_name_value_list_and_empty_client_state() -> None:
    message = parse_message(
        with_start(
            custom_parameters=[{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
            client_state="",
        )
    )
    assert isinstance(message, StreamStart)
    assert message.custom_parameters == {"a": "1", "b": "2"}
    assert message.client_state is None


def test_parse_media() -> None:
    assert parse_message(frame(MEDIA)) == StreamMedia(
        payload=PCMU_20MS, chunk=2, sequence=None, track="inbound"
    )
    # The message counter orders the media only when it carries no chunk.
    assert parse_message(with_media(chunk=None)) == StreamMedia(PCMU_20MS, None, 4, "inbound")


@pytest.mark.parametrize(
    "media",
    [
        MEDIA,
        {**MEDIA, "media": {**MEDIA["media"], "track": "outbound"}},
        {**MEDIA, "media": {**MEDIA["media"], "chunk": 2}},  # a number: the checked way
        {**MEDIA, "media": {**MEDIA["media"], "track": ""}},
        {**MEDIA, "media": {**MEDIA["media"], "chunk": "٣"}},  # a digit, not an ASCII one
        {"media": MEDIA["media"], "event": "media", "extra": [1, {"payload": 2}]},
    ],
)
def test_the_usual_media_frame_read_in_one_call_is_what_the_checked_way_makes(
    media: dict[str, Any],
) -> None:
    text = frame(media)
    try:
        checked: object = media_message(orjson.loads(text), "sequence_number")
    except BadFrame as exc:
        checked = (exc.kind, exc.reason)
    try:
        read: object = parse_message(text)
    except BadFrame as exc:
        read = (exc.kind, exc.reason)
    assert read == checked


def test_a_timestamp_callbridge_does_not_read_never_costs_a_media_frame() -> None:
    for media in (with_media(timestamp=-1), frame({**MEDIA, "sequence_number": "²"})):
        message = parse_message(media)
        assert isinstance(message, StreamMedia) and message.payload == PCMU_20MS


def test_parse_outbound_track_media_and_missing_counters() -> None:
    media = {"event": "media", "media": {"track": "outbound", "payload": ""}}
    assert parse_message(frame(media)) == StreamMedia(b"", None, None, "outbound")


def test_parse_dtmf_mark_stop_error() -> None:
    dtmf = {"event": "dtmf", "stream_id": STREAM_ID, "sequence_number": "7", "dtmf": {"digit": "#"}}
    mark = {"event": "mark", "stream_id": STREAM_ID, "mark": {"name": "m1"}}
    stop = {"event": "stop", "sequence_number": "5", "stream_id": STREAM_ID,
            "stop": {"user_id": "u", "call_control_id": CONTROL_ID}}  # fmt: skip
    error = {"event": "error", "sequence_number": "6", "stream_id": STREAM_ID,
             "error": {"title": "rate_limit_reached", "code": "100005",
                       "detail": "Too many requests"}}  # fmt: skip
    assert parse_message(frame(dtmf)) == StreamDtmf("#")
    assert parse_message(frame(mark)) == StreamMark("m1")
    assert parse_message(frame(stop)) == StreamStop()
    assert parse_message(frame(error)) == StreamError(
        "100005", "rate_limit_reached", "Too many requests"
    )


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("", "bad_json", "not valid JSON"),
        ('{"event": "media", ', "bad_json", "not valid JSON"),
        ('"media"', "not_object", "not a JSON object"),
        ("null", "not_object", "not a JSON object"),
        ('{"event": null}', "missing_event", "no 'event'"),
        (with_media(payload="a"), "bad_base64", "not valid base64"),
        (with_media(payload="not base64!"), "bad_base64", "not valid base64"),
        (with_media(payload=5), "missing_field", "lacks the 'payload'"),
        (with_media(chunk="0x2"), "bad_field", "non-numeric 'chunk'"),
        (frame({**MEDIA, "sequence_number": "²", "media": {**MEDIA["media"], "chunk": None}}),
         "bad_field", "non-numeric 'sequence_number'"),
        (frame({**MEDIA, "media": "x"}), "missing_field", "lacks the 'media' object"),
        ('{"event": "mark", "mark": {"name": null}}', "missing_field", "lacks the 'name'"),
        ('{"event": "mark", "stream_id": "s"}', "missing_field", "lacks the 'mark' object"),
        ('{"event": "dtmf", "dtmf": {}}', "missing_field", "lacks the 'digit'"),
        (frame({k: v for k, v in START.items() if k != "stream_id"}), "missing_field",
         "lacks the 'stream_id'"),
        (with_start(call_control_id=None), "missing_field", "lacks the 'call_control_id'"),
        (with_start(media_format=None), "missing_field", "lacks the 'media_format'"),
        (with_start(client_state=5), "bad_field", "non-string 'client_state'"),
        (with_start(custom_parameters=[{"name": "a"}]), "bad_field", "custom_parameters"),
        (with_start(custom_parameters="a=1"), "bad_field", "custom_parameters"),
    ],
)  # fmt: skip
def test_unreadable_frames_raise_bad_frame_with_a_drop_reason(
    text: str, kind: str, reason: str
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
    with pytest.raises(StreamProtocolError, match="'encoding'") as caught:
        parse_message(with_start(media_format={"sample_rate": 8000}))
    assert caught.value.close_code == 1007


@pytest.mark.parametrize(
    ("text", "event"),
    [
        # clear is a frame we send, never one Telnyx sends: still no reason to end the call.
        ('{"event": "clear"}', "clear"),
        ('{"event": "transcription", "sequence_number": "9", "stream_id": "s", "payload": {}}',
         "transcription"),
        (frame({"event": "x" * 100}), "x" * 40),
    ],
)  # fmt: skip
def test_unknown_events_are_ignored_not_refused(text: str, event: str) -> None:
    assert parse_message(text) == StreamUnknown(event)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # Extra keys, as a newer Telnyx may send them.
        ({"title": "malformed_frame", "code": "100003", "detail": "d", "source": {"pointer": "/"},
          "meta": {"url": "https://developers.telnyx.com"}},
         StreamError("100003", "malformed_frame", "d")),
        # The code as a JSON number rather than the documented string.
        ({"title": "invalid_media", "code": 100004}, StreamError("100004", "invalid_media", "")),
        ({"code": None, "title": ["x"], "detail": {"a": 1}}, StreamError("", "", "")),
        ({"detail": "z" * 1000}, StreamError("", "", "z" * 200)),
        (None, StreamError("", "", "")),
        ("rate_limit_reached", StreamError("", "", "")),
    ],
)  # fmt: skip
def test_error_frames_are_read_whatever_their_shape(error: object, expected: StreamError) -> None:
    body: dict[str, Any] = {"event": "error", "sequence_number": "6", "stream_id": STREAM_ID}
    if error is not None:
        body["error"] = error
    assert parse_message(frame(body)) == expected


def test_unknown_fields_are_ignored_everywhere() -> None:
    extra = {"occurred_at": "2026-12-02T06:00:00Z", "newField": {"nested": [1, 2]}}
    media = {**MEDIA, **extra, "media": {**MEDIA["media"], **extra}}
    assert parse_message(frame(media)) == parse_message(frame(MEDIA))
    start = {**START, **extra, "start": {**START["start"], **extra}}
    assert parse_message(frame(start)) == parse_message(frame(START))
    dtmf = {"event": "dtmf", "dtmf": {"digit": "1", **extra}, **extra}
    assert parse_message(frame(dtmf)) == StreamDtmf("1")
    mark = {"event": "mark", "mark": {"name": "m", **extra}, **extra}
    assert parse_message(frame(mark)) == StreamMark("m")
    stop = {"event": "stop", **extra}
    assert parse_message(frame(stop)) == StreamStop()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"version": 1, "connected": {"x-telnyx-streaming-auth-token": 5}},
         StreamConnected("1", None)),
        ({"connected": "token"}, StreamConnected(None, None)),
        ({"version": None, "connected": {"x-telnyx-streaming-auth-token": ""}},
         StreamConnected(None, None)),
    ],
)  # fmt: skip
def test_connected_with_odd_fields_is_still_read(
    body: dict[str, Any], expected: StreamConnected
) -> None:
    assert parse_message(frame({"event": "connected", **body})) == expected


def test_render_frames() -> None:
    assert orjson.loads(render_media(PCMU_20MS)) == {
        "event": "media",
        "media": {"payload": base64.b64encode(PCMU_20MS).decode()},
    }
    assert orjson.loads(render_mark("m1")) == {"event": "mark", "mark": {"name": "m1"}}
    assert orjson.loads(render_clear()) == {"event": "clear"}


def test_codec_is_the_stream_codec_seam() -> None:
    codec: StreamCodec = TelnyxStreamCodec()
    assert codec.provider == "telnyx"
    assert codec.parse(frame(MEDIA)) == parse_message(frame(MEDIA))
    assert codec.media_renderer(STREAM_ID)(b"\x00") == render_media(b"\x00")
    assert codec.render_mark(STREAM_ID, "m") == render_mark("m")
    assert codec.render_clear(STREAM_ID) == render_clear()


# --- Call Control webhooks --------------------------------------------------------------------

INITIATED: dict[str, Any] = {
    "data": {
        "record_type": "event",
        "event_type": "call.initiated",
        "id": "0b3c7a1e-5f0e-4f9a-9d1c-2b7e8f4a6c3d",
        "occurred_at": "2025-01-01T12:00:00.123456Z",
        "payload": {
            "call_control_id": CONTROL_ID,
            "call_leg_id": "63e3f7a2-c8b6-11ef-9d36-02420a0d4168",
            "call_session_id": "63dc5d1c-c8b6-11ef-b3c3-02420a0d4168",
            "connection_id": "2386325531927775048",
            "client_state": None,
            "direction": "incoming",
            "from": "+15550001111",
            "to": "+15550002222",
            "state": "parked",
            "start_time": "2025-01-01T12:00:00.100000Z",
        },
    },
    "meta": {"attempt": 1, "delivered_to": "https://example.com/telnyx"},
}


def test_parse_call_initiated() -> None:
    event = webhooks.parse_event(orjson.dumps(INITIATED))
    assert event == webhooks.TelnyxEvent(
        event_id="0b3c7a1e-5f0e-4f9a-9d1c-2b7e8f4a6c3d",
        event_type="call.initiated",
        occurred_at="2025-01-01T12:00:00.123456Z",
        call_control_id=CONTROL_ID,
        call_leg_id="63e3f7a2-c8b6-11ef-9d36-02420a0d4168",
        call_session_id="63dc5d1c-c8b6-11ef-b3c3-02420a0d4168",
        connection_id="2386325531927775048",
        from_="+15550001111",
        to="+15550002222",
        direction="incoming",
        state="parked",
        client_state=None,
        hangup_cause=None,
        hangup_source=None,
        digit=None,
        attempt=1,
        payload=INITIATED["data"]["payload"],
    )


def test_parse_call_hangup_without_meta() -> None:
    payload = {
        "call_control_id": CONTROL_ID,
        "client_state": "aGk=",
        "hangup_cause": "normal_clearing",
        "hangup_source": "callee",
        "sip_hangup_cause": "200",
        "state": "hangup",
    }
    body = {"data": {"event_type": "call.hangup", "id": "e2", "payload": payload}}
    event = webhooks.parse_event(body)
    assert (event.hangup_cause, event.hangup_source, event.client_state) == (
        "normal_clearing",
        "callee",
        "aGk=",
    )
    assert event.attempt is None
    assert event.payload["sip_hangup_cause"] == "200"


def test_parse_dtmf_received() -> None:
    body = {"data": {"event_type": "call.dtmf.received", "id": "e3",
                     "payload": {"call_control_id": CONTROL_ID, "digit": "5"}}}  # fmt: skip
    assert webhooks.parse_event(orjson.dumps(body).decode()).digit == "5"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"meta": {}}', "'data'"),
        (b'{"data": {"event_type": "call.hangup", "payload": {}}}', "data.id"),
        (b'{"data": {"id": "e", "payload": {}}}', "data.event_type"),
        (b'{"data": {"id": "e", "event_type": "call.hangup"}}', "data.payload"),
        (b'{"data": {"record_type": "call", "id": "e", "event_type": "x", "payload": {}}}',
         "record_type"),
        (b'{"data": {"id": "e", "event_type": "x", "payload": {"to": 5}}}', "payload.to"),
    ],
)  # fmt: skip
def test_parse_event_refuses_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhooks.parse_event(body)


def test_build_event_renders_the_envelope_and_parses_back() -> None:
    moment = datetime(2025, 1, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    envelope = webhooks.build_event(
        "call.bridged",
        {"call_control_id": CONTROL_ID, "client_state": None},
        "e4",
        moment,
        attempt=2,
        delivered_to="https://app.example/hooks",
    )
    assert envelope == {
        "data": {
            "record_type": "event",
            "event_type": "call.bridged",
            "id": "e4",
            "occurred_at": "2025-01-01T12:00:00.123456Z",
            "payload": {"call_control_id": CONTROL_ID, "client_state": None},
        },
        "meta": {"attempt": 2, "delivered_to": "https://app.example/hooks"},
    }
    event = webhooks.parse_event(orjson.dumps(envelope))
    assert (event.event_type, event.call_control_id, event.attempt) == (
        "call.bridged",
        CONTROL_ID,
        2,
    )


def test_build_event_keeps_string_timestamps_and_refuses_naive_ones() -> None:
    envelope = webhooks.build_event("call.answered", {}, "e5", "2025-01-01T00:00:00.000000Z")
    assert envelope["data"]["occurred_at"] == "2025-01-01T00:00:00.000000Z"
    assert envelope["meta"] == {"attempt": 1}
    with pytest.raises(ValueError, match="timezone"):
        webhooks.build_event("call.answered", {}, "e5", datetime(2025, 1, 1))
    assert webhooks.format_occurred_at(datetime(2025, 1, 1, tzinfo=UTC)) == (
        "2025-01-01T00:00:00.000000Z"
    )


# --- REST requests ------------------------------------------------------------------------------


def test_dial_request() -> None:
    request = webhooks.dial(
        "2386325531927775048",
        "+15550002222",
        "+15550001111",
        stream_url="wss://cb.example.com/media/telnyx",
        stream_auth_token="leg-token",
        timeout_secs=30,
        client_state="aGk=",
        command_id="cmd-1",
    )
    assert request == (
        "POST",
        "/v2/calls",
        {
            "connection_id": "2386325531927775048",
            "to": "+15550002222",
            "from": "+15550001111",
            "stream_url": "wss://cb.example.com/media/telnyx",
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            # Telnyx's default is "opposite", which reaches nobody on a standalone leg
            # (telnyx SDK StreamBidirectionalTargetLegs; PROTOCOLS.md 3.4).
            "stream_bidirectional_target_legs": "self",
            "stream_auth_token": "leg-token",
            "timeout_secs": 30,
            "client_state": "aGk=",
            "command_id": "cmd-1",
        },
    )


def test_answer_request_opens_a_bidirectional_rtp_stream() -> None:
    method, path, body = webhooks.answer(
        CONTROL_ID,
        stream_url="wss://cb.example.com/media/telnyx",
        stream_bidirectional_codec="PCMA",
        stream_codec="PCMA",
        client_state="aGk=",
    )
    assert (method, path) == ("POST", f"/v2/calls/{CONTROL_ID}/actions/answer")
    assert body == {
        "stream_url": "wss://cb.example.com/media/telnyx",
        "stream_track": "inbound_track",
        "stream_codec": "PCMA",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMA",
        "stream_bidirectional_target_legs": "self",
        "client_state": "aGk=",
    }


def test_answer_without_stream_and_path_quoting() -> None:
    assert webhooks.answer("v3:a/b?c") == ("POST", "/v2/calls/v3:a%2Fb%3Fc/actions/answer", {})


def test_hangup_and_reject_requests() -> None:
    assert webhooks.hangup(CONTROL_ID, command_id="c") == (
        "POST",
        f"/v2/calls/{CONTROL_ID}/actions/hangup",
        {"command_id": "c"},
    )
    assert webhooks.reject(CONTROL_ID, "USER_BUSY") == (
        "POST",
        f"/v2/calls/{CONTROL_ID}/actions/reject",
        {"cause": "USER_BUSY"},
    )


def test_streaming_start_request() -> None:
    method, path, body = webhooks.streaming_start(
        CONTROL_ID,
        stream_url="wss://cb.example.com/media/telnyx",
        stream_auth_token="leg-token",
        custom_parameters={"leg": "L1", "bridge": "B1"},
        stream_bidirectional_codec="L16",
        stream_bidirectional_sampling_rate=16000,
    )
    assert (method, path) == ("POST", f"/v2/calls/{CONTROL_ID}/actions/streaming_start")
    assert body == {
        "stream_url": "wss://cb.example.com/media/telnyx",
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "L16",
        "stream_bidirectional_sampling_rate": 16000,
        "stream_bidirectional_target_legs": "self",
        "stream_auth_token": "leg-token",
        "custom_parameters": [{"name": "leg", "value": "L1"}, {"name": "bridge", "value": "B1"}],
    }


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: webhooks.hangup(CONTROL_ID, client_state="not base64!"), "base64"),
        (lambda: webhooks.answer(CONTROL_ID, stream_url="wss://h",
                                 stream_bidirectional_codec="G722"), "stream_bidirectional_codec"),
        (lambda: webhooks.answer(CONTROL_ID, stream_url="wss://h", stream_track="both"),
         "stream_track"),
        (lambda: webhooks.reject(CONTROL_ID, "NOPE"), "cause"),  # type: ignore[arg-type]
        (lambda: webhooks.dial("c", "+1", "+2", timeout_secs=4), "timeout_secs"),
        (lambda: webhooks.streaming_start(CONTROL_ID, stream_url="wss://h",
                                          stream_auth_token="t" * 4001), "4000"),
        (lambda: webhooks.lookup_phone_number("+1 555"), "E.164"),
    ],
)  # fmt: skip
def test_request_builders_refuse_what_telnyx_would(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_phone_number_lookup_and_update_requests() -> None:
    assert webhooks.lookup_phone_number("+15550002222") == (
        "GET",
        "/v2/phone_numbers?filter%5Bphone_number%5D=15550002222",
        None,
    )
    assert webhooks.update_phone_number_connection(
        "1293384261075731499", "2386325531927775048"
    ) == (
        "PATCH",
        "/v2/phone_numbers/1293384261075731499",
        {"connection_id": "2386325531927775048"},
    )


def test_phone_number_id_picks_the_exact_number() -> None:
    body = orjson.dumps(
        {
            "data": [
                {"id": "111", "phone_number": "+155500022220"},
                {"id": "222", "phone_number": "+15550002222"},
            ],
            "meta": {"total_results": 2},
        }
    )
    assert webhooks.phone_number_id(body, "+15550002222") == "222"
    assert webhooks.phone_number_id(body, "15550002222") == "222"
    assert webhooks.phone_number_id(b'{"data": []}', "+15550002222") is None
    with pytest.raises(ValueError, match="'data'"):
        webhooks.phone_number_id(b'{"errors": []}', "+15550002222")


ENDED = b'{"errors": [{"code": "90018", "title": "Call has already ended",' \
        b' "detail": "This call is no longer active and can\'t receive commands."}]}'  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (422, ENDED, True),
        (422, b'{"errors": [{"code": 90018}]}', True),
        (422, b'{"errors": [{"code": "10015"}, {"code": "90018"}]}', True),
        (422, b'{"errors": [{"code": "90015"}]}', False),
        (404, ENDED, False),
        (422, b"<html>", False),
        (422, b'{"errors": "90018"}', False),
    ],
)
def test_is_already_ended(status: int, body: bytes, expected: bool) -> None:
    assert webhooks.is_already_ended(status, body) is expected
