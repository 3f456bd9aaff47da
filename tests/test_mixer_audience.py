"""The hear-matrix's audience (``Mixer.hear_only``): only the named listeners hear a leg, in
whatever room it is; it composes with ``mute_for`` (DTMF mute) and deaf (all must allow), and
a two-party room whose audiences cover the peer stays passthrough."""

from __future__ import annotations

from collections.abc import Mapping

from tests.test_mixer import Samples, heard, room_of_pcm, say


def levels(out: Mapping[str, Samples], legs: str) -> list[int]:
    return [int(out[leg][0]) for leg in legs]


def test_only_the_audience_hears_the_leg_and_it_still_hears_all() -> None:
    mixer = room_of_pcm("a", "b", "s")
    mixer.hear_only("s", frozenset({"a"}))  # whisper to a
    say(mixer, a=100, b=10, s=1)
    assert levels(heard(mixer), "abs") == [11, 100, 110]
    mixer.hear_only("s", frozenset())  # monitor
    say(mixer, a=100, b=10, s=1)
    assert levels(heard(mixer), "abs") == [10, 100, 110]
    mixer.hear_only("s", None)  # barge
    say(mixer, a=100, b=10, s=1)
    assert levels(heard(mixer), "abs") == [11, 101, 110]


def test_the_audience_composes_with_mute_for_and_follows_the_leg() -> None:
    mixer = room_of_pcm("a", "b", "s")
    mixer.hear_only("s", frozenset({"a", "b"}))
    mixer.mute_for("s", frozenset({"a"}))  # a DTMF-muted listener during s's digit
    say(mixer, a=100, b=10, s=1)
    assert levels(heard(mixer), "abs") == [10, 101, 110]
    mixer.mute_for("s", frozenset())
    mixer.leave("s")
    room_of_pcm("c", mixer=mixer, room="q")
    mixer.join("s", "q")  # its audience goes with it: c is not in it
    say(mixer, s=1, c=1000)
    assert levels(heard(mixer), "sc") == [1000, 0]


def test_a_pair_whose_audience_covers_the_peer_stays_passthrough() -> None:
    mixer = room_of_pcm("a", "b")
    mixer.hear_only("a", frozenset({"b"}))
    assert mixer.is_passthrough("r")
    mixer.hear_only("a", frozenset())
    assert not mixer.is_passthrough("r")
