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
THREADS_1D = 256  # threads per block of the elementwise and fixed-order reduction kernels

__all__ = ["as_device", "grid1", "is_available", "launch_config"]


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


def grid1(n: int):
    """(blocks, threads) covering n elements, one thread each."""
    threads = max(1, min(THREADS_1D, n))
    return max(1, (n + threads - 1) // threads), threads


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


# --- device arrays: dtype policy and layout ------------------------------------------------


@cuda.jit
def _cast_kernel(src, dst):
    i = cuda.grid(1)
    if i < src.shape[0]:
        dst[i] = src[i]


def contiguous(a):
    """A C-contiguous device copy of ``a`` (a view of it if it already is one).

    A device array that is contiguous in no axis order (a strided slice) takes a trip
    through the host: correct, not fast; such inputs are rare.
    """
    from .._args import _c_contiguous

    if _c_contiguous(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a.copy_to_host()))


def cast(a, dtype):
    """A C-contiguous device copy of ``a`` in ``dtype`` (float16 <-> float32, ints -> float64)."""
    a = contiguous(a)
    out = cuda.device_array(a.shape, dtype)
    n = a.size
    if n:
        flat_in, flat_out = a.reshape(n), out.reshape(n)
        _cast_kernel[grid1(n)](flat_in, flat_out)
    return out


def device_inputs(*pairs):
    """(device arrays in the compute dtype, compute dtype, result dtype), as on the CPU."""
    from .._args import compute_dtype, result_dtype

    arrays = [as_device(value, name) for value, name in pairs]
    results = [result_dtype(np.dtype(a.dtype), name) for a, (_, name) in zip(arrays, pairs)]
    result = np.result_type(*results) if len(results) > 1 else results[0]
    compute = compute_dtype(result)
    arrays = [a if np.dtype(a.dtype) == compute else cast(a, compute) for a in arrays]
    return arrays, compute, result


def take3(rows, a):
    """The (outer, classes, inner) device view of ``a``, or a copy laid out for it."""
    v = rows.view3(a)
    if v is not None:
        return v
    host = np.ascontiguousarray(a.copy_to_host().transpose(rows.order)).reshape(rows.shape3)
    return cuda.to_device(host)


def take2(rows, a):
    """The (outer, inner) device view of a per-sample array, or a copy laid out for it."""
    v = rows.view2(a, False)
    if v is not None:
        return v
    kept = rows._kept()
    host = a.copy_to_host().transpose([sorted(kept).index(ax) for ax in kept])
    return cuda.to_device(np.ascontiguousarray(host).reshape(rows.outer, rows.inner))


def restore(rows, a3, result):
    """The caller-shaped result from an (outer, classes, inner) device array."""
    out = a3.reshape(*[rows.shape[ax] for ax in rows.order]).transpose(
        tuple(int(k) for k in np.argsort(rows.order))
    )
    return out if np.dtype(out.dtype) == result else cast(out, result)


def restore2(rows, a2, keepdims, result):
    """The caller-shaped reduction result from an (outer, inner) device array."""
    kept = rows._kept()
    t = a2.reshape(*[rows.shape[ax] for ax in kept]) if kept else a2.reshape(())
    if kept:
        t = t.transpose(tuple(int(k) for k in np.argsort(kept)))
    t = contiguous(t) if keepdims else t
    if keepdims:
        t = t.reshape(*rows.reduced_shape(True))
    return t if np.dtype(t.dtype) == result else cast(t, result)


def check_device_out(out, shape, dtype, name="out"):
    """A caller's device output array: right shape and dtype (ValueError / OutDtypeError)."""
    from .._args import OutDtypeError

    if not (hasattr(out, "__cuda_array_interface__") or hasattr(out, "__cuda_ndarray__")):
        raise TypeError(f"{name} must be a CUDA array when the inputs are, got {type(out)}")
    out = as_device(out, name)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if np.dtype(out.dtype) != np.dtype(dtype):
        raise OutDtypeError(f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    return out


def copy_into(out, src):
    """out[...] = src for device arrays of one shape (any layouts)."""
    if np.dtype(src.dtype) != np.dtype(out.dtype):
        src = cast(src, np.dtype(out.dtype))
    if rows_match(out, src):
        out.copy_to_device(src)
    else:
        out.copy_to_device(np.ascontiguousarray(src.copy_to_host()).astype(out.dtype))


def _byte_span(a):
    """(first byte, one past the last byte) of a device array's elements; (p, p) if empty."""
    if SIM:  # the simulator's device arrays wrap a NumPy array
        ptr = a._ary.__array_interface__["data"][0]
    else:
        ptr = a.__cuda_array_interface__["data"][0]
    shape, strides = tuple(a.shape), tuple(a.strides)
    if 0 in shape:
        return ptr, ptr
    lo = ptr + sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    hi = ptr + sum((n - 1) * s for n, s in zip(shape, strides) if s > 0)
    return lo, hi + np.dtype(a.dtype).itemsize


def writes_through(out, *inputs, apart=()) -> bool:
    """True if a kernel may write the device array ``out`` directly while reading
    ``inputs`` and ``apart``: the twin of ``jitloss._args.writes_through``, on byte ranges.

    ``out`` may be exactly an input (the kernels read an element before they write the
    same element, and nothing else) and must not overlap one otherwise, nor any array of
    ``apart`` (labels, weights, targets, dloss; None skipped).
    """
    span = _byte_span(out)

    def overlaps(other):  # two byte spans, neither empty, that share a byte
        return other[0] < span[1] and span[0] < other[1] and other[0] < other[1] \
            and span[0] < span[1]

    if any(a is not None and overlaps(_byte_span(a)) for a in apart):
        return False
    for a in inputs:
        a_span = _byte_span(a)
        if overlaps(a_span) and not (
            a_span == span and rows_match(a, out) and np.dtype(a.dtype) == np.dtype(out.dtype)
        ):
            return False
    return True


def rows_match(a, b) -> bool:
    return tuple(a.strides) == tuple(b.strides) and tuple(a.shape) == tuple(b.shape)
