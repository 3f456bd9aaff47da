"""The compiled media hot path (engine/hot_path.py): built, imported, known stale, removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.media_order import MediaOrder
from engine.hot_path import ROOT, SUFFIX, Build

MODULE = "adapters/media_order.py"  # small, typed, no project imports


def _imported_from(root: Path, module: str) -> str:
    """Where a fresh interpreter, with ``root`` first on its path, imports ``module`` from."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_a_build_is_imported_and_a_changed_source_makes_it_stale(tmp_path: Path) -> None:
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "__init__.py").write_text("")
    shutil.copy(ROOT / MODULE, tmp_path / MODULE)
    build = Build(root=tmp_path, paths=(MODULE,), group="adapters.hot_path")
    assert build.compiled_modules() == [] and not build.up_to_date()

    build.build()

    assert build.compiled_modules() == ["adapters.media_order"]
    assert build.stale_modules() == [] and build.up_to_date()
    assert _imported_from(tmp_path, "adapters.media_order").endswith(SUFFIX)
    # The compiled module does what the source does.
    pushes = "[o.push(c, bytes([c])) for c in (1, 2, 4, 3, 5)]"
    probe = f"from adapters.media_order import MediaOrder; o = MediaOrder(); print({pushes})"
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == repr(eval(pushes, {"o": MediaOrder()}))

    with (tmp_path / MODULE).open("a") as source:
        source.write("\n# edited after the build\n")
    assert build.stale_modules() == ["adapters.media_order"] and not build.up_to_date()

    build.remove()
    assert build.compiled_modules() == [] and build.stale_modules() == []
    assert _imported_from(tmp_path, "adapters.media_order").endswith("media_order.py")


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
