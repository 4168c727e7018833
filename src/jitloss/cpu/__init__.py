"""CPU backend: numba.njit kernels, one module per family, and the launch policy they share.

Each family module holds launchers (plain Python: allocate outputs, pick serial or
parallel, call the kernel) and kernels (``njit(parallel=True, cache=True)`` loops that
take C-contiguous ``(outer, classes)`` rows or ``(outer, classes, inner)`` lanes).
Every kernel comes as a pair, ``_name`` (``prange``) and ``_name_serial`` (``range``),
whose loops call the same row function, so the two give bitwise-identical results; the
serial twin spares small inputs the parallel entry cost (about 0.7 us) and thread start.
"""

from __future__ import annotations

import threading

import numba

# Below this many elements a kernel runs its serial loop: starting the thread pool costs
# more than the work (measured: about 10 us per parallel launch on 2 cores).
PARALLEL_MIN_ELEMENTS = 1 << 15
# Lanes processed together in the strided layout: at most 2 MiB of classes x lanes per
# task, and at most 2 KiB of one class row, in whole cache lines.  Measured along axis 0 of
# 1000 x 4096 (medians, ratio to np.copyto): float32 softmax 2.1x at 256 lanes (1 KiB),
# 1.9x at 512 (2 KiB), 1.9-2.1x at 1024; the backward 1.5x, 1.15x, 1.1x; float64 softmax
# 2.5x at 256 lanes (2 KiB), 2.7-2.9x at 512.  Longer pieces of a row amortise the loop
# over the rows and let the hardware prefetchers follow.
LANE_BYTES = 2 << 20
LANE_ROW_BYTES = 2048

_parallel_lock = threading.Lock()


def lane_width(classes: int, itemsize: int) -> int:
    """Number of inner lanes a strided kernel processes per task (whole cache lines, at
    least 64).  It depends on the shape and dtype only, never on the thread count: the
    blocks, and so the results, are the same however many threads run them."""
    w = min(LANE_BYTES // max(1, classes * itemsize), LANE_ROW_BYTES // itemsize)
    return int(max(64, w - w % max(1, 64 // itemsize)))


def run(serial_kernel, parallel_kernel, size: int, *args):
    """Call ``parallel_kernel(*args)`` for large inputs, else ``serial_kernel(*args)``.

    The two kernels are twins: the same row function under a ``prange`` or a ``range``
    loop, so they give bitwise-identical results.  The parallel one runs only for large
    inputs, with more than one numba thread, and while no other Python thread is inside
    a parallel kernel (numba's workqueue layer is not thread-safe, and two thread pools on
    the same cores only contend); a call that finds the pool busy runs serially.
    """
    if size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1:
        if _parallel_lock.acquire(blocking=False):
            try:
                return parallel_kernel(*args)
            finally:
                _parallel_lock.release()
    return serial_kernel(*args)
