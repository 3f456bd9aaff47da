"""Which mixed listeners hear nothing at all this tick: every speaker they hear was missing its
frame, and no overlay plays to them.

The mixer sends such a listener no frame (``Mixer.tick``) rather than a frame of silence. The
missing frame is late, not silent: a silence sent in its place would be played, and the speaker's
frame, mixed at the next tick, would then arrive one frame behind it, so the listener would hear
a gap the speaker never made plus 20 ms more delay. Sent nothing, the listener's provider bridges
the gap from its own playout buffer, as it does for any network jitter. This also covers the
first tick after a two-party room switches from forwarding to mixing, when the speaker's next
frame has not arrived yet (issue 10, point 8: no silent frame once a room is established).

Legs alone or in no room (``Layout.silent``), and listeners whose gains let them hear nobody, are
not concerned: they have no speaker to wait for, and still hear silence (and their overlay) every
tick.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from media.rooms import Layout

__all__ = ["hearing_nothing"]


def hearing_nothing(layout: Layout, got: NDArray[np.intp], capacity: int) -> NDArray[np.bool_]:
    """A mask over slots: True for a mixed listener who hears at least one speaker, none of
    whose speakers had a frame this tick (``got``: the slots that had one), and who has no
    overlay. A listener who hears nobody by its gains (everyone muted for it, or it is deaf)
    hears silence every tick, as a leg alone does."""
    present = np.zeros(capacity, dtype=bool)
    present[got] = True
    nothing = np.zeros(capacity, dtype=bool)
    if layout.swap_dst.size:
        nothing[layout.swap_dst] = ~present[layout.swap_src]
    for rows in layout.sums:  # mix-minus: a listener hears everyone else in its room
        spoke = present[rows]
        others = spoke.sum(axis=1, keepdims=True) - spoke
        nothing[rows] = others == 0
    for rows, gains in layout.weighted:  # gains[room, listener, speaker]
        audible = gains != 0
        heard = audible & present[rows][:, None, :]
        nothing[rows] = audible.any(axis=2) & ~heard.any(axis=2)
    nothing[layout.overlay_slots] = False
    return nothing
