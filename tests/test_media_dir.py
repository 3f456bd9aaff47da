"""Playback sources are confined to the media directory (issue 11, point 4, the file:// part).

``playback_start`` with ``file:///...`` used to play any WAV the engine could read, another
organization's recordings included. Now only files in ``CALLBRIDGE_MEDIA_DIR`` play; anything
else is refused with the same 422 whether or not the file exists, and the media plane checks
again after symlinks when it opens the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app import recordings_dir
from engine.config import Settings
from engine.machine import commands as cmd
from engine.machine.commands import ParameterError
from tests.call_fakes import Harness, write_wav


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def refusal(url: str, media_dir: str | None) -> str:
    with pytest.raises(ParameterError) as refused:
        cmd.parse_command("playback_start", {"audio_url": url}, media_dir=media_dir)
    assert refused.value.field == "audio_url"
    return str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file:///srv/media/../../etc/passwd",
        "file:///srv/media/%2e%2e/secret.wav",
        "file:///srv/media",  # the directory itself
        "file:///srv/mediaX/a.wav",  # a sibling sharing the prefix
        "ftp://example.com/a.wav",  # neither http(s) nor file
        "/srv/media/a.wav",
    ],
)
def test_only_files_inside_the_media_directory_are_accepted(url: str) -> None:
    assert "media directory" in refusal(url, "/srv/media")


def test_without_a_media_directory_no_file_plays() -> None:
    refusal("file:///srv/media/a.wav", None)


def test_a_file_inside_is_accepted_whether_or_not_it_exists() -> None:
    parsed = cmd.parse_command(
        "playback_start", {"audio_url": "file:///srv/media/sub/a.wav"}, media_dir="/srv/media"
    )
    assert isinstance(parsed, cmd.PlaybackStart)
    assert parsed.audio_url == "file:///srv/media/sub/a.wav"


async def test_the_answer_is_the_same_for_a_secret_an_existing_recording_and_a_missing_file(
    h: Harness, settings: Settings, tmp_path: Path
) -> None:
    a = await h.up()
    recording = recordings_dir(settings) / "org-2" / "theirs.wav"
    write_wav(recording, 440, 0.1)
    answers = []
    missing_inside = Path(settings.media_dir or "") / "missing.wav"
    for url in ("file:///etc/passwd", recording.as_uri(), missing_inside.as_uri()):
        reply = await h.act(a, "playback_start", audio_url=url)
        assert reply.status == 422
        (error,) = reply.body["errors"]
        answers.append((error["code"], error["detail"], str(error["source"])))
    assert len(set(answers)) == 1, answers


async def test_a_symlink_out_of_the_media_directory_is_refused_like_a_missing_file(
    h: Harness, settings: Settings, tmp_path: Path
) -> None:
    outside = write_wav(tmp_path / "outside" / "secret.wav", 440, 0.3)
    link = Path(settings.media_dir or "") / "innocent.wav"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    a = await h.up()
    reply = await h.act(a, "playback_start", audio_url=link.as_uri())  # the path is inside
    assert reply.status == 422


async def test_a_file_swapped_for_a_symlink_after_the_command_does_not_play(
    h: Harness, settings: Settings, tmp_path: Path
) -> None:
    inside = write_wav(Path(settings.media_dir or "") / "prompt.wav", 440, 0.3)
    outside = write_wav(tmp_path / "outside" / "secret.wav", 440, 0.3)
    a = await h.up(media=None)
    await h.ok(a, "playback_start", audio_url=inside.as_uri())
    await h.receiver.next("call.playback.started", a)
    inside.unlink()
    inside.symlink_to(outside)  # the plane opens the file when media starts: it checks again
    await h.media(a)
    ended = await h.receiver.next("call.playback.ended", a)
    assert ended.payload["status"] == "file_not_found"  # as for a file that is not there
