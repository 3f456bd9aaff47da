"""The media hot path compiled to C with mypyc, and how to tell whether what runs is up to date.

Every media frame of every leg (50 a second per leg) goes through the same Python: the frame
parsed, counted, put back in order, forwarded or queued for the mix, rendered and written; and
every 20 ms the tick mixes and detects. Interpreted, that Python costs as much CPU per leg as
a bare aiohttp forwarder's whole path (BENCHMARKS.md, "Engine against a bare forwarder"); the
same modules compiled by mypyc (part of mypy: typed Python in, a C extension per module out)
cost less, with the source unchanged. ``HOT_PATH`` lists them: the per-frame path and the tick,
nothing that waits on I/O.

``make`` builds them in place (``python -m engine.hot_path ensure``: ``<module>.cpython-*.so``
beside each ``.py``, which Python then imports instead of the source) whenever one of their
sources changed since the last build, for the interpreter of the virtualenv at hand; ``make
pure`` removes them, and ``COMPILED=0`` keeps a virtualenv interpreted (CI runs its second
interpreter that way, so both builds are tested). A compiled module is stricter than its source
at run time: its annotations are checked (a ``str`` where ``bytes`` is declared raises
``TypeError``), and its classes take no attributes they do not declare.

A build is made against more than its own modules: mypyc compiles a module against what it
imports (it copies their ``Final`` constants into the compiled code, and takes their classes as
they were), so a build records the digest of every source it was made from, the compiled modules
and every project module they import, directly or not (``media/hot_path__mypyc-<tag>.json``).
``Build.changed_sources`` names those that changed since, which the compiled code does not know
of: ``callbridge serve`` logs them, and the test suite refuses to start (tests/conftest.py).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["GROUP", "HOT_PATH", "REBUILD_HINT", "ROOT", "Build", "main"]

ROOT: Final = Path(__file__).resolve().parent.parent

#: The modules compiled, by path from the project root.
HOT_PATH: Final = (
    "adapters/streams.py",
    "adapters/telnyx/stream.py",
    "adapters/twilio/stream.py",
    "adapters/media_order.py",
    "adapters/stream_output.py",
    "adapters/stream_session.py",
    "engine/media_plane/stats.py",
    "engine/media_plane/plane.py",
    "media/mixer.py",
    "media/sniff_batch.py",
    "media/mixer_dtmf.py",
    "media/input_ring.py",
)
#: The group's shared library (mypyc's runtime and the modules' code) lives in this package, so
#: that it imports from wherever the engine runs (an editable install maps packages only).
GROUP: Final = "media.hot_path"
#: This interpreter's extension suffix (".cpython-311-x86_64-linux-gnu.so"): a build for one
#: interpreter leaves another's interpreted.
SUFFIX: Final = importlib.machinery.EXTENSION_SUFFIXES[0]
#: What to do about a stale build, wherever one is reported.
REBUILD_HINT: Final = "rebuild them (make hot-path) or remove them (make pure)"


@dataclass(frozen=True)
class Build:
    """The compiled form of ``paths`` (from ``root``), for this interpreter."""

    root: Path = ROOT
    paths: tuple[str, ...] = HOT_PATH
    group: str = GROUP

    def compiled_modules(self) -> list[str]:
        """The modules this interpreter would import compiled (their extension exists)."""
        return [_module_name(path) for path in self.paths if self._extension(path).exists()]

    def changed_sources(self) -> list[str]:
        """Sources the compiled modules were built from that changed since (or, with no record
        of the build, all of them); none when nothing is compiled."""
        if not self.compiled_modules():
            return []
        try:
            built: dict[str, str] = json.loads(self._manifest().read_text())
        except (OSError, ValueError):
            built = {}
        now = self._digests()
        return sorted(
            path for path in built.keys() | now.keys() if built.get(path) != now.get(path)
        )

    def sources(self) -> list[str]:
        """The compiled modules and every project module they import, directly or not (type-only
        imports included: mypyc builds against those types too)."""
        packages = {path.split("/")[0] for path in self.paths}
        found, waiting = set(self.paths), list(self.paths)
        while waiting:
            for imported in _project_imports(self.root, waiting.pop(), packages):
                if imported not in found:
                    found.add(imported)
                    waiting.append(imported)
        return sorted(found)

    def up_to_date(self) -> bool:
        """Every module is compiled, from its source as it is now."""
        return len(self.compiled_modules()) == len(self.paths) and not self.changed_sources()

    def remove(self) -> None:
        """Back to the interpreted source: this interpreter's extensions and their record."""
        for path in self.paths:
            self._extension(path).unlink(missing_ok=True)
        self._shared_library().unlink(missing_ok=True)
        self._manifest().unlink(missing_ok=True)

    def build(self) -> None:
        """Compile the modules in place for this interpreter, and record what was compiled."""
        from mypyc.build import mypycify  # the build needs mypy; running the engine does not
        from setuptools.dist import Distribution  # type: ignore[import-untyped,unused-ignore]

        digests = self._digests()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        options = [
            # The project's mypy settings, but for this interpreter, and without the note about
            # overrides for modules outside this build (mypyc counts any message as a failure).
            "--python-version", version,
            "--no-warn-unused-configs",
        ]  # fmt: skip
        work = self.root / "build" / f"hot_path-{version}"
        here = Path.cwd()
        os.chdir(self.root)  # mypyc and the in-place build take paths from the project root
        try:
            extensions = mypycify(
                [*options, *self.paths], group_name=self.group, target_dir=str(work / "c")
            )
            # A bare distribution: setup() would read the project's pyproject.toml as well.
            dist = Distribution({"name": "callbridge-hot-path", "ext_modules": extensions})
            dist.script_name = "engine/hot_path.py"
            dist.script_args = ["-q", "build_ext", "--inplace", "--build-temp", str(work / "o")]
            dist.parse_command_line()
            dist.run_commands()
        finally:
            os.chdir(here)
        self._manifest().parent.mkdir(parents=True, exist_ok=True)
        self._manifest().write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")

    def _extension(self, path: str) -> Path:
        return self.root / (path.removesuffix(".py") + SUFFIX)

    def _shared_library(self) -> Path:
        package, _, name = self.group.rpartition(".")
        return self.root / package.replace(".", "/") / f"{name}__mypyc{SUFFIX}"

    def _manifest(self) -> Path:
        """Beside the shared library: it is part of the build (``build/`` is scratch)."""
        shared = self._shared_library()
        return shared.with_name(
            f"{shared.name.removesuffix(SUFFIX)}-{sys.implementation.cache_tag}.json"
        )

    def _digests(self) -> dict[str, str]:
        return {
            path: hashlib.sha256((self.root / path).read_bytes()).hexdigest()
            for path in self.sources()
        }


def _project_imports(root: Path, path: str, packages: set[str]) -> set[str]:
    """The source files of the modules of ``packages`` that the module at ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((root / path).read_text(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # (The project imports absolutely.) ``from package import module`` names a module,
            # ``from module import name`` a name in one.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] in packages and (source := _source_of(root, name)):
                found.add(source)
    return found


def _source_of(root: Path, module: str) -> str | None:
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def main(argv: Sequence[str] | None = None, hot_path: Build | None = None) -> int:
    """``build`` (fails loudly), ``ensure`` (builds if the build is missing or stale; a machine
    that cannot compile runs the source, and says so), ``remove``, ``status``."""
    command = list(sys.argv[1:] if argv is None else argv)
    hot_path = Build() if hot_path is None else hot_path
    if command == ["build"]:
        hot_path.build()
    elif command == ["ensure"]:
        if not hot_path.up_to_date():
            _build_or_run_interpreted(hot_path)
    elif command == ["remove"]:
        hot_path.remove()
    elif command == ["status"]:
        print("compiled:", " ".join(hot_path.compiled_modules()) or "none")
        print("changed since the build:", " ".join(hot_path.changed_sources()) or "none")
    else:
        print("usage: python -m engine.hot_path build|ensure|remove|status", file=sys.stderr)
        return 2
    return 0


def _build_or_run_interpreted(hot_path: Build) -> None:
    """``make run`` must start the engine on a machine without a C compiler too; the suite's
    ``test_the_suite_runs_the_build_make_asked_for`` still fails a build that ``make`` asked for
    and did not get. mypyc reports type errors, and distutils a failed compile, by exiting."""
    try:
        hot_path.build()
    except (Exception, SystemExit) as exc:
        hot_path.remove()
        print(
            f"engine.hot_path: the media hot path could not be compiled ({exc!r}), so it runs "
            "interpreted, at more CPU per leg: install a C compiler and the Python headers "
            "(Debian: gcc python3-dev) and run make again",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
