"""The media plane: the engine's side of the audio, between the adapters' streams and the mixer.

``plane.py`` (``MediaPlane``) keeps mixer membership, recordings and per-leg outputs;
``overlays.py`` keeps every leg's overlays (spec and running source); ``dtmf_mute.py`` decides
who must not hear an in-band digit; ``tick.py`` is the one 20 ms clock every leg's media runs
on; ``stats.py`` counts each leg's media; ``recordings.py`` feeds the recorders from the
mixer's taps; and ``audio_sources.py`` / ``audio_fetch.py`` turn what a playback names into
samples. The audio
work itself (mixing, codecs, DTMF, recording files) is the top-level ``media`` package's.
"""
