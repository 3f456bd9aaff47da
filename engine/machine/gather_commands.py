"""The DTMF gather commands, parsed from Call Control v2 bodies: ``gather``,
``gather_using_audio`` and ``gather_stop`` (the SDK's ``stop_gather``).

Their fields are those of the official SDK's ``types/calls/action_gather_params.py``,
``action_gather_using_audio_params.py`` and ``action_stop_gather_params.py``; every one is carried
out (``engine.machine.gather``), and any other field is refused with 422 naming it, so nothing is
accepted and ignored. ``gather_using_speak`` and ``gather_using_ai`` are not implemented: their
actions answer 404 like any unknown action.

Defaults and bounds, from Telnyx's API reference (developers.telnyx.com/api-reference/
call-commands/gather and .../gather-using-audio): ``minimum_digits`` 1 (at least 1),
``maximum_digits`` 128 (at most 128), ``timeout_millis`` 60000, ``inter_digit_timeout_millis``
5000, ``initial_timeout_millis`` 5000, ``terminating_digit`` "#" ("" disables it, per the SDK),
``valid_digits`` "0123456789#*", ``maximum_tries`` 3; ``gather_id`` at most 100 characters (the
conference variant's schema, the only one that states a length). Bounds Telnyx does not state
are callbridge's: a wait is 1 ms to 4 h (a leg's longest life), ``maximum_tries`` at least 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.machine.command_body import Body, CommandBase, ParameterError
from engine.machine.model import GatherAudio, GatherRules

DIGITS = re.compile(r"^[0-9A-D*#]+$")
MAX_WAIT_MILLIS = 14_400_000
_RULE_FIELDS = (
    "minimum_digits",
    "maximum_digits",
    "terminating_digit",
    "valid_digits",
    "timeout_millis",
    "inter_digit_timeout_millis",
)
GATHER_FIELDS = (*_RULE_FIELDS, "initial_timeout_millis", "gather_id")
GATHER_USING_AUDIO_FIELDS = (
    *_RULE_FIELDS,
    "audio_url",
    "media_name",
    "invalid_audio_url",
    "invalid_media_name",
    "maximum_tries",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather(CommandBase):
    rules: GatherRules
    gather_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatherUsingAudio(CommandBase):
    rules: GatherRules
    prompt: GatherAudio
    invalid_prompt: GatherAudio | None = None
    maximum_tries: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class GatherStop(CommandBase):
    pass


def parse_gather(b: Body) -> Gather:
    b.only(GATHER_FIELDS)
    initial = b.req_integer("initial_timeout_millis", 1, MAX_WAIT_MILLIS, 5000)
    return Gather(
        rules=_rules(b, initial),
        gather_id=b.string("gather_id", max_len=100),
        **b.common(),
    )


def parse_gather_using_audio(b: Body) -> GatherUsingAudio:
    b.only(GATHER_USING_AUDIO_FIELDS)
    prompt = _audio(b, "audio_url", "media_name")
    if prompt is None:
        raise ParameterError(
            "'audio_url' or 'media_name' is required", field="audio_url", code="10004"
        )
    return GatherUsingAudio(
        rules=_rules(b),
        prompt=prompt,
        invalid_prompt=_audio(b, "invalid_audio_url", "invalid_media_name"),
        maximum_tries=b.req_integer("maximum_tries", 1, None, 3),
        **b.common(),
    )


def parse_gather_stop(b: Body) -> GatherStop:
    b.only(())
    return GatherStop(**b.common())


def _rules(b: Body, initial_timeout_millis: int = 5000) -> GatherRules:
    minimum = b.req_integer("minimum_digits", 1, 128, 1)
    maximum = b.req_integer("maximum_digits", 1, 128, 128)
    if minimum > maximum:
        raise ParameterError(
            "'minimum_digits' must not be more than 'maximum_digits'", field="minimum_digits"
        )
    terminating = b.string("terminating_digit")
    if terminating is None:
        terminating = "#"
    elif terminating and not (len(terminating) == 1 and DIGITS.match(terminating)):
        raise ParameterError(
            "'terminating_digit' must be one of 0-9, A-D, * and #, or empty",
            field="terminating_digit",
        )
    valid = b.string("valid_digits")
    if valid is not None and not DIGITS.match(valid):
        raise ParameterError(
            "'valid_digits' must hold one or more of 0-9, A-D, * and #", field="valid_digits"
        )
    return GatherRules(
        minimum_digits=minimum,
        maximum_digits=maximum,
        terminating_digit=terminating,
        valid_digits=valid if valid is not None else "0123456789#*",
        timeout_millis=b.req_integer("timeout_millis", 1, MAX_WAIT_MILLIS, 60000),
        inter_digit_timeout_millis=b.req_integer(
            "inter_digit_timeout_millis", 1, MAX_WAIT_MILLIS, 5000
        ),
        initial_timeout_millis=initial_timeout_millis,
    )


def _audio(b: Body, url_field: str, name_field: str) -> GatherAudio | None:
    """An audio_url or a media_name, as playback_start takes them, never both."""
    url, name = b.audio_url(url_field), b.string(name_field)
    if url is not None and name is not None:
        raise ParameterError(
            f"'{url_field}' and '{name_field}' cannot be used together", field=url_field
        )
    if url is None and name is None:
        return None
    return GatherAudio(audio_url=url, media_name=name)
