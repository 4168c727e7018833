"""CUDA softmax family: kernels, launchers (the twins of ``jitloss.cpu.softmax``) and the
device side of the public functions.

One group of threads per row (see ``jitloss.cuda``): the row's maximum and sum of
exponentials (the terms equal to the maximum counted apart, so the logarithm of the sum is
a ``log1p`` of the rest), then a pass that writes. Short rows (one warp each) are read
from global memory (L1 keeps them); a long row (one block) is staged in shared memory when
it fits, and otherwise read once with an online maximum and sum (``row_stats``).
Exponentials of ``(x - m) / T`` are formed from the exact difference (TwoSum) and the
exact product error (fma), as on the CPU. Sums accumulate in float64.
"""

from __future__ import annotations

import functools
import math
import types

import numba
import numpy as np
from numba import cuda, float64

from .. import _args
from .. import _formulas as formulas
from . import (
    MAX_THREADS,
    check_device_out,
    copy_into,
    device_inputs,
    grid1,
    launch_config,
    restore,
    restore2,
    take3,
    writes_through,
)
from ._reduce import MAX, SUM, group_reduce

# --- device helpers ---------------------------------------------------------------------


@cuda.jit(device=True)
def exp_diff(x, m, s_hi, s_lo):
    # exp((x - m) (s_hi + s_lo)) with x - m = hi + lo exactly (TwoSum) and the product's
    # rounding error recovered by an fma: exp(a + c) = exp(a) (1 + c) for the tiny c
    hi = x - m
    a = hi * s_hi
    e = math.exp(a)
    if not math.isfinite(hi):  # x = -inf gives 0, x = NaN gives NaN
        return e
    z = hi - x
    lo = (x - (hi - z)) + (-m - z)
    c = cuda.fma(hi, s_hi, -a) + (hi * s_lo + lo * s_hi)
    return cuda.fma(e, c, e)


@cuda.jit(device=True)
def row_id(group):
    """(thread index, lane in the group, row handled by the group)."""
    tid = cuda.threadIdx.x
    return tid, tid % group, cuda.blockIdx.x * (cuda.blockDim.x // group) + tid // group


GLOBAL, CACHED, ONLINE = 0, 1, 2  # how a group reads its row (see row_stats)


@cuda.jit(device=True)
def load(x3, o, j, i, cache, mode):
    """Element j of the row: from the shared cache when the row is staged there."""
    return cache[j] if mode == CACHED else x3[o, j, i]


@cuda.jit(device=True)
def row_stats(x3, o, i, lane, group, valid, s_hi, s_lo, neg_inf, scratch, tid, warp, cache,
              mode):
    """(m, rest, ties, nans) of the row, in every thread of its group.

    m is the maximum (NaN ignored), rest the sum of exp((x - m)/T) over x < m, ties the
    count of x == m, nans the count of NaN (a NaN also makes rest NaN, except ONLINE).
    GLOBAL reads the row twice from global memory (short rows: cached in L1); CACHED
    stages it in the shared ``cache`` on the first read (later passes read that);
    ONLINE reads it once, keeping a running maximum per thread whose sums are rescaled
    when it grows, then rescaled once more to the group's maximum.
    """
    C = x3.shape[1]
    m = neg_inf
    nans = 0.0
    rest = 0.0
    ties = 0.0
    if mode == ONLINE:
        if valid:
            for j in range(lane, C, group):
                v = x3[o, j, i]
                if v != v:
                    nans += 1.0
                elif v > m:
                    f = exp_diff(m, v, s_hi, s_lo) if m != neg_inf else 0.0
                    rest = (rest + ties) * f
                    ties = 1.0
                    m = v
                elif v == m:
                    ties += 1.0
                else:
                    rest += exp_diff(v, m, s_hi, s_lo)
        big = group_reduce(m, scratch, tid, group, warp, MAX)
        if m != big and m != neg_inf and math.isfinite(big):
            rest = (rest + ties) * exp_diff(m, big, s_hi, s_lo)
            ties = 0.0
        elif m != big:
            rest = 0.0
            ties = 0.0
        m = big
    else:
        if valid:
            for j in range(lane, C, group):
                v = x3[o, j, i]
                if mode == CACHED:
                    cache[j] = v
                m = v if v > m else m
                nans += 1.0 if v != v else 0.0
        m = group_reduce(m, scratch, tid, group, warp, MAX)
        if mode == CACHED:
            cuda.syncthreads()  # the staged row is complete before anyone reads it
        if valid and math.isfinite(m):
            for j in range(lane, C, group):
                v = load(x3, o, j, i, cache, mode)
                if v >= m:
                    ties += 1.0
                else:
                    rest += exp_diff(v, m, s_hi, s_lo)
    rest = group_reduce(rest, scratch, tid, group, warp, SUM)
    ties = group_reduce(ties, scratch, tid, group, warp, SUM)
    nans = group_reduce(nans, scratch, tid, group, warp, SUM)
    return m, rest, ties, nans


# --- kernels --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def kernels(dtype):
    """The row kernels for one dtype: the shared row cache is declared with it."""
    nbtype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def softmax_rows(x3, out3, s_hi, s_lo, neg_inf, log, group, warp, mode):
        # softmax:     y_j = exp((x_j - m)/T) / sum_k exp((x_k - m)/T)
        # log_softmax: y_j = (x_j - m)/T - log1p(sum_{k != argmax} exp((x_k - m)/T))
        # gradients: _softmax_backward
        scratch = cuda.shared.array(MAX_THREADS, float64)
        cache = cuda.shared.array(0, nbtype)
        tid, lane, row = row_id(group)
        inner = x3.shape[2]
        valid = row < x3.shape[0] * inner
        o = row // inner
        i = row % inner
        m, rest, ties, nans = row_stats(x3, o, i, lane, group, valid, s_hi, s_lo, neg_inf,
                                        scratch, tid, warp, cache, mode)
        if valid:
            if nans > 0 or not math.isfinite(m):
                for j in range(lane, x3.shape[1], group):
                    out3[o, j, i] = math.nan
            elif log:
                lse = math.log1p(rest + (ties - 1.0))
                for j in range(lane, x3.shape[1], group):
                    out3[o, j, i] = (load(x3, o, j, i, cache, mode) - m) * s_hi - lse
            else:
                inv = 1.0 / (rest + ties)
                for j in range(lane, x3.shape[1], group):
                    v = load(x3, o, j, i, cache, mode)
                    out3[o, j, i] = exp_diff(v, m, s_hi, s_lo) * inv

    @cuda.jit
    def logsumexp_rows(x3, out2, one, neg_inf, group, warp, mode):
        # lse = m + log1p(sum_{k != argmax} exp(x_k - m));  gradient: softmax(x)
        scratch = cuda.shared.array(MAX_THREADS, float64)
        cache = cuda.shared.array(0, nbtype)
        tid, lane, row = row_id(group)
        inner = x3.shape[2]
        valid = row < x3.shape[0] * inner
        o = row // inner
        i = row % inner
        zero = one - one
        m, rest, ties, nans = row_stats(x3, o, i, lane, group, valid, one, zero, neg_inf,
                                        scratch, tid, warp, cache, mode)
        if valid and lane == 0:
            if nans > 0:
                out2[o, i] = math.nan
            elif math.isfinite(m):
                out2[o, i] = m + math.log1p(rest + (ties - 1.0))
            else:
                out2[o, i] = m

    return types.SimpleNamespace(softmax=softmax_rows, logsumexp=logsumexp_rows)


def row_mode(classes: int, itemsize: int, group: int):
    """(mode, dynamic shared bytes) for a row of ``classes`` read by ``group`` threads."""
    from . import SHARED_ROW_BYTES, WARP

    if group <= WARP:
        return GLOBAL, 0
    if classes * itemsize <= SHARED_ROW_BYTES:
        return CACHED, classes * itemsize
    return ONLINE, 0


@cuda.jit
def _logsumexp_b(x3, b3, out2, sign2, return_sign):
    # one thread per row: out = log|sum_j b_j exp(x_j)| (b_j == 0 terms left out), sign2 the
    # sum's sign; SciPy's rules, as jitloss.cpu.softmax._lse_b_lane
    row = cuda.grid(1)
    inner = x3.shape[2]
    if row >= x3.shape[0] * inner:
        return
    o = row // inner
    i = row % inner
    C = x3.shape[1]
    m = -math.inf
    nan = False
    for j in range(C):
        if b3[o, j, i] != 0:
            v = float(x3[o, j, i])
            nan = nan or v != v
            m = v if v > m else m
    if nan:
        out2[o, i] = math.nan
        sign2[o, i] = math.nan
        return
    if m == -math.inf:
        out2[o, i] = -math.inf
        sign2[o, i] = 0.0
        return
    if m == math.inf:
        total = 0.0
        for j in range(C):
            bj = float(b3[o, j, i])
            if bj != 0 and x3[o, j, i] == math.inf:
                total += bj * math.inf
        sign = math.nan if total != total else (1.0 if total > 0 else -1.0)
    else:
        mb = 0.0
        rest = 0.0
        for j in range(C):
            bj = float(b3[o, j, i])
            if bj != 0:
                v = float(x3[o, j, i])
                if v == m:
                    mb += bj
                else:
                    rest += bj * exp_diff(v, m, 1.0, 0.0)
        total, sign = formulas.signed_lse(m, mb, rest)
    if not return_sign and sign < 0:
        total = math.nan
    out2[o, i] = total
    sign2[o, i] = sign


@cuda.jit
def _softmax_backward(y3, dy3, out3, s_hi, log, group, warp):
    # softmax:     dx_j = y_j (dy_j - sum_k dy_k y_k) / T
    # log_softmax: dx_j = (dy_j - exp(y_j) sum_k dy_k) / T
    scratch = cuda.shared.array(MAX_THREADS, float64)
    tid, lane, row = row_id(group)
    inner = y3.shape[2]
    valid = row < y3.shape[0] * inner
    o = row // inner
    i = row % inner
    acc = 0.0
    if valid:
        for j in range(lane, y3.shape[1], group):
            acc += dy3[o, j, i] if log else dy3[o, j, i] * float(y3[o, j, i])
    acc = group_reduce(acc, scratch, tid, group, warp, SUM)
    if valid:
        for j in range(lane, y3.shape[1], group):
            if log:
                out3[o, j, i] = (dy3[o, j, i] - math.exp(y3[o, j, i]) * acc) * s_hi
            else:
                out3[o, j, i] = y3[o, j, i] * (dy3[o, j, i] - acc) * s_hi


# --- launchers (twins of jitloss.cpu.softmax) -------------------------------------------------


def _typed(value, dtype):
    return np.dtype(dtype).type(value)


def _inverse_temperature(s, dtype):
    """1/T as (hi, lo) in the compute dtype (float32: hi rounded, lo its remainder)."""
    hi = _typed(s[0], dtype)
    return hi, _typed((s[0] - float(hi)) + s[1], dtype)


def _empty(shape, dtype, out):
    return cuda.device_array(shape, dtype) if out is None else out


def softmax(x3, s, out3=None, log=False):
    """exp((x - max) * s) / sum(...) over axis 1 of the device array x3."""
    out3 = _empty(x3.shape, x3.dtype, out3)
    blocks, threads, group = launch_config(x3.shape[0] * x3.shape[2], x3.shape[1])
    mode, shared = row_mode(x3.shape[1], x3.dtype.itemsize, group)
    s_hi, s_lo = _inverse_temperature(s, x3.dtype)
    neg_inf = _typed(-np.inf, x3.dtype)
    kernels(x3.dtype).softmax[blocks, threads, 0, shared](x3, out3, s_hi, s_lo, neg_inf, log,
                                                         group, _warp(group), mode)
    return out3


def log_softmax(x3, s, out3=None):
    """(x - max) * s - log(sum(exp((x - max) * s))) over axis 1 of x3."""
    return softmax(x3, s, out3, log=True)


def logsumexp(x3, out2=None):
    """log(sum(exp(x))) over axis 1 of x3, into the (outer, inner) device array out2."""
    out2 = _empty((x3.shape[0], x3.shape[2]), x3.dtype, out2)
    blocks, threads, group = launch_config(x3.shape[0] * x3.shape[2], x3.shape[1])
    mode, shared = row_mode(x3.shape[1], x3.dtype.itemsize, group)
    one = _typed(1.0, x3.dtype)
    kernels(x3.dtype).logsumexp[blocks, threads, 0, shared](
        x3, out2, one, _typed(-np.inf, x3.dtype), group, _warp(group), mode)
    return out2


def logsumexp_b(x3, b3, return_sign, out2=None, sign2=None):
    """log|sum(b * exp(x))| over axis 1 and its sign (SciPy's rules)."""
    shape2 = (x3.shape[0], x3.shape[2])
    out2 = _empty(shape2, x3.dtype, out2)
    sign2 = _empty(shape2, x3.dtype, sign2)
    _logsumexp_b[grid1(shape2[0] * shape2[1])](x3, b3, out2, sign2, return_sign)
    return out2, sign2


def softmax_backward(y3, dy3, s, out3=None, log=False):
    """y * (dy - sum(dy * y)) * s over axis 1 (log: (dy - exp(y) * sum(dy)) * s)."""
    out3 = _empty(y3.shape, y3.dtype, out3)
    blocks, threads, group = launch_config(y3.shape[0] * y3.shape[2], y3.shape[1])
    s_hi = _typed(s[0], y3.dtype)
    _softmax_backward[blocks, threads](y3, dy3, out3, s_hi, log, group, _warp(group))
    return out3


def log_softmax_backward(logp3, dy3, s, out3=None):
    """(dy - exp(logp) * sum(dy)) * s over axis 1."""
    return softmax_backward(logp3, dy3, s, out3, log=True)


def _warp(group):
    from . import WARP

    return min(WARP, group)


# --- the device side of the public functions ------------------------------------------------


def _map_rows(launcher, values, names, axis, out, *params):
    arrays, compute, result = device_inputs(*zip(values, names))
    if any(tuple(a.shape) != tuple(arrays[0].shape) for a in arrays[1:]):
        shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays))
        raise ValueError(f"{' and '.join(names)} must have the same shape, got {shapes}")
    rows = _args.Rows.of(arrays[0], _args.normalize_axes(axis, len(arrays[0].shape)))
    in3 = [take3(rows, a) for a in arrays]
    out3 = None
    if out is not None:
        out = check_device_out(out, rows.shape, result)
        if result == compute:
            out3 = rows.view3(out)
            if out3 is not None and not writes_through(out3, *in3):
                out3 = None
    r3 = launcher(*in3, *params, out3=out3)
    if out is None:
        return restore(rows, r3, result)
    if out3 is None:
        copy_into(out, restore(rows, r3, result))
    return out


def softmax_public(x, axis, s, out):
    return _map_rows(softmax, [x], ["x"], axis, out, s)


def log_softmax_public(x, axis, s, out):
    return _map_rows(log_softmax, [x], ["x"], axis, out, s)


def softmax_backward_public(y, dy, axis, s, out):
    return _map_rows(softmax_backward, [y, dy], ["y", "dy"], axis, out, s)


def log_softmax_backward_public(logp, dy, axis, s, out):
    return _map_rows(log_softmax_backward, [logp, dy], ["logp", "dy"], axis, out, s)


def logsumexp_public(x, axis, b, keepdims, return_sign, out):
    pairs = [(x, "x")] if b is None else [(x, "x"), (b, "b")]
    arrays, compute, result = device_inputs(*pairs)
    a = arrays[0]
    rows = _args.Rows.of(a, _args.normalize_axes(axis, len(a.shape)))
    x3 = take3(rows, a)
    if b is None:
        r2 = logsumexp(x3)
        sign2 = None
        if return_sign:
            sign2 = cuda.device_array(r2.shape, compute)
            _sign_of_lse[grid1(r2.size)](r2.reshape(r2.size), sign2.reshape(r2.size))
    else:
        bb = arrays[1]
        if tuple(bb.shape) != tuple(a.shape):
            host = np.broadcast_to(bb.copy_to_host(), tuple(a.shape))  # broadcast via host
            bb = cuda.to_device(np.ascontiguousarray(host))
        r2, sign2 = logsumexp_b(x3, take3(rows, bb), return_sign)
    res = restore2(rows, r2, keepdims, result)
    if out is not None:
        out = check_device_out(out, rows.reduced_shape(keepdims), result)
        copy_into(out, res)
        res = out
    if not return_sign:
        return res
    return res, restore2(rows, sign2, keepdims, result)


@cuda.jit
def _sign_of_lse(r, sign):
    i = cuda.grid(1)
    if i < r.shape[0]:
        v = r[i]
        if v != v:
            sign[i] = math.nan
        elif v == -math.inf:
            sign[i] = 0.0
        else:
            sign[i] = 1.0
