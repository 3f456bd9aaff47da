"""Run every benchmark module: ``python -m benchmarks [name ...]``.

Each ``benchmarks/bench_*.py`` exposes ``main(argv: list[str]) -> None`` and prints its own
table; ``make bench`` runs them all, and BENCHMARKS.md records the figures with this command.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def main(argv: list[str]) -> None:
    wanted = set(argv)
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"== benchmarks.{name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main(sys.argv[1:])
