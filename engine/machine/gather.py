"""DTMF gathers: ``gather`` and ``gather_using_audio`` collect a leg's key presses and end with one
``call.gather.ended`` (``digits``, ``status``); ``gather_stop`` ends one early.

Digits are the leg's key presses as ``engine.machine.media.dtmf_received`` counts them (one per
press, whether reported out-of-band, in-band or both); each still yields its
``call.dtmf.received``, as Telnyx lists both webhooks for a gather. While a gather runs, a press:

- equal to ``terminating_digit`` (unless it is "") ends the try without being collected;
- outside ``valid_digits`` ends the try at once as ``invalid`` (it is reported in ``digits``):
  no later press can make that input valid;
- else is collected; the ``maximum_digits``-th ends the try as ``valid``.

A try that ends by the terminating digit or a timer is ``valid`` when it collected between
``minimum_digits`` and ``maximum_digits`` digits and ``invalid`` otherwise; a timer that ends a try
with nothing collected makes it ``timeout``. Statuses are those of the SDK's
``types/call_gather_ended.py`` (valid, invalid, call_hangup, cancelled, timeout; cancelled_amd
needs answering-machine detection, which callbridge lacks).

Timers (``GATHER_TIMEOUT``, ``GATHER_DIGIT_WAIT``, tagged with the gather so a late firing of an
earlier one never acts on it) are the machine's own, stored with the leg, so a gather outlives a
restart of the process:

- ``gather``: ``timeout_millis`` for the whole gather from its start, and the digit wait:
  ``initial_timeout_millis`` for the first digit, ``inter_digit_timeout_millis`` after each.
- ``gather_using_audio``: each try plays the prompt through the playback machinery
  (``call.playback.started``/``ended``); a press during it stops it (``cancelled``) and counts.
  Once it has played, ``timeout_millis`` waits for the first digit ("the number of milliseconds to
  wait for a DTMF response after file playback ends", Telnyx's reference), then
  ``inter_digit_timeout_millis`` after each. A try that ends ``invalid`` or ``timeout`` is followed
  by another while ``maximum_tries`` (every try counts, as every try plays the prompt) allows,
  the invalid prompt first after invalid input; the last try's status is reported. A prompt that
  cannot be played (or that another playback replaced) counts as played.

One gather per leg: a new one while one runs is refused (422; Telnyx documents nothing for
it), as is ``gather_stop`` with none running. ``gather_stop`` ends it ``cancelled`` and a hangup
``call_hangup``, both with the digits collected so far. After a restart a prompt that was playing
plays again from its start (the old process's audio went with it).
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import InvalidState
from engine.machine import media
from engine.machine.commands import PlaybackStart
from engine.machine.core import Core
from engine.machine.gather_commands import Gather as GatherCommand
from engine.machine.gather_commands import GatherUsingAudio
from engine.machine.model import (
    INVALID_STATE_CODE,
    Gather,
    GatherAudio,
    GatherRules,
    Leg,
    TimerKey,
    TimerKind,
)

_TIMERS = (TimerKind.GATHER_TIMEOUT, TimerKind.GATHER_DIGIT_WAIT)


# Commands.
def check_start(leg: Leg) -> None:
    if leg.gather is not None:
        raise InvalidState(
            "a gather is already in progress: stop it with gather_stop first",
            code=INVALID_STATE_CODE,
        )


def check_stop(leg: Leg) -> None:
    if leg.gather is None:
        raise InvalidState("no gather is in progress", code=INVALID_STATE_CODE)


def start(core: Core, leg: Leg, command: GatherCommand) -> Leg:
    tag = _new_tag(leg)
    # Telnyx generates a gather_id when none is given; the machine's ids are not random.
    gather = Gather(tag=tag, rules=command.rules, gather_id=command.gather_id or tag)
    leg = core.update(leg, seq=leg.seq + 1, gather=gather)
    leg = core.start_timer(leg, TimerKind.GATHER_TIMEOUT, _s(command.rules.timeout_millis), tag)
    wait = _s(command.rules.initial_timeout_millis)
    return core.start_timer(leg, TimerKind.GATHER_DIGIT_WAIT, wait, tag)


def start_using_audio(core: Core, leg: Leg, command: GatherUsingAudio) -> Leg:
    gather = Gather(
        tag=_new_tag(leg),
        rules=command.rules,
        prompt=command.prompt,
        invalid_prompt=command.invalid_prompt,
        tries_left=command.maximum_tries,
    )
    leg = core.update(leg, seq=leg.seq + 1, gather=gather)
    return _play(core, leg, command.prompt, invalid=False)


def stop(core: Core, leg: Leg) -> Leg:
    return _end(core, leg, "cancelled")


# Events.
def digit(core: Core, leg: Leg, key: str) -> Leg:
    gather = leg.gather
    if gather is None:
        return leg
    leg = _stop_prompt(core, leg)
    rules = gather.rules
    if rules.terminating_digit and key == rules.terminating_digit:
        return _try_over(core, leg, _judge(gather.digits, rules))
    digits = gather.digits + key
    leg = _set(core, leg, digits=digits)
    if key not in rules.valid_digits:
        return _try_over(core, leg, "invalid")
    if len(digits) >= rules.maximum_digits:
        return _try_over(core, leg, "valid")
    if gather.prompt is not None:  # the wait for a first digit is over
        leg = core.cancel_timers(leg, TimerKind.GATHER_TIMEOUT)
    leg = core.cancel_timers(leg, TimerKind.GATHER_DIGIT_WAIT)
    wait = _s(rules.inter_digit_timeout_millis)
    return core.start_timer(leg, TimerKind.GATHER_DIGIT_WAIT, wait, gather.tag)


def timer_fired(core: Core, leg: Leg, key: TimerKey) -> Leg:
    gather = leg.gather
    if gather is None or key.tag != gather.tag:
        return leg
    status = _judge(gather.digits, gather.rules) if gather.digits else "timeout"
    return _try_over(core, leg, status)


def playback_changed(core: Core, leg: Leg, *, completed: bool = False) -> Leg:
    """A playback of the leg ended, or a playback command ran: if it was the prompt, the try
    moves on. ``completed``: the prompt played to its end (an invalid prompt is then followed
    by the prompt; one stopped or replaced is not, so nothing cuts the replacing audio)."""
    gather = leg.gather
    if gather is None or gather.playing is None:
        return leg
    if any(p.playback_id == gather.playing for p in leg.playbacks):
        return leg
    leg = _set(core, leg, playing=None, playing_invalid=False)
    if gather.playing_invalid and completed and gather.prompt is not None:
        return _play(core, leg, gather.prompt, invalid=False)
    wait = _s(gather.rules.timeout_millis)
    return core.start_timer(leg, TimerKind.GATHER_TIMEOUT, wait, gather.tag)


def hung_up(core: Core, leg: Leg) -> Leg:
    return _end(core, leg, "call_hangup") if leg.gather is not None else leg


def adopted(core: Core, leg: Leg) -> Leg:
    """A restarted process took the leg over: a prompt that was playing starts again."""
    gather = leg.gather
    if gather is None or gather.playing is None:
        return leg
    audio = gather.invalid_prompt if gather.playing_invalid else gather.prompt
    if audio is None:
        return leg
    return _play(core, leg, audio, invalid=gather.playing_invalid)


# The rules.
def _judge(digits: str, rules: GatherRules) -> str:
    return "valid" if rules.minimum_digits <= len(digits) <= rules.maximum_digits else "invalid"


def _try_over(core: Core, leg: Leg, status: str) -> Leg:
    gather = leg.gather
    assert gather is not None  # callers hold a running gather
    if status == "valid" or gather.prompt is None or gather.tries_left <= 1:
        return _end(core, leg, status)
    leg = core.cancel_timers(leg, *_TIMERS)
    leg = _set(core, leg, digits="", tries_left=gather.tries_left - 1)
    if status == "invalid" and gather.invalid_prompt is not None:
        return _play(core, leg, gather.invalid_prompt, invalid=True)
    return _play(core, leg, gather.prompt, invalid=False)


def _end(core: Core, leg: Leg, status: str) -> Leg:
    gather = leg.gather
    assert gather is not None  # callers hold a running gather
    leg = _stop_prompt(core, leg)
    leg = core.cancel_timers(leg, *_TIMERS)
    leg = core.update(leg, gather=None)
    extra = {"gather_id": gather.gather_id} if gather.gather_id is not None else {}
    core.webhook(leg, "call.gather.ended", digits=gather.digits, status=status, **extra)
    return leg


# Prompts.
def _play(core: Core, leg: Leg, audio: GatherAudio, *, invalid: bool) -> Leg:
    command = PlaybackStart(audio_url=audio.audio_url, media_name=audio.media_name)
    # At once, ahead of the leg's queued playbacks, which go on after the prompt.
    leg = media.play_now(core, leg, media.queued_playback(leg, command))
    return _set(core, leg, playing=leg.playbacks[-1].playback_id, playing_invalid=invalid)


def _stop_prompt(core: Core, leg: Leg) -> Leg:
    gather = leg.gather
    if gather is None or gather.playing is None:
        return leg
    for playback in leg.playbacks:
        if playback.playback_id == gather.playing:
            leg = media.end_playback(core, leg, playback, "cancelled")
    leg = _set(core, leg, playing=None, playing_invalid=False)
    return media.next_playback(core, leg)


def _set(core: Core, leg: Leg, **changes: object) -> Leg:
    assert leg.gather is not None  # callers hold a running gather
    return core.update(leg, gather=replace(leg.gather, **changes))  # type: ignore[arg-type]


def _new_tag(leg: Leg) -> str:
    return f"{leg.call_control_id}/gather/{leg.seq + 1}"


def _s(millis: int) -> float:
    return millis / 1000
