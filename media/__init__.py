"""Audio for callbridge: codecs, mixer, clock, jitter buffers, tones, recording. Pure numpy, no I/O."""
