"""Argument handling shared by every public function, written once.

* backend choice: CUDA arrays (``__cuda_array_interface__``, or ``__cuda_ndarray__`` for
  the simulator's device arrays) go to ``jitloss.cuda``, anything else to ``jitloss.cpu``;
* dtype policy: float32/float64 compute natively, float16 computes in float32 and is
  returned as float16, integers and bools become float64, everything else is a TypeError;
* axis normalisation and the ``(outer, classes, inner)`` view the kernels take
  (:class:`Rows`), without a transposed copy whenever the array is contiguous in some
  axis order with the reduced axes adjacent in it;
* ``out=`` checks, reduction names, scalar parameters, label checks.

Every user-facing error is raised here or in the public modules, before a kernel runs.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import NamedTuple

import numpy as np
from numpy.exceptions import AxisError

from .cpu._math import pairwise_sum

try:  # NumPy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - NumPy 1.25/1.26
    from numpy.core.numeric import normalize_axis_tuple

__all__ = [
    "AxisError",
    "OutDtypeError",
    "Rows",
    "label_error",
    "check_out",
    "check_reduction",
    "check_unit_interval",
    "check_nonnegative",
    "check_temperature",
    "float_inputs",
    "is_cuda_array",
    "normalize_axes",
]

REDUCTIONS = ("none", "mean", "sum")


class OutDtypeError(TypeError, ValueError):
    """``out=`` has the wrong dtype.

    A TypeError (as NumPy's casting errors are) and a ValueError (as DESIGN.md's "out= of
    the wrong shape or dtype" errors are), in the way ``numpy.exceptions.AxisError`` is both
    a ValueError and an IndexError.
    """


# --- backend ---------------------------------------------------------------------------


def is_cuda_array(obj) -> bool:
    """True for objects that live on a CUDA device (numba, CuPy, PyTorch CUDA, simulator)."""
    if type(obj) in _HOST_TYPES:  # a failed hasattr costs about a microsecond
        return False
    return hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__cuda_ndarray__")


_HOST_TYPES = frozenset([np.ndarray, list, tuple, float, int, bool, type(None)])


def any_cuda_array(*objs) -> bool:
    """True if any of ``objs`` is a CUDA array (``is_cuda_array``); a plain loop, not a
    generator in ``any()``, which cost 0.5 us of a 4.6 us small call."""
    for obj in objs:
        if type(obj) not in _HOST_TYPES and is_cuda_array(obj):
            return True
    return False


# --- dtypes ----------------------------------------------------------------------------

NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = NATIVE
_INT64 = np.dtype(np.int64)


def result_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype results come back in for an input of ``dtype`` (TypeError if unsupported)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if dtype.itemsize in (2, 4, 8):
            return np.dtype(dtype.type)  # native byte order
        raise TypeError(
            f"{name}: dtype {dtype} is not supported (float16, float32 and float64 are); "
            f"convert it with .astype(np.float64)"
        )
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{name}: expected real numbers, got an array of dtype {dtype}")


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 computes in float32; the native types in themselves."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def float_inputs(*pairs):
    """Coerce ``(value, name)`` pairs to arrays of one compute dtype.

    Returns ``(arrays, compute, result)``: the arrays (views of the inputs when no
    conversion is needed), the dtype the kernels run in and the dtype results come back
    in: the promotion of each input's result dtype (float16 and float32 give float32).
    """
    if len(pairs) == 1:  # the usual case, without the general machinery
        a = pairs[0][0]
        if type(a) is np.ndarray and (a.dtype == _F32 or a.dtype == _F64):
            return [a], a.dtype, a.dtype
    arrays = []
    results = []
    for value, name in pairs:
        a = np.asarray(value)
        results.append(result_dtype(a.dtype, name))
        arrays.append(a)
    result = np.result_type(*results) if len(results) > 1 else results[0]
    compute = compute_dtype(result)
    arrays = [a if a.dtype == compute else a.astype(compute) for a in arrays]
    return arrays, compute, result


# --- scalars ---------------------------------------------------------------------------


def _real(value, name: str) -> float:
    if type(value) is float or type(value) is int:  # skip the slow ABC check
        return float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_temperature(temperature) -> tuple[float, float]:
    """Check 0 < temperature < inf; return 1 / temperature as a float64 pair (hi, lo).

    hi + lo equals 1/T to about 2**-106: the kernels form (x - max) / T with it, so a
    temperature that is not a power of two costs no accuracy in exp((x - max) / T).
    """
    if type(temperature) is float and temperature == 1.0:  # the default, without the work
        return (1.0, 0.0)
    t = _real(temperature, "temperature")
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return _inverse(t)


@functools.lru_cache(maxsize=256)
def _inverse(t: float) -> tuple[float, float]:
    from fractions import Fraction  # imported here: it pulls in decimal, 25 ms at import

    hi = 1.0 / t
    return hi, float(Fraction(1) / Fraction(t) - Fraction(hi))


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0 (margins, z_loss)."""
    v = _real(value, name)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_unit_interval(value, name: str) -> float:
    """A real number in [0, 1] (label_smoothing)."""
    v = _real(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _plain_logits(x, target, axis) -> bool:
    # x an (N, C) C-contiguous float32/float64 ndarray with the classes along the last
    # axis, target a C-contiguous ndarray
    return (
        type(x) is np.ndarray and type(target) is np.ndarray and x.ndim == 2
        and type(axis) is int and (axis == -1 or axis == 1)
        and x.dtype in NATIVE and x.flags.c_contiguous and target.flags.c_contiguous
    )


def plain_index_rows(x, target, axis) -> bool:
    """True for the commonest call with class indices: ``x`` an (N, C) C-contiguous
    float32/float64 ndarray with the classes along the last axis, ``target`` a C-contiguous
    int64 ndarray of shape (N,).  Such calls may skip ``Rows`` and the label reshaping."""
    return (_plain_logits(x, target, axis) and target.dtype == _INT64
            and target.shape == x.shape[:1])


def plain_prob_rows(x, target, axis) -> bool:
    """plain_index_rows for probability targets: ``target`` a C-contiguous ndarray of x's
    shape and dtype."""
    return (_plain_logits(x, target, axis) and target.dtype == x.dtype
            and target.shape == x.shape)


def plain_out(out, a, *apart) -> bool:
    """True if a kernel may write straight into ``out`` for the C-contiguous ndarray ``a``:
    a writeable C-contiguous ndarray of a's shape and dtype, ``a`` itself or apart from it,
    and apart from every array of ``apart`` the kernel also reads (labels, targets; None
    skipped) (the small-call paths; anything else goes through ``check_out`` and a view)."""
    if not (
        type(out) is np.ndarray and out.flags.writeable and out.flags.c_contiguous
        and type(a) is np.ndarray and out.shape == a.shape and out.dtype == a.dtype
        and (out is a or not np.may_share_memory(out, a))
    ):
        return False
    for b in apart:  # a loop, not any(): a generator costs ~0.2 us of a ~5 us call
        if b is not None and np.may_share_memory(out, b):
            return False
    return True


def label_error(labels: np.ndarray, flat: int, classes: int, ignore_index, name="target"):
    """The ValueError for the label at C-order flat index ``flat`` of ``labels``."""
    pos = np.unravel_index(flat, labels.shape) if labels.ndim else ()
    return ValueError(
        f"{name} holds label {int(labels[pos])} at position {tuple(int(p) for p in pos)}, "
        f"outside [0, {classes})"
        + (f" and not ignore_index={ignore_index}" if ignore_index is not None else "")
    )


def reduce_losses(per_sample: np.ndarray, reduction: str, denominator: float, result):
    """The returned loss: the per-sample array ("none"), or a scalar of the result dtype
    ("sum"; "mean" divides by ``denominator``, NaN when it is 0).  Sums add the float64
    per-sample losses in C order, pairwise as NumPy does (up to 4096 of them in
    ``cpu._math.pairwise_sum``: ``.sum()``'s bits, about 1 us sooner)."""
    if reduction == "none":
        return per_sample.astype(result)
    flat = per_sample.reshape(-1)
    # NumPy's own loop is the faster one for long arrays (2x at a million), the same bits
    total = pairwise_sum(flat) if flat.size <= 4096 else float(np.add.reduce(flat))
    return reduce_total(total, reduction, denominator, result)


def reduce_total(total: float, reduction: str, denominator: float, result):
    """reduce_losses from the sum of the per-sample losses ("mean" or "sum")."""
    if reduction == "mean":
        total = total / denominator if denominator != 0 else float("nan")
    return result.type(total)


def upstream_scale(dloss, reduction: str, denominator: float, sample_shape: tuple):
    """The gradient's per-sample scale: ``dloss`` (default 1), divided by "mean"'s
    denominator (0 when the denominator is 0).  A float, or for "none" with ``dloss`` a
    float64 array of ``sample_shape``."""
    if reduction == "none":
        if dloss is None:
            return 1.0
        d = np.asarray(dloss, dtype=np.float64)
        try:
            return np.broadcast_to(d, sample_shape)
        except ValueError:
            raise ValueError(
                f"dloss of shape {d.shape} does not broadcast to the per-sample loss shape "
                f"{sample_shape}"
            ) from None
    if dloss is None:
        k = 1.0
    else:
        d = np.asarray(dloss, dtype=np.float64)
        if d.size != 1:
            raise ValueError(
                f"dloss must be a scalar for reduction={reduction!r}, got shape {d.shape}"
            )
        k = float(d.reshape(()))
    if reduction == "mean":
        k = k / denominator if denominator != 0 else 0.0
    return k


# --- axes and the (outer, classes, inner) view ----------------------------------------------


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (int, tuple of ints or None) as a sorted tuple of non-negative axes."""
    if type(axis) is int and -ndim <= axis < ndim:
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        for ax in axis:
            _axis_int(ax)
        return tuple(sorted(normalize_axis_tuple(tuple(axis), ndim, "axis")))
    return normalize_axis_tuple(_axis_int(axis), ndim, "axis")


def _axis_int(ax) -> int:
    try:
        return operator.index(ax)
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {ax!r}") from None


class Rows(NamedTuple):
    """How an array of ``shape`` is seen by the kernels: ``(outer, classes, inner)``.

    ``order`` lists every axis from the outermost in memory to the innermost: the kept
    axes before the reduced ones (``outer``), the reduced ones (``classes``), the kept
    ones after (``inner``).  An array laid out C-contiguously in that order is seen
    without a copy (:meth:`view3`); outputs are allocated in that order, so they have the
    input's memory layout (NumPy's ``order='K'``).
    """

    shape: tuple
    axes: tuple
    order: tuple
    outer: int
    classes: int
    inner: int

    @classmethod
    def of(cls, a: np.ndarray, axes: tuple, rows_only: bool = False) -> Rows:
        """The view of ``a`` reduced over ``axes``; ``rows_only`` asks for inner == 1 (the
        reduced axes last in memory), which costs a copy when ``a`` is laid out otherwise."""
        shape = a.shape
        nd = len(shape)
        if rows_only:
            last = tuple(range(nd - len(axes), nd))
            if axes == last and _c_contiguous(a):
                return cls.of(a, axes)
            rest = [ax for ax in range(nd) if ax not in axes]
            return cls(shape, tuple(axes), tuple(rest) + tuple(axes),
                       math.prod(shape[ax] for ax in rest), math.prod(shape[ax] for ax in axes), 1)
        if _c_contiguous(a) and (not axes or axes[-1] - axes[0] == len(axes) - 1):
            # the common case, cheaply: C order, reduced axes adjacent
            first = axes[0] if axes else nd
            end = first + len(axes)
            return cls(shape, axes, tuple(range(nd)), math.prod(shape[:first]),
                       math.prod(shape[first:end]), math.prod(shape[end:]))
        mem = _memory_order(a) if a.size else None
        if mem is not None:
            pos = [i for i, ax in enumerate(mem) if ax in axes and shape[ax] > 1]
            if pos and pos != list(range(pos[0], pos[0] + len(pos))):
                mem = None  # reduced axes apart in memory: a copy puts them together
        if mem is None:
            order = tuple(ax for ax in range(nd) if ax not in axes) + tuple(axes)
            first = nd - len(axes)
        else:
            # size-1 axes come first in `mem` and may go anywhere; the reduced ones join
            # the others in the block the reduced axes form in memory
            cut = pos[0] if pos else len(mem)
            before = [ax for ax in mem[:cut] if ax not in axes]
            after = [ax for ax in mem[cut:] if ax not in axes]
            order = tuple(before) + tuple(ax for ax in mem if ax in axes) + tuple(after)
            first = len(before)
        return cls(
            shape,
            tuple(axes),
            order,
            math.prod(shape[ax] for ax in order[:first]),
            math.prod(shape[ax] for ax in axes),
            math.prod(shape[ax] for ax in order[first + len(axes) :]),
        )

    @property
    def shape3(self) -> tuple:
        return (self.outer, self.classes, self.inner)

    def fits(self, a: np.ndarray) -> bool:
        """True if ``a`` (of this shape) is C-contiguous in this axis order."""
        step = a.dtype.itemsize
        for ax in reversed(self.order):
            n = self.shape[ax]
            if n > 1:
                if a.strides[ax] != step:
                    return False
                step *= n
        return True

    def view3(self, a: np.ndarray) -> np.ndarray | None:
        """The ``(outer, classes, inner)`` view of ``a``, or None if its layout differs.

        ``a.transpose(order)`` is C-contiguous when :meth:`fits`, and NumPy reshapes a
        C-contiguous array without copying.
        """
        if a.shape != self.shape:
            return None
        if _c_contiguous(a) and self._identity():
            return a.reshape(self.shape3)
        if not self.fits(a):
            return None
        return a.transpose(self.order).reshape(self.shape3)

    def take3(self, a: np.ndarray) -> np.ndarray:
        """The ``(outer, classes, inner)`` view of an input ``a``, or a copy in this order
        when ``a`` is laid out otherwise.  (Not made read-only: setting the flag costs half
        a microsecond a call; a caller's read-only array compiles its own signature once.)
        """
        v = self.view3(a)
        if v is None:
            v = np.ascontiguousarray(a.transpose(self.order)).reshape(self.shape3)
        return v

    def _identity(self) -> bool:
        return self.order == tuple(range(len(self.shape)))

    def restore(self, a3: np.ndarray) -> np.ndarray:
        """The array of the caller's shape whose ``(outer, classes, inner)`` view is a3."""
        if self._identity():
            return a3.reshape(self.shape)
        return a3.reshape([self.shape[ax] for ax in self.order]).transpose(
            np.argsort(self.order)
        )

    def _kept(self) -> list:
        return [ax for ax in self.order if ax not in self.axes]

    def reduced_shape(self, keepdims: bool) -> tuple:
        if not keepdims and len(self.axes) == 1:
            ax = self.axes[0]
            return self.shape[:ax] + self.shape[ax + 1 :]
        if keepdims:
            return tuple(1 if ax in self.axes else n for ax, n in enumerate(self.shape))
        return tuple(n for ax, n in enumerate(self.shape) if ax not in self.axes)

    def view2(self, r: np.ndarray, keepdims: bool) -> np.ndarray | None:
        """The ``(outer, inner)`` view of a reduction result ``r``, or None."""
        if r.shape != self.reduced_shape(keepdims):
            return None
        if _c_contiguous(r) and self._identity():
            return r.reshape(self.outer, self.inner)
        kept = self._kept()  # memory order; r has them in the caller's (sorted) order
        t = np.squeeze(r, axis=self.axes) if keepdims else r
        t = t.transpose([sorted(kept).index(ax) for ax in kept])
        return t.reshape(self.outer, self.inner) if _c_contiguous(t) else None

    def take2(self, r: np.ndarray) -> np.ndarray:
        """The ``(outer, inner)`` view of a per-sample array shaped like a reduction result
        (no keepdims), or a copy in the kept axes' memory order."""
        v = self.view2(r, False)
        if v is None:
            kept = self._kept()
            t = r.transpose([sorted(kept).index(ax) for ax in kept])
            v = np.ascontiguousarray(t).reshape(self.outer, self.inner)
        return v

    def restore2(self, r2: np.ndarray, keepdims: bool) -> np.ndarray:
        """The reduction result of the caller's shape whose ``(outer, inner)`` view is r2."""
        if self._identity():  # the kept axes are in memory order already
            return r2.reshape(self.reduced_shape(keepdims))
        kept = self._kept()
        t = r2.reshape([self.shape[ax] for ax in kept]).transpose(np.argsort(kept))
        return np.expand_dims(t, self.axes) if keepdims else t


def _c_contiguous(a) -> bool:
    """C-contiguity of a NumPy array or a CUDA device array (numba's, or the simulator's)."""
    flags = getattr(a, "flags", None)
    if flags is not None and not callable(flags):
        return bool(flags["C_CONTIGUOUS"])
    return bool(a.is_c_contiguous())


def _memory_order(a) -> tuple | None:
    """Axes from outermost to innermost if ``a`` is C-contiguous in some axis order."""
    axes = sorted(range(a.ndim), key=lambda ax: -a.strides[ax] if a.shape[ax] > 1 else 0)
    big = [ax for ax in axes if a.shape[ax] > 1]
    step = a.dtype.itemsize
    for ax in reversed(big):
        if a.strides[ax] != step:
            return None
        step *= a.shape[ax]
    small = [ax for ax in range(a.ndim) if a.shape[ax] <= 1]
    return tuple(small + big)


# --- out= ----------------------------------------------------------------------------------


def check_out(out, shape: tuple, dtype: np.dtype, name: str = "out") -> np.ndarray:
    """Validate a caller's output array: an ndarray of ``shape`` and ``dtype``, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise OutDtypeError(f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def writes_through(out: np.ndarray, *inputs: np.ndarray, apart=()) -> bool:
    """True if a kernel may write ``out`` directly while reading ``inputs`` and ``apart``.

    Safe when ``out`` shares no memory with an input, or is exactly that input (the
    kernels read an element before they write the same element, and nothing else), and
    shares none with any array of ``apart`` (None skipped): those the kernels read in
    another pattern (labels, weights, targets, upstream gradients), which a write over
    them would corrupt, a label even into an index out of bounds.
    """
    if any(b is not None and np.may_share_memory(out, b) for b in apart):
        return False
    for a in inputs:
        if a is out:  # in place: the same array, so the same memory and layout
            continue
        if np.may_share_memory(out, a):
            same = (
                out.__array_interface__["data"][0] == a.__array_interface__["data"][0]
                and out.strides == a.strides
                and out.shape == a.shape
                and out.dtype == a.dtype
            )
            if not same:
                return False
    return True
