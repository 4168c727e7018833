"""CPU backend: numba.njit kernels, one module per family, and the launch policy they share.

Each family module holds launchers (plain Python: allocate outputs, pick serial or
parallel, call the kernel) and kernels (``njit(parallel=True, cache=True)`` loops that
take C-contiguous ``(outer, classes)`` rows or ``(outer, classes, inner)`` lanes).
Every kernel takes a ``parallel`` flag: its serial loop and its ``prange`` loop call
the same row function, so the two give bitwise-identical results.
"""

from __future__ import annotations

import threading

import numba

# Below this many elements a kernel runs its serial loop: starting the thread pool costs
# more than the work (measured: about 10 us per parallel launch on 2 cores).
PARALLEL_MIN_ELEMENTS = 1 << 15
# Lanes processed together in the strided layout: sized so that one block of
# classes x lanes stays in a 256 KiB share of L2 between its passes.
LANE_BYTES = 1 << 18

_parallel_lock = threading.Lock()


def lane_width(classes: int, itemsize: int) -> int:
    """Number of inner lanes a strided kernel processes per task (a multiple of 8)."""
    w = LANE_BYTES // max(1, classes * itemsize)
    return int(min(512, max(8, w - w % 8)))


class launch:
    """Context manager deciding whether a kernel may use its parallel loop.

    ``with launch(size) as parallel: kernel(..., parallel)``.  Parallel only for large
    inputs, with more than one numba thread, and while no other Python thread is inside
    a parallel kernel (numba's workqueue layer is not thread-safe, and two pools on two
    cores only contend); a call that finds the pool busy runs serially, with the same
    result bit for bit.
    """

    __slots__ = ("_held", "_size")

    def __init__(self, size: int):
        self._size = size
        self._held = False

    def __enter__(self) -> bool:
        if self._size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1:
            self._held = _parallel_lock.acquire(blocking=False)
        return self._held

    def __exit__(self, *exc) -> None:
        if self._held:
            _parallel_lock.release()
            self._held = False
