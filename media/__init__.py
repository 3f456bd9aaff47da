"""Audio for callbridge: codecs, mixer, clock, jitter, tones, recording. Pure numpy, no I/O."""
