"""CUDA tests: on a GPU, or under numba's simulator (NUMBA_ENABLE_CUDASIM=1); skipped
otherwise.  Under the simulator the launch parameters are patched small so that tiny
inputs span several warps, groups and blocks (and the runs stay short)."""

from __future__ import annotations

import numba
import pytest

SIM = bool(numba.config.ENABLE_CUDASIM)


def _have_device() -> bool:
    if SIM:
        return True
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - depends on the machine
        return False


if not _have_device():
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True, scope="session")
def small_launches():
    import jitloss.cuda as jc

    with pytest.MonkeyPatch.context() as mp:
        if SIM:
            mp.setattr(jc, "WARP", 4)
            mp.setattr(jc, "ROWS_PER_BLOCK", 2)
            mp.setattr(jc, "THREADS", 8)
            mp.setattr(jc, "WARP_MAX_CLASSES", 8)
            mp.setattr(jc, "THREADS_1D", 8)
        else:  # pragma: no cover - on a GPU: small blocks, real warps
            mp.setattr(jc, "ROWS_PER_BLOCK", 2)
            mp.setattr(jc, "THREADS", 64)
            mp.setattr(jc, "WARP_MAX_CLASSES", 64)
        yield

