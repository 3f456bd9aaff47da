"""``media.blas``: the engine process limits BLAS to one thread (a fresh interpreter each)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import numpy as np
from media.blas import blas_threads, pin_blas_to_one_thread
before = blas_threads()
pin_blas_to_one_thread()
after = blas_threads()
a = np.ones((300, 80), dtype=np.float32)
assert (a @ np.ones((80, 16), dtype=np.float32) == 80).all()  # still computes
print(before, after)
"""


def test_pinning_leaves_one_blas_thread_whatever_the_default() -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    env["OPENBLAS_NUM_THREADS"] = "2"  # a pool of two even on a one-core runner
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    before, after = (int(word) for word in out.stdout.split())
    # OpenBLAS caps its pool at the cores it may run on.
    assert before == min(2, len(os.sched_getaffinity(0)))
    assert after == 1


ENGINE_SCRIPT = """
from media.blas import blas_threads
from engine.app import create_app
from engine.config import Settings
create_app(Settings(database_url="sqlite:///:memory:", secret_key="k" * 40))
print(blas_threads())
"""


def test_the_engine_pins_blas_when_its_app_is_made() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "1"
