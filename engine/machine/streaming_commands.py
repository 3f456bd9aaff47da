"""``streaming_start`` and ``streaming_stop`` parsed: a leg's audio to an application's websocket.

The fields are Call Control v2's (its SDK's ``ActionStartStreamingParams`` and
``ActionStopStreamingParams``, with the enums of ``types/stream_codec.py``,
``stream_bidirectional_codec.py``, ``stream_bidirectional_mode.py``,
``stream_bidirectional_sampling_rate.py`` and ``stream_bidirectional_target_legs.py``). What
callbridge carries out is accepted; the rest is refused with 422 naming the field, never accepted
and ignored:

- ``stream_url``: ws:// or wss://, through the URL policy like every URL callbridge connects to.
- ``stream_track``: ``inbound_track`` (the default: what the leg says), ``outbound_track`` (what
  it hears), ``both_tracks``.
- ``stream_codec``: PCMU, PCMA, or ``default`` (the call's codec: callbridge's legs are mixed as
  8 kHz G.711, so the leg's own G.711 law, else PCMU). G722, OPUS and AMR-WB are refused;
  L16 too, since whether its samples go big- or little-endian over the websocket is not
  documented (PROTOCOLS.md 3.4), and an application reading the other order hears noise.
- ``stream_bidirectional_mode``: ``rtp`` plays the raw audio the application sends back, in
  ``stream_bidirectional_codec`` (PCMU or PCMA; the default PCMU, Call Control's TeXML
  ``<Stream>`` reference) at ``stream_bidirectional_sampling_rate`` 8000 (G.711 is 8 kHz
  audio), to ``stream_bidirectional_target_legs`` (default ``opposite``: the leg's room peers;
  ``self``: the leg; ``both``). ``mp3`` (whole MP3 files to queue) is refused. Without a mode the
  stream is one way, and audio the application sends gets an ``error`` frame back.
- ``stream_auth_token`` (at most 4000 characters) and ``custom_parameters`` (``{name, value}``
  pairs, in the ``start`` frame) go to the application's websocket.
- ``enable_dialogflow`` true and ``dialogflow_config`` are refused (no Dialogflow).

``streaming_stop`` takes ``stream_id`` (omitted: every stream of the leg).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.machine.command_body import Body, CommandBase, ParameterError
from engine.machine.model import TargetLegs

__all__ = [
    "StreamSpec",
    "StreamingStart",
    "StreamingStop",
    "parse_streaming_start",
    "parse_streaming_stop",
]

TRACKS = ("inbound_track", "outbound_track", "both_tracks")
# The SDK's enums; of them callbridge streams and plays these.
STREAM_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default")
BIDIRECTIONAL_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16")
SAMPLING_RATES = (8000, 16000, 22050, 24000, 48000)
SUPPORTED_CODECS = ("PCMU", "PCMA")
MAX_AUTH_TOKEN = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """What one application stream sends and plays (the effect carries it to the runtime)."""

    url: str
    track: str = "inbound_track"
    codec: str = "default"  # PCMU | PCMA | default
    bidirectional: bool = False  # stream_bidirectional_mode rtp
    bidirectional_codec: str = "PCMU"
    target_legs: TargetLegs = TargetLegs.OPPOSITE
    auth_token: str | None = None
    custom_parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingStart(CommandBase):
    spec: StreamSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingStop(CommandBase):
    stream_id: str | None = None  # None: every stream of the leg


def _refuse(name: str, detail: str) -> ParameterError:
    return ParameterError(f"'{name}' {detail}", field=name)


def _codec(b: Body, name: str, known: tuple[str, ...], default: str) -> str:
    codec = b.choice(name, known, default)
    if codec not in (*SUPPORTED_CODECS, "default"):
        why = "byte order not documented" if codec == "L16" else "not decoded by callbridge"
        raise _refuse(name, f"{codec} is not supported by callbridge ({why}); use PCMU or PCMA")
    return codec


def _custom_parameters(b: Body) -> tuple[tuple[str, str], ...]:
    items = b.raw("custom_parameters")
    if items is None:
        return ()
    shape = "must be a list of {name, value} with string values"
    if not isinstance(items, list):
        raise _refuse("custom_parameters", shape)
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"name", "value"}:
            raise _refuse("custom_parameters", shape)
        name, value = item.get("name"), item.get("value", "")
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise _refuse("custom_parameters", shape)
        pairs.append((name, value))
    return tuple(pairs)


def _bidirectional(b: Body) -> tuple[bool, str, TargetLegs]:
    mode = b.opt_choice("stream_bidirectional_mode", ("mp3", "rtp"))
    if mode == "mp3":
        raise _refuse(
            "stream_bidirectional_mode",
            "mp3 is not supported by callbridge; use rtp (raw audio in the bidirectional codec)",
        )
    codec = _codec(b, "stream_bidirectional_codec", BIDIRECTIONAL_CODECS, "PCMU")
    rate = b.raw("stream_bidirectional_sampling_rate")
    if rate is not None and (isinstance(rate, bool) or rate not in SAMPLING_RATES):
        raise _refuse("stream_bidirectional_sampling_rate", f"must be one of {SAMPLING_RATES}")
    if rate not in (None, 8000):
        raise _refuse(
            "stream_bidirectional_sampling_rate", f"must be 8000 for {codec} (8 kHz audio)"
        )
    legs = b.choice("stream_bidirectional_target_legs", ("both", "self", "opposite"), "opposite")
    fields = ("codec", "sampling_rate", "target_legs")
    used = [f"stream_bidirectional_{n}" for n in fields if b.has(f"stream_bidirectional_{n}")]
    if mode is None and used:
        raise _refuse(used[0], "applies only with stream_bidirectional_mode rtp")
    return mode == "rtp", codec, TargetLegs(legs)


def parse_streaming_start(b: Body) -> StreamingStart:
    url = b.url("stream_url", ("ws://", "wss://"))
    if url is None:
        raise ParameterError("'stream_url' is required", field="stream_url", code="10004")
    if b.flag("enable_dialogflow"):
        raise _refuse("enable_dialogflow", "is not supported by callbridge (no Dialogflow)")
    if b.has("dialogflow_config"):
        raise _refuse("dialogflow_config", "is not supported by callbridge (no Dialogflow)")
    bidirectional, bidirectional_codec, target_legs = _bidirectional(b)
    return StreamingStart(
        spec=StreamSpec(
            url=url,
            track=b.choice("stream_track", TRACKS, "inbound_track"),
            codec=_codec(b, "stream_codec", STREAM_CODECS, "default"),
            bidirectional=bidirectional,
            bidirectional_codec=bidirectional_codec,
            target_legs=target_legs,
            auth_token=b.string("stream_auth_token", max_len=MAX_AUTH_TOKEN),
            custom_parameters=_custom_parameters(b),
        ),
        **b.common(),
    )


def parse_streaming_stop(b: Body) -> StreamingStop:
    return StreamingStop(stream_id=b.string("stream_id", required=False), **b.common())
