"""One BLAS thread in the engine process: the 20 ms tick must not wake a thread pool.

numpy hands matrix products to OpenBLAS: the weighted rooms' batched ``matmul`` and the DTMF
detector's Goertzel product (``media.dtmf``: (2 x legs, 80) @ (80, 16) in float32, every tick for
every leg with detection on). OpenBLAS parallelises a product over its own pool of one thread
per core. Inside a 20 ms tick those products are small, and handing them to the pool costs more
than it saves: its threads spin, contend with the event loop and the websockets on the same
cores, and the tick's duration turns noisy (at 1,000 legs, a median of 7.9-10.9 ms with the
default pool against 2.0-2.4 ms with one thread, issue 13).

``pin_blas_to_one_thread`` limits every BLAS library loaded in the process to one thread, for the
life of the process, with ``threadpoolctl`` (which finds OpenBLAS, MKL or BLIS whatever wheel
numpy came with, where the ``OPENBLAS_NUM_THREADS`` variable only works if set before numpy is
imported). The composition root calls it once at start.
"""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

__all__ = ["blas_threads", "pin_blas_to_one_thread"]


def pin_blas_to_one_thread() -> None:
    """Limit every BLAS library in this process to one thread, from now on."""
    threadpool_limits(limits=1, user_api="blas")


def blas_threads() -> int:
    """The most threads any loaded BLAS library may use now (1 once pinned; 0 if none loaded)."""
    counts = [
        pool.get("num_threads") for pool in threadpool_info() if pool.get("user_api") == "blas"
    ]
    return max((count for count in counts if isinstance(count, int)), default=0)
