"""The compiled media hot path (engine/hot_path.py): built, imported, known stale, removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.hot_path import HOT_PATH, SUFFIX, Build, main

COMPILED = "adapters/window.py"  # the module compiled, in a temporary tree
LIMITS = "adapters/limits.py"  # a module it imports, left interpreted


def _tree(root: Path, window: int) -> Build:
    (root / "adapters").mkdir(exist_ok=True)
    (root / "adapters" / "__init__.py").write_text("")
    (root / LIMITS).write_text(f"from typing import Final\n\nWINDOW: Final = {window}\n")
    (root / COMPILED).write_text(
        "from adapters.limits import WINDOW\n\n\n"
        "def window(frames: list[bytes]) -> list[bytes]:\n"
        "    return frames[:WINDOW]\n"
    )
    return Build(root=root, paths=(COMPILED,), group="adapters.hot_path")


def _run(root: Path, code: str) -> str:
    """What a fresh interpreter, with ``root`` first on its path, prints."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_a_build_is_imported_and_any_source_it_was_made_from_changing_makes_it_stale(
    tmp_path: Path,
) -> None:
    build = _tree(tmp_path, window=2)
    assert build.sources() == [LIMITS, COMPILED]
    assert build.compiled_modules() == [] and not build.up_to_date()
    assert build.changed_sources() == [], "nothing compiled, nothing stale"

    build.build()

    assert build.compiled_modules() == ["adapters.window"]
    assert build.changed_sources() == [] and build.up_to_date()
    assert _run(tmp_path, "import adapters.window as m; print(m.__file__)").endswith(SUFFIX)
    probe = "from adapters.window import window; print(window([b'1', b'2', b'3']))"
    assert _run(tmp_path, probe) == "[b'1', b'2']"

    # The imported module changes: the compiled code still holds the old constant, which is
    # why the build is stale.
    _tree(tmp_path, window=1)
    assert _run(tmp_path, probe) == "[b'1', b'2']"
    assert build.changed_sources() == [LIMITS] and not build.up_to_date()
    code = tmp_path / ("adapters/hot_path__mypyc" + SUFFIX)  # the group's code; the module's
    # own extension is a stub that loads it
    with code.open("rb") as mapped:  # as a running engine holds it
        before = mapped.read()
        build.build()
        mapped.seek(0)
        # setuptools replaces a file it copies rather than rewriting it: an engine running
        # through a rebuild keeps the code it mapped (a rewritten mapped library can crash it).
        assert mapped.read() == before, "a rebuild writes new files, not over the old ones"
        assert code.read_bytes() != before, "the rebuilt code is another"
    assert _run(tmp_path, probe) == "[b'1']" and build.up_to_date()

    with (tmp_path / COMPILED).open("a") as source:
        source.write("\n# edited after the build\n")
    assert build.changed_sources() == [COMPILED]

    build.remove()
    assert build.compiled_modules() == [] and build.changed_sources() == []
    assert _run(tmp_path, "import adapters.window as m; print(m.__file__)").endswith("window.py")
    assert _run(tmp_path, probe) == "[b'1']"


def test_a_source_that_does_not_compile_leaves_the_module_interpreted_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = _tree(tmp_path, window=2)
    (tmp_path / COMPILED).write_text('def window() -> int:\n    return "two"\n')

    assert main(["ensure"], build) == 0, "make run goes on, interpreted"

    assert "could not be compiled" in capsys.readouterr().err
    assert build.compiled_modules() == []
    with pytest.raises(SystemExit):
        build.build()  # as `python -m engine.hot_path build`: loudly


def test_the_hot_paths_sources_take_in_what_its_modules_import() -> None:
    sources = Build().sources()
    assert set(HOT_PATH) <= set(sources)
    assert "media/codecs.py" in sources, "imported by the mixer, never compiled"
    assert "engine/hot_path.py" not in sources


def test_the_suite_runs_the_build_make_asked_for() -> None:
    """``make test`` compiles the hot path (``COMPILED=1``, the default) or keeps it interpreted
    (``COMPILED=0``, CI's second interpreter) and says which; run otherwise, nothing is asked."""
    asked = os.environ.get("CALLBRIDGE_TEST_COMPILED")
    if asked is None:
        pytest.skip("not run by make: no build asked for")
    import media.mixer

    if asked == "1":
        assert Build().up_to_date()
        assert media.mixer.__file__ is not None and media.mixer.__file__.endswith(SUFFIX)
    else:
        assert Build().compiled_modules() == []
        assert media.mixer.__file__ is not None and media.mixer.__file__.endswith(".py")
