"""Small helpers of the CUDA tests: host <-> device."""

from __future__ import annotations

import numpy as np


def dev(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def is_device(a) -> bool:
    return hasattr(a, "copy_to_host")
