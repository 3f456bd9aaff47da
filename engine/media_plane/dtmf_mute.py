"""Who must not hear an in-band key press, and for how long: the one owner of DTMF muting.

The machine marks listeners with ``SetDtmfMute`` (a bridge's ``mute_dtmf``); the mixer detects
digits in what every leg says. This module turns those two into hear-matrix entries ("listener
L does not hear speaker S", ``Mixer.mute_for``), which the media plane applies as returned:

- From the tick after a digit is detected on speaker S (``tick`` runs after the mix that found
  it), every DTMF-muted listener stops hearing S. The tone is in S's audio, so the onset up to
  the detecting frame has reached them already: the detector needs about 40 ms of tone.
- S stays silenced while the detector holds the digit, then ``DTMF_HANGOVER_TICKS`` more ticks
  (the tone's tail, after the detector let go of it), then is heard again.
- The entry names every DTMF-muted listener, wherever it is; the hear-matrix applies it only in
  a room the two share. So a listener joining S's room mid-digit does not hear the rest of it
  from the moment it joins, one leaving needs nothing, and S moving to another room mid-digit
  keeps its silence there. A room with no muted listener stays as it was (passthrough too).
- Muting or unmuting a listener mid-digit applies at once to every speaker being silenced.
- A speaker whose media detaches is forgotten: a new stream starts with no digit held.

Everything here is plain bookkeeping (no mixer, no I/O): inputs in, the entries to change out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["DTMF_HANGOVER_TICKS", "DtmfMute", "MuteChanges"]

#: Ticks a DTMF-muted listener keeps not hearing a speaker after its digit is released (40 ms).
DTMF_HANGOVER_TICKS = 2

#: Speaker -> exactly the listeners that must not hear it from now on (empty: heard by all).
MuteChanges = dict[str, frozenset[str]]


class DtmfMute:
    """The DTMF-mute policy of one media plane."""

    def __init__(self, hangover_ticks: int = DTMF_HANGOVER_TICKS) -> None:
        if hangover_ticks < 0:
            raise ValueError(f"hangover_ticks must be >= 0, got {hangover_ticks}")
        self._hangover_ticks = hangover_ticks
        # Listeners that must not hear DTMF (SetDtmfMute), whether or not their media is live.
        self._muted: set[str] = set()
        # Speakers being silenced -> ticks left once their digit is released.
        self._silenced: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Some speaker is being silenced: ``tick`` has work even on a tick with no new digit."""
        return bool(self._silenced)

    def is_muted(self, listener: str) -> bool:
        return listener in self._muted

    def silenced(self) -> frozenset[str]:
        """The speakers DTMF-muted listeners do not hear now."""
        return frozenset(self._silenced)

    def set_muted(self, listener: str, muted: bool) -> MuteChanges:
        """Whether ``listener`` may hear DTMF; the entries of the speakers silenced now change
        at once (a listener unmuted mid-digit hears the speaker again from the next tick)."""
        if muted == (listener in self._muted):
            return {}
        if muted:
            self._muted.add(listener)
        else:
            self._muted.discard(listener)
        return {speaker: self._listeners(speaker) for speaker in self._silenced}

    def tick(self, started: Iterable[str], held: Callable[[str], str | None]) -> MuteChanges:
        """After a mixer pass: ``started`` are the speakers a new digit was detected on, ``held``
        tells the digit a speaker is still pressing (None once released)."""
        changes: MuteChanges = {}
        for speaker in started:
            if speaker not in self._silenced:
                changes[speaker] = self._listeners(speaker)
            # Counted from its release, below; a digit that starts mid-hangover restarts it.
            self._silenced[speaker] = self._hangover_ticks
        for speaker, left in list(self._silenced.items()):
            if held(speaker) is not None:
                self._silenced[speaker] = self._hangover_ticks
            elif left == 0:
                del self._silenced[speaker]
                changes[speaker] = frozenset()
            else:
                self._silenced[speaker] = left - 1
        return changes

    def forget(self, speaker: str) -> None:
        """The speaker's media detached: its digit, if any, ended with it."""
        self._silenced.pop(speaker, None)

    def _listeners(self, speaker: str) -> frozenset[str]:
        return frozenset(self._muted - {speaker})
