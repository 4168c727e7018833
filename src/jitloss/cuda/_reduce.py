"""Group reductions for the CUDA kernels: sum, max (NaN ignored) and min over the threads
that share a row.

A group is a warp (``warp`` threads) or a whole block (a multiple of ``warp``).  Both
implementations reduce in the same order, a butterfly within each warp (lane offsets
``warp/2 ... 1``) and then a butterfly over the warps' totals, so they give the same
bits, and every thread of the group gets the result:

* hardware: ``shfl_xor_sync`` within the warp, shared memory across warps;
* simulator (``NUMBA_ENABLE_CUDASIM=1``, which has no warp shuffles): the same exchanges
  through the shared ``scratch`` array, with ``syncthreads`` between steps.

Every thread of the block must call a reduction (no thread may return early): the
kernels carry a ``valid`` flag for threads without a row.
"""

from __future__ import annotations

from numba import cuda

from . import SIM

SUM, MAX, MIN = 0, 1, 2

__all__ = ["MAX", "MIN", "SUM", "group_reduce"]


@cuda.jit(device=True)
def _combine(a, b, op):
    if op == SUM:
        return a + b
    if op == MAX:
        return b if b > a else a  # a NaN b is never taken: NaN-ignoring like llvm.maxnum
    return b if b < a else a


@cuda.jit(device=True)
def _across_warps(v, scratch, tid, group, warp, op):
    """Butterfly over the warps of a group whose lanes each hold their warp's total."""
    nw = group // warp
    if nw > 1:
        base = (tid // group) * group
        widx = (tid - base) // warp
        scratch[tid] = v
        cuda.syncthreads()
        off = nw // 2
        while off >= 1:
            other = scratch[base + (widx ^ off) * warp]
            cuda.syncthreads()
            v = _combine(v, other, op)
            scratch[tid] = v
            cuda.syncthreads()
            off //= 2
    return v


if SIM:

    @cuda.jit(device=True)
    def group_reduce(v, scratch, tid, group, warp, op):
        """The group's reduction of v (op: SUM, MAX or MIN), in every thread."""
        wbase = (tid // warp) * warp
        wl = tid - wbase
        off = warp // 2
        while off >= 1:
            scratch[tid] = v
            cuda.syncthreads()
            other = scratch[wbase + (wl ^ off)]
            cuda.syncthreads()
            v = _combine(v, other, op)
            off //= 2
        return _across_warps(v, scratch, tid, group, warp, op)

else:  # pragma: no cover - needs a GPU

    @cuda.jit(device=True)
    def group_reduce(v, scratch, tid, group, warp, op):
        """The group's reduction of v (op: SUM, MAX or MIN), in every thread."""
        off = warp // 2
        while off >= 1:
            other = cuda.shfl_xor_sync(0xFFFFFFFF, v, off)
            v = _combine(v, other, op)
            off //= 2
        return _across_warps(v, scratch, tid, group, warp, op)
