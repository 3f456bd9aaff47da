"""The digits waiting to be played to each leg: the one owner of every leg's outgoing DTMF queue.

``send_dtmf`` digits and a peer's relayed key presses (``MediaPlane.relay_dtmf``) both sound in
what the leg's far end hears, and a DTMF receiver takes one digit at a time: so each leg has one
queue (``media.dtmf_out.DigitQueue``), and every send plays after the ones before it, in order.

The queue is kept here whether or not the leg's media is live. The media plane runs it as the
leg's overlay under ``DTMF_TAG`` while a stream is attached (the overlay store,
``engine.media_plane.overlays``, holds it as a running source like any other): digits sent
before the media attaches wait and start when it does; a stream that breaks mid-digit leaves
the queue here with that digit to be played again from its start on the next stream (why:
``media.dtmf_out``). A queue that has played everything ends its overlay and is dropped; the
machine clears it at hangup (``ClearOverlay(leg, DTMF_TAG)``). Telnyx sends no webhook for
``send_dtmf``, so nothing is reported when a queue ends.
"""

from __future__ import annotations

from collections.abc import Callable

from media.dtmf_out import DigitQueue

__all__ = ["DigitsOut"]


class DigitsOut:
    """Every leg's outgoing digit queue, by leg."""

    def __init__(self, sample_rate: int, ended: Callable[[str], None]) -> None:
        """``ended(leg_id)`` is called when a leg's queue has played its last sample (from
        within the mixer's pull); the caller clears it (``clear``) and its overlay."""
        self.sample_rate = sample_rate
        self._ended = ended
        self._queues: dict[str, DigitQueue] = {}

    def send(self, leg_id: str, digits: str, tone_ms: int) -> DigitQueue | None:
        """Queue ``digits`` for the leg; the leg's queue if it was new (the caller starts it on
        the leg's live media), None if it was running or waiting already."""
        queue = self._queues.get(leg_id)
        if queue is not None:
            queue.push(digits, tone_ms)
            return None
        queue = DigitQueue(sample_rate=self.sample_rate, on_end=lambda: self._ended(leg_id))
        queue.push(digits, tone_ms)
        self._queues[leg_id] = queue
        return queue

    def waiting(self, leg_id: str) -> DigitQueue | None:
        """The leg's queue, to start on a stream that attached; None if it has none."""
        return self._queues.get(leg_id)

    def interrupted(self, leg_id: str) -> None:
        """The leg's stream went away: the digit it cut plays again from its start."""
        queue = self._queues.get(leg_id)
        if queue is not None:
            queue.restart_current()

    def clear(self, leg_id: str) -> None:
        """Forget the leg's queue, whatever it still held."""
        queue = self._queues.pop(leg_id, None)
        if queue is not None:
            queue.clear()

    def __contains__(self, leg_id: object) -> bool:
        return leg_id in self._queues
