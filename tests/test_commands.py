"""Parsing Call Control bodies: every action's fields and defaults, and the field each bad
value names."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from engine.errors import NotFound, ValidationError
from engine.machine import commands as cmd
from engine.machine.commands import ACTIONS, Command, ParameterError, parse_dial
from engine.machine.model import RINGTONES, MuteDtmf, RecordingOptions, RejectCause, TargetLegs

MEDIA_DIR = "/srv"  # where file:// playback may read from in these tests


def parse_command(action: str, body: Mapping[str, object], **kw: bool) -> Command:
    return cmd.parse_command(action, body, media_dir=MEDIA_DIR, **kw)


# The minimal valid body of each action.
MINIMAL: dict[str, dict[str, object]] = {
    "answer": {},
    "bridge": {"call_control_id": "v3:b"},
    "unbridge": {},
    "hangup": {},
    "reject": {"cause": "USER_BUSY"},
    "enqueue": {"queue_name": "support"},
    "leave_queue": {},
    "record_start": {"format": "wav", "channels": "single"},
    "record_stop": {},
    "record_pause": {},
    "record_resume": {},
    "playback_start": {"audio_url": "file:///srv/a.wav"},
    "playback_stop": {},
    "send_dtmf": {"digits": "1"},
    "client_state_update": {"client_state": "aGk="},
    "gather": {},
    "gather_using_audio": {"media_name": "tone-440"},
    "gather_stop": {},
    "switch_supervisor_role": {"role": "barge"},
    "streaming_start": {"stream_url": "wss://app.example/stream"},
    "streaming_stop": {},
}
# Actions whose SDK params have neither client_state nor command_id: both refused.
BARE = ("switch_supervisor_role",)
WITH_COMMON = [a for a in ACTIONS if a not in BARE]
# The bridge command's ringtone enum exactly as documented (seed 003).
TELNYX_RINGTONE_ENUM = [
    "at", "au", "be", "bg", "br", "ch", "cl", "cn", "cz", "de", "dk", "ee", "es", "fi", "fr",
    "gr", "hu", "il", "in", "it", "jp", "lt", "mx", "my", "nl", "no", "nz", "ph", "pl", "pt",
    "ru", "se", "sg", "th", "tw", "uk", "us-old", "us", "ve", "za",
]  # fmt: skip


def test_every_action_has_a_minimal_body() -> None:
    assert set(MINIMAL) == set(ACTIONS)


@pytest.mark.parametrize("action", WITH_COMMON)
def test_every_action_takes_client_state_and_command_id(action: str) -> None:
    body = MINIMAL[action] | {"client_state": "aGVsbG8=", "command_id": "c-9"}
    command = parse_command(action, body)
    assert (command.client_state, command.command_id) == ("aGVsbG8=", "c-9")


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_refuses_a_field_it_would_not_carry_out(action: str) -> None:
    # Issue 14 point 9: a field callbridge would ignore (one of Call Control's it does not carry
    # out, or anything unknown) is refused, named, never accepted and ignored.
    for field in ("whatever", "cache_audio_unknown"):
        with pytest.raises(ParameterError) as refused:
            parse_command(action, MINIMAL[action] | {field: [1]})
        assert (refused.value.field, refused.value.status) == (field, 422)


@pytest.mark.parametrize("action", BARE)
@pytest.mark.parametrize("name", ["client_state", "command_id"])
def test_an_action_without_them_refuses_client_state_and_command_id(action: str, name: str) -> None:
    with pytest.raises(ParameterError) as refused:
        parse_command(action, MINIMAL[action] | {name: "aGk="})
    assert refused.value.field == name


@pytest.mark.parametrize("action", WITH_COMMON)
@pytest.mark.parametrize("client_state", ["not base64!", "abc", 12])
def test_client_state_must_be_base64_on_every_action(action: str, client_state: object) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_command(action, MINIMAL[action] | {"client_state": client_state})
    assert refused.value.field == "client_state"


def test_an_unknown_action_is_not_found() -> None:
    with pytest.raises(NotFound):
        parse_command("transfer_to_mars", {})


def test_bridge_defaults() -> None:
    assert parse_command("bridge", {"call_control_id": "v3:b"}) == cmd.Bridge(
        call_control_id="v3:b",
        ringtone="us",
        mute_dtmf=MuteDtmf.NONE,
        park_after_unbridge=False,
        hold_after_unbridge=False,
        play_ringtone=False,
        prevent_double_bridge=False,
        record=None,
    )


def test_bridge_every_field() -> None:
    body = {
        "call_control_id": "v3:b",
        "park_after_unbridge": "self",
        "hold_after_unbridge": True,
        "play_ringtone": True,
        "ringtone": "pl",
        "mute_dtmf": "opposite",
        "prevent_double_bridge": True,
        "record": "record-from-answer",
        "record_channels": "single",
        "record_format": "wav",
        "record_max_length": 43200,
        "record_timeout_secs": 100,
        "record_track": "outbound",
        "record_trim": "trim-silence",
        "record_custom_file_name": "my_recording_file_name",
    }
    assert parse_command("bridge", body) == cmd.Bridge(
        call_control_id="v3:b",
        park_after_unbridge=True,
        hold_after_unbridge=True,
        play_ringtone=True,
        ringtone="pl",
        mute_dtmf=MuteDtmf.OPPOSITE,
        prevent_double_bridge=True,
        record=RecordingOptions(
            format="wav",
            channels="single",
            track="outbound",
            max_length_secs=43200,
            timeout_secs=100,
            trim="trim-silence",
            custom_file_name="my_recording_file_name",
        ),
    )


def test_the_forty_ringtones() -> None:
    assert sorted(RINGTONES) == sorted(TELNYX_RINGTONE_ENUM) and len(RINGTONES) == 40
    for ringtone in TELNYX_RINGTONE_ENUM:
        body = {"call_control_id": "v3:b", "ringtone": ringtone}
        assert parse_command("bridge", body).ringtone == ringtone  # type: ignore[union-attr]


def test_bridge_with_a_queue() -> None:
    assert parse_command("bridge", {"queue": "support"}) == cmd.Bridge(queue="support")


# (action, body, field, code): each bad body names its field.
BAD: list[tuple[str, Mapping[str, object], str, str]] = [
    ("bridge", {}, "call_control_id", "10004"),
    ("bridge", {"call_control_id": ""}, "call_control_id", "10015"),
    ("bridge", {"call_control_id": 7}, "call_control_id", "10015"),
    ("bridge", {"call_control_id": "b", "queue": "q"}, "queue", "10015"),
    (
        "bridge",
        {"call_control_id": "b", "park_after_unbridge": "other"},
        "park_after_unbridge",
        "10015",
    ),
    (
        "bridge",
        {"call_control_id": "b", "park_after_unbridge": True},
        "park_after_unbridge",
        "10015",
    ),
    (
        "bridge",
        {"call_control_id": "b", "hold_after_unbridge": "yes"},
        "hold_after_unbridge",
        "10015",
    ),
    ("bridge", {"call_control_id": "b", "play_ringtone": 1}, "play_ringtone", "10015"),
    ("bridge", {"call_control_id": "b", "ringtone": "xx"}, "ringtone", "10015"),
    ("bridge", {"call_control_id": "b", "ringtone": "US"}, "ringtone", "10015"),
    ("bridge", {"call_control_id": "b", "mute_dtmf": "all"}, "mute_dtmf", "10015"),
    (
        "bridge",
        {"call_control_id": "b", "prevent_double_bridge": "true"},
        "prevent_double_bridge",
        "10015",
    ),
    ("bridge", {"call_control_id": "b", "record": "always"}, "record", "10015"),
    ("bridge", {"call_control_id": "b", "record_channels": "stereo"}, "record_channels", "10015"),
    ("bridge", {"call_control_id": "b", "record_format": "ogg"}, "record_format", "10015"),
    ("bridge", {"call_control_id": "b", "record_max_length": 43201}, "record_max_length", "10015"),
    ("bridge", {"call_control_id": "b", "record_max_length": -1}, "record_max_length", "10015"),
    ("bridge", {"call_control_id": "b", "record_max_length": 1.5}, "record_max_length", "10015"),
    ("bridge", {"call_control_id": "b", "record_max_length": True}, "record_max_length", "10015"),
    ("bridge", {"call_control_id": "b", "record_timeout_secs": -5}, "record_timeout_secs", "10015"),
    ("bridge", {"call_control_id": "b", "record_track": "left"}, "record_track", "10015"),
    ("bridge", {"call_control_id": "b", "record_trim": "trim"}, "record_trim", "10015"),
    (
        "bridge",
        {"call_control_id": "b", "record_custom_file_name": "x" * 41},
        "record_custom_file_name",
        "10015",
    ),
    (
        "bridge",
        {"call_control_id": "b", "record_custom_file_name": "../../etc/cron.d/x"},
        "record_custom_file_name",
        "10015",
    ),
    ("bridge", {"call_control_id": "b", "video_room_id": "r"}, "video_room_id", "10015"),
    ("answer", {"webhook_url": "ftp://x"}, "webhook_url", "10015"),
    ("unbridge", {"park_after_unbridge": "them"}, "park_after_unbridge", "10015"),
    ("reject", {}, "cause", "10004"),
    ("reject", {"cause": "call_rejected"}, "cause", "10015"),
    ("reject", {"cause": "NORMAL_CLEARING"}, "cause", "10015"),
    ("enqueue", {}, "queue_name", "10004"),
    ("enqueue", {"queue_name": ""}, "queue_name", "10015"),
    ("enqueue", {"queue_name": "q", "max_wait_time_secs": 0}, "max_wait_time_secs", "10015"),
    ("enqueue", {"queue_name": "q", "max_size": "10"}, "max_size", "10015"),
    ("record_start", {"channels": "single"}, "format", "10004"),
    ("record_start", {"format": "wav"}, "channels", "10004"),
    ("record_start", {"format": "flac", "channels": "single"}, "format", "10015"),
    (
        "record_start",
        {"format": "wav", "channels": "single", "max_length": 14401},
        "max_length",
        "10015",
    ),
    (
        "record_start",
        {"format": "wav", "channels": "dual", "recording_track": "x"},
        "recording_track",
        "10015",
    ),
    ("record_start", {"format": "wav", "channels": "dual", "play_beep": "y"}, "play_beep", "10015"),
    ("record_start", {"format": "wav", "channels": "dual", "trim": "all"}, "trim", "10015"),
    ("record_stop", {"recording_id": 3}, "recording_id", "10015"),
    ("playback_start", {}, "audio_url", "10004"),
    ("playback_start", {"audio_url": "ftp://cdn.example/a.wav"}, "audio_url", "10015"),
    ("playback_start", {"audio_url": "file:///a.wav", "media_name": "b"}, "audio_url", "10015"),
    ("playback_start", {"media_name": "b", "loop": 0}, "loop", "10015"),
    ("playback_start", {"media_name": "b", "loop": 101}, "loop", "10015"),
    ("playback_start", {"media_name": "b", "loop": "forever"}, "loop", "10015"),
    ("playback_start", {"media_name": "b", "target_legs": "all"}, "target_legs", "10015"),
    ("playback_start", {"media_name": "b", "overlay": "no"}, "overlay", "10015"),
    ("playback_start", {"media_name": "b", "stop": "none"}, "stop", "10015"),
    ("playback_start", {"media_name": "b", "audio_type": "ogg"}, "audio_type", "10015"),
    ("playback_stop", {"stop": "some"}, "stop", "10015"),
    ("send_dtmf", {}, "digits", "10004"),
    ("send_dtmf", {"digits": "12E"}, "digits", "10015"),
    ("send_dtmf", {"digits": "1a"}, "digits", "10015"),
    ("send_dtmf", {"digits": "1", "duration_millis": 99}, "duration_millis", "10015"),
    ("send_dtmf", {"digits": "1", "duration_millis": 501}, "duration_millis", "10015"),
    ("client_state_update", {}, "client_state", "10004"),
    ("client_state_update", {"client_state": ""}, "client_state", "10015"),
    ("hangup", {"command_id": 5}, "command_id", "10015"),
]
# A recording's file name must stay a bare name in its directory (issue 11, point 3).
BAD += [
    ("record_start", {"format": "wav", "channels": "single", "custom_file_name": name},
     "custom_file_name", "10015")
    for name in ("../../x", "a/b", ".", "..", "a b", "x\\y", "/etc/passwd", "name\u00e9")
]  # fmt: skip


@pytest.mark.parametrize(
    ("action", "body", "field", "code"),
    BAD,
    ids=[f"{a}-{f}-{i}" for i, (a, _, f, _) in enumerate(BAD)],
)
def test_bad_values_name_their_field(
    action: str, body: Mapping[str, object], field: str, code: str
) -> None:
    with pytest.raises(ParameterError) as refused:
        parse_command(action, body)
    assert (refused.value.field, refused.value.code, refused.value.status) == (field, code, 422)


def test_other_actions_parse_their_fields() -> None:
    assert parse_command("reject", {"cause": "TEMPORARILY_UNAVAILABLE"}) == cmd.Reject(
        cause=RejectCause.TEMPORARILY_UNAVAILABLE
    )
    assert parse_command(
        "enqueue", {"queue_name": "q", "max_wait_time_secs": 30, "max_size": 5}
    ) == cmd.Enqueue(queue_name="q", max_wait_time_secs=30, max_size=5)
    assert parse_command(
        "record_start",
        {
            "format": "mp3",
            "channels": "dual",
            "play_beep": True,
            "max_length": 60,
            "trim": "trim-silence",
        },
    ) == cmd.RecordStart(
        options=RecordingOptions(play_beep=True, max_length_secs=60, trim="trim-silence")
    )
    assert parse_command(
        "playback_start",
        {"media_name": "beep", "loop": "infinity", "overlay": True, "target_legs": "both"},
    ) == cmd.PlaybackStart(media_name="beep", loop=None, overlay=True, target_legs=TargetLegs.BOTH)
    assert parse_command("send_dtmf", {"digits": "0123456789ABCD*#wW"}) == cmd.SendDtmf(
        digits="0123456789ABCD*#wW", duration_millis=250
    )


DIAL = {"connection_id": "1234", "from": "+15550001111", "to": "+15550002222"}


def test_dial_defaults() -> None:
    assert parse_dial(DIAL) == cmd.Dial(
        connection_id="1234",
        from_="+15550001111",
        to="+15550002222",
        timeout_secs=30,
        time_limit_secs=14400,
    )


@pytest.mark.parametrize(
    "to",
    ["+442071838750", "sip:agent@pbx.example.com", "wss://bot.example/agent", "ws://10.0.0.2/x"],
)
def test_dial_destinations(to: str) -> None:
    assert parse_dial(DIAL | {"to": to}, allow_private_urls=True).to == to


def test_dial_every_field() -> None:
    body = DIAL | {
        "link_to": "v3:a",
        "bridge_intent": True,
        "bridge_on_answer": True,
        "park_after_unbridge": "self",
        "prevent_double_bridge": True,
        "timeout_secs": 600,
        "time_limit_secs": 30,
        "webhook_url": "https://app.example/hooks",
        "client_state": "aGk=",
        "command_id": "d-1",
    }
    assert parse_dial(body) == cmd.Dial(
        connection_id="1234",
        from_="+15550001111",
        to="+15550002222",
        link_to="v3:a",
        bridge_intent=True,
        bridge_on_answer=True,
        park_after_unbridge=True,
        prevent_double_bridge=True,
        timeout_secs=600,
        time_limit_secs=30,
        webhook_url="https://app.example/hooks",
        client_state="aGk=",
        command_id="d-1",
    )


BAD_DIAL: list[tuple[dict[str, object], str, str]] = [
    ({"connection_id": None}, "connection_id", "10004"),
    ({"from": None}, "from", "10004"),
    ({"to": None}, "to", "10004"),
    ({"from": "5550001111"}, "from", "10016"),
    ({"to": "+0123"}, "to", "10016"),
    ({"to": "http://bot.example"}, "to", "10016"),
    ({"to": ["+15550002222", "+15550003333"]}, "to", "10015"),
    ({"timeout_secs": 4}, "timeout_secs", "10015"),
    ({"timeout_secs": 601}, "timeout_secs", "10015"),
    ({"time_limit_secs": 29}, "time_limit_secs", "10015"),
    ({"time_limit_secs": 14401}, "time_limit_secs", "10015"),
    ({"bridge_on_answer": True}, "link_to", "10004"),
    ({"bridge_intent": True}, "link_to", "10004"),
    ({"park_after_unbridge": "self"}, "link_to", "10004"),
    ({"bridge_on_answer": "yes", "link_to": "a"}, "bridge_on_answer", "10015"),
    ({"webhook_url": "mailto:x@y"}, "webhook_url", "10015"),
    ({"client_state": "%%%"}, "client_state", "10015"),
]


@pytest.mark.parametrize(("patch", "field", "code"), BAD_DIAL)
def test_bad_dial_bodies_name_their_field(patch: dict[str, object], field: str, code: str) -> None:
    body = {k: v for k, v in (DIAL | patch).items() if v is not None}
    with pytest.raises(ParameterError) as refused:
        parse_dial(body)
    assert (refused.value.field, refused.value.code) == (field, code)


def test_commands_are_frozen_and_slotted() -> None:
    command = parse_command("hangup", {})
    with pytest.raises(AttributeError):
        command.command_id = "x"  # type: ignore[misc]
    assert not hasattr(command, "__dict__")
