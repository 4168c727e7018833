"""CUDA backend: numba.cuda kernels, module for module and name for name the twins of
``jitloss.cpu``.  Imported lazily by the public modules (importing numba.cuda is slow).

Layout and launch policy, shared by every family:

* The data is seen as ``(outer, classes, inner)`` like on the CPU; a *row* is the
  ``classes`` values of one ``(o, i)`` pair, element ``j`` at ``x3[o, j, i]`` (coalesced when
  ``inner == 1``).
* A *group* of threads handles one row: a warp (``WARP`` threads, ``ROWS_PER_BLOCK`` rows
  per block) when ``classes <= WARP_MAX_CLASSES``, a whole block of ``THREADS`` threads
  otherwise.  Group reductions live in ``cuda/_reduce.py``.
* Per-row losses go to a float64 device array, reduced by one block in a fixed order: no
  float atomics, results identical from run to run.
* Label errors are flagged on the device (an ``atomic.min`` on the first bad position) and
  raised by the launcher, which reads the flag; the context stays usable.

Tests patch ``THREADS``, ``ROWS_PER_BLOCK``, ``WARP_MAX_CLASSES`` and, under the simulator,
``WARP`` small, so that tiny inputs span several groups and blocks.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda

SIM = bool(numba.config.ENABLE_CUDASIM)
WARP = 32  # threads per warp group (hardware: 32; the simulator's tests make it smaller)
ROWS_PER_BLOCK = 8  # warp groups (rows) per block for short rows
THREADS = 256  # threads per block (and per row) for long rows
WARP_MAX_CLASSES = 1024  # rows up to this long take one warp each
MAX_THREADS = 1024  # size of the shared scratch every kernel declares
SHARED_ROW_BYTES = 32 * 1024  # long rows up to this size are staged in shared memory

__all__ = ["as_device", "is_available", "launch_config"]


def is_available() -> bool:
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - depends on the machine
        return False


def as_device(obj, name: str):
    """A numba device array viewing ``obj`` (no copy), or a copy of a host array.

    CUDA arrays (``__cuda_array_interface__``: numba, CuPy, PyTorch) are viewed in place;
    under the simulator its own device arrays pass as they are.  Host arrays (e.g. a
    ``weight`` beside device logits) are copied to the device once.
    """
    if hasattr(obj, "__cuda_ndarray__") or (SIM and hasattr(obj, "copy_to_host")):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        typestr = obj.__cuda_array_interface__.get("typestr", "")
        if typestr[1:2] == "V" or "bfloat16" in str(getattr(obj, "dtype", "")):
            raise TypeError(
                f"{name}: bfloat16 is not supported on the device by numba-cuda here; "
                f"convert with .float() or .astype(float32)"
            )
        return cuda.as_cuda_array(obj)
    return cuda.to_device(np.ascontiguousarray(obj))


def launch_config(rows: int, classes: int):
    """(blocks, threads per block, threads per row) for ``rows`` rows of ``classes``."""
    if classes <= WARP_MAX_CLASSES:
        group = WARP
        threads = WARP * ROWS_PER_BLOCK
        blocks = (rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    else:
        group = threads = THREADS
        blocks = rows
    return max(blocks, 1), threads, group
