"""Who hears whom, through the media plane: the machine's audience (``set_audience``, a
whisper supervisor here) and the DTMF-mute policy (``set_dtmf_mute``) both write the
hear-matrix and neither undoes the other: a whisperer's digit is kept from its DTMF-muted
target, which hears it again once the digit is over; a leg outside the audience never hears it."""

from __future__ import annotations

from pathlib import Path

from tests.test_dtmf_mute import digit_heard
from tests.test_inband_dtmf import ONE_HASH, SPANS, Scene, frames, sine


def test_a_whisperers_digit_is_kept_from_its_dtmf_muted_target_and_nobody_else_hears_it(
    tmp_path: Path,
) -> None:
    span = SPANS["1"]
    scene = Scene(tmp_path)
    for leg in ("s", "target", "other"):
        scene.leg(leg)
    scene.plane.set_audience("s", frozenset({"target"}), deaf=False)  # s whispers to target
    scene.plane.set_dtmf_mute("target", True)
    scene.run({"s": ONE_HASH, "other": frames(sine(400, 4000))})
    detected = scene.detected_at("1")
    assert detected < span[-1]
    assert digit_heard(scene, "target", range(detected + 2, span[-1] + 1)) == []
    assert digit_heard(scene, "other", range(span[-1] + 1)) == []
    # The digit over, the target hears the whisperer again; the other leg still does not.
    assert scene.plane.mixer.gain("call", "target", "s") == 1.0
    assert scene.plane.mixer.gain("call", "other", "s") == 0.0
    assert scene.plane.mixer.gain("call", "s", "other") == 1.0  # the whisperer hears all
