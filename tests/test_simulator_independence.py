"""The simulators share no code with callbridge: a mistake in callbridge's codecs, signatures,
TwiML or webhook envelopes cannot reappear in the simulators and so pass unnoticed.

Two independent checks: every simulator source file's imports, read from its syntax tree
(relative imports resolved, imports inside functions and ``TYPE_CHECKING`` blocks included, and
``importlib.import_module("...")`` calls with a literal name); and every simulator module
imported in a fresh interpreter, whose ``sys.modules`` must then hold none of callbridge's
packages. The checker itself is tested on planted sources, so it is known to fail when it should.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIMULATORS = ROOT / "adapters" / "simulators"
# callbridge's own code: the engine, its media core and its provider adapters.
FORBIDDEN = ("engine", "media", "adapters.twilio", "adapters.telnyx")


def _is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, package: str = "adapters.simulators") -> set[str]:
    """Every module ``source`` (a file of ``package``) imports, by absolute name; for ``from X
    import name`` both ``X`` and ``X.name`` (the name may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, package)
            found.add(module)
            found.update(f"{module}.{alias.name}" if module else alias.name
                         for alias in node.names)  # fmt: skip
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def forbidden_imports(source: str, package: str = "adapters.simulators") -> set[str]:
    return {module for module in imported_modules(source, package) if _is_forbidden(module)}


# --- the checker, on planted sources -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from media.codecs import encode", "media.codecs"),
        ("import engine.runtime.runtime as runtime", "engine.runtime.runtime"),
        ("from adapters.telnyx.signature import sign_webhook", "adapters.telnyx.signature"),
        ("from adapters import twilio", "adapters.twilio"),
        ("from ..twilio.twiml import parse_twiml", "adapters.twilio.twiml"),
        ("from ... import media", "media"),
        ("def f():\n    from media import codecs\n", "media"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import engine\n", "engine"),
        ("import importlib\nimportlib.import_module('media.codecs')", "media.codecs"),
    ],
)
def test_checker_catches_planted_imports(source: str, caught: str) -> None:
    assert caught in forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "from adapters.simulators.audio import ToneSource",
        "from . import codecs",
        "from .twilio_stream import TwilioStream",
        "import numpy as np\nimport audioop\nimport G722",
        "import mediapipe",  # a name that merely starts like a forbidden one
        "from adapters.twilio_like import x",
    ],
)
def test_checker_passes_clean_imports(source: str) -> None:
    assert forbidden_imports(source) == set()


# --- the simulators ------------------------------------------------------------------------------


def simulator_files() -> list[Path]:
    return sorted(SIMULATORS.rglob("*.py"))


def test_there_are_simulator_files_to_check() -> None:
    names = {path.name for path in simulator_files()}
    assert {"__init__.py", "twilio_calls.py", "telnyx_calls.py", "codecs.py", "wire.py"} <= names


@pytest.mark.parametrize("path", simulator_files(), ids=lambda path: path.name)
def test_simulator_source_imports_nothing_of_callbridge(path: Path) -> None:
    package = ".".join(path.parent.relative_to(ROOT).parts)
    assert forbidden_imports(path.read_text(), package) == set()


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(json.loads(result.stdout))


def test_the_probe_sees_a_forbidden_package_when_one_is_loaded() -> None:
    assert "media.codecs" in loaded_by("media.codecs")


def simulator_modules() -> list[str]:
    modules = []
    for path in simulator_files():
        relative = path.relative_to(ROOT).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        modules.append(".".join(parts))
    return modules


@pytest.mark.parametrize("module", simulator_modules())
def test_importing_a_simulator_module_loads_nothing_of_callbridge(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    assert {name for name in loaded if _is_forbidden(name)} == set()
