"""The console's files, shipped in the package (``static/``) and served from memory.

Only the files named here are served, each with its type; nothing is looked up on disk per
request, so no path a client sends can reach another file. Vendored files are listed in
``static/vendor/README.md`` with their version and source.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["PAGES", "SERVED", "Asset", "ConsoleAssets"]

#: Files the browser fetches by name under /console/static/, with their content types.
SERVED = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "vendor/htm-preact-standalone.module.js": "text/javascript",
}
#: The pages, filled in by ``engine.console.pages``.
PAGES = ("console.html", "signin.html")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


class ConsoleAssets:
    def __init__(self, files: dict[str, Asset]) -> None:
        self._files = files

    @classmethod
    def load(cls) -> ConsoleAssets:
        static = resources.files("engine.console") / "static"
        files = {
            name: Asset(static.joinpath(name).read_bytes(), kind) for name, kind in SERVED.items()
        }
        for page in PAGES:
            files[page] = Asset(static.joinpath(page).read_bytes(), "text/html")
        return cls(files)

    def get(self, name: str) -> Asset | None:
        return self._files.get(name)

    def served(self, name: str) -> Asset | None:
        """A file the browser may fetch by name (not a page)."""
        return self._files.get(name) if name in SERVED else None
