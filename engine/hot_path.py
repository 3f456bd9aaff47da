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

A build records the digest of every source it compiled (``media/hot_path__mypyc-<tag>.json``);
``Build.stale_modules`` names those compiled modules whose source has changed since, which would run
the old code: ``callbridge serve`` logs them, and the test suite refuses to start
(tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["GROUP", "HOT_PATH", "ROOT", "Build", "main"]

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


@dataclass(frozen=True)
class Build:
    """The compiled form of ``paths`` (from ``root``), for this interpreter."""

    root: Path = ROOT
    paths: tuple[str, ...] = HOT_PATH
    group: str = GROUP

    def compiled_modules(self) -> list[str]:
        """The modules this interpreter would import compiled (their extension exists)."""
        return [_module_name(path) for path in self.paths if self._extension(path).exists()]

    def stale_modules(self) -> list[str]:
        """Compiled modules whose source differs from what was compiled (or with no record)."""
        try:
            built: dict[str, str] = json.loads(self._manifest().read_text())
        except (OSError, ValueError):
            built = {}
        return [
            _module_name(path)
            for path in self.paths
            if self._extension(path).exists() and built.get(path) != self._digest(path)
        ]

    def up_to_date(self) -> bool:
        """Every module is compiled, from its source as it is now."""
        return len(self.compiled_modules()) == len(self.paths) and not self.stale_modules()

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

        digests = {path: self._digest(path) for path in self.paths}
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
        return self._shared_library().with_name(
            f"{self._shared_library().name.removesuffix(SUFFIX)}-{sys.implementation.cache_tag}.json"
        )

    def _digest(self, path: str) -> str:
        return hashlib.sha256((self.root / path).read_bytes()).hexdigest()


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    hot_path = Build()
    if command == ["build"]:
        hot_path.build()
    elif command == ["ensure"]:
        if not hot_path.up_to_date():
            hot_path.build()
    elif command == ["remove"]:
        hot_path.remove()
    elif command == ["status"]:
        print("compiled:", " ".join(hot_path.compiled_modules()) or "none")
        print("stale:", " ".join(hot_path.stale_modules()) or "none")
    else:
        print("usage: python -m engine.hot_path build|ensure|remove|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
