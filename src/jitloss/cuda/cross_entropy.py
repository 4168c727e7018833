"""CUDA cross-entropy: fused loss-and-gradient kernels (the twins of
``jitloss.cpu.cross_entropy``) and the device side of the public functions.

Per call: a label pass (labels checked on the device, first bad position flagged with an
integer ``atomic.min``; per-sample weights for "mean"'s denominator), a fixed-order
reduction of the denominator, the per-sample scales, the fused kernel (one thread group
per row: max, sums, then the gradient written over the row, possibly the logits
themselves), and a fixed-order reduction of the per-sample losses.  Formulas as in the
CPU module; the gradient's target entry is formed in float64 from the exact 1 - p_y.
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
    as_device,
    check_device_out,
    copy_into,
    device_inputs,
    grid1,
    launch_config,
    restore,
    restore2,
    take2,
    take3,
    writes_through,
)
from ._reduce import SUM, group_reduce
from .softmax import _typed, _warp, exp_diff, load, row_id, row_mode, row_stats

# --- label pass and reductions ----------------------------------------------------------


@cuda.jit
def _scan_labels(labels, classes, ignore, w, weights, err):
    # weights[k] = w[labels[k]] for a live label, 0 if ignored; err[0] = first bad position
    k = cuda.grid(1)
    if k < labels.shape[0]:
        y = labels[k]
        if y == ignore:
            weights[k] = 0.0
        elif y < 0 or y >= classes:
            weights[k] = 0.0
            cuda.atomic.min(err, 0, k)
        else:
            weights[k] = w[y]


@cuda.jit
def _reduce_sum(values, out, index):
    # one block: each thread sums a fixed strided share, then a fixed-order tree
    scratch = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for k in range(tid, values.shape[0], cuda.blockDim.x):
        acc += values[k]
    scratch[tid] = acc
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step >= 1:
        if tid < step:
            scratch[tid] += scratch[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        out[index] = scratch[0]


@cuda.jit
def _fill_scale(scale, dloss, per_sample, stats, mean):
    # scale[k] = dloss (or dloss[k]) / denominator for "mean" (0 when it is 0)
    k = cuda.grid(1)
    if k < scale.shape[0]:
        d = dloss[k] if per_sample else dloss[0]
        if mean:
            den = stats[0]
            d = d / den if den != 0 else 0.0
        scale[k] = d


@cuda.jit
def _finish(stats, out, mean):
    # out[()] = sum of losses (stats[1]), divided by the denominator (stats[0]) for "mean"
    if cuda.grid(1) == 0:
        total = stats[1]
        if mean:
            total = total / stats[0] if stats[0] != 0 else math.nan
        out[()] = total


def reduce_sum(values, stats, index):
    """stats[index] = sum of the float64 device vector ``values``, in a fixed order."""
    from . import THREADS_1D

    threads = 1
    while threads * 2 <= min(THREADS_1D, max(values.shape[0], 1)):
        threads *= 2  # a power of two for the tree
    _reduce_sum[1, threads](values, stats, index)


def finish(loss_flat, stats, reduction, dtype):
    """The 0-d device loss for "sum"/"mean" from per-sample losses and stats[0] (den)."""
    reduce_sum(loss_flat, stats, 1)
    out = cuda.device_array((), np.float64)
    _finish[1, 1](stats, out, reduction == "mean")
    return out if np.dtype(dtype) == np.float64 else _cast0(out, dtype)


def _cast0(a, dtype):
    from . import cast

    return cast(a.reshape(1), dtype).reshape(())


def scan_labels(labels_flat, classes, ignore, w, name="target"):
    """Per-sample weights (float64) and the denominator in stats[0]; raises for bad labels."""
    n = labels_flat.shape[0]
    weights = cuda.device_array(max(n, 1), np.float64)
    err = cuda.to_device(np.array([np.iinfo(np.int64).max], np.int64))
    if n:
        _scan_labels[grid1(n)](labels_flat, classes, ignore, w, weights, err)
    first = int(err.copy_to_host()[0])
    if first != np.iinfo(np.int64).max:
        label = int(labels_flat[first : first + 1].copy_to_host()[0])
        return None, (first, label)
    stats = cuda.device_array(2, np.float64)
    reduce_sum(weights[:n] if n else weights[:0], stats, 0)
    return stats, None


# --- the fused kernels ---------------------------------------------------------------------


@cuda.jit(device=True)
def _fill_sample(g3, loss2, o, i, lane, group, grad, value):
    # a sample whose loss and gradient are all ``value`` (0 when ignored, NaN when its row
    # has no finite maximum); each thread of the group writes its share of the classes
    if grad:
        for j in range(lane, g3.shape[1], group):
            g3[o, j, i] = value
    if lane == 0:
        loss2[o, i] = value


@functools.lru_cache(maxsize=None)
def kernels(dtype):
    """The fused kernels for one dtype (the shared row cache is declared with it)."""
    nbtype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def index_rows(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, grad, neg_inf, one,
                   group, warp, mode):
        # loss = (1-e) w_y (lse - x_y) + e/C sum_c w_c (lse - x_c) + s lse^2   (0 if ignored)
        # g_j = k [p_j ((1-e) w_y + e/C W + 2 s lse) - e/C w_j - (1-e) w_y [j == y]]
        scratch = cuda.shared.array(MAX_THREADS, float64)
        cache = cuda.shared.array(0, nbtype)
        tid, lane, row = row_id(group)
        inner = x3.shape[2]
        C = x3.shape[1]
        valid = row < x3.shape[0] * inner
        o = row // inner
        i = row % inner
        y = y2[o, i] if valid else ignore
        live = valid and y != ignore
        xy = float(x3[o, y, i]) if live else 0.0  # read before any thread writes g (maybe x)
        zero = one - one
        m, rest, ties, nans = row_stats(x3, o, i, lane, group, live, one, zero, neg_inf,
                                        scratch, tid, warp, cache, mode)
        finite = math.isfinite(m) and nans == 0
        gap = 0.0
        if live and finite and eps > 0:
            for j in range(lane, C, group):
                gap += float(w[j]) * (float(m) - float(load(x3, o, j, i, cache, mode)))
        gap = group_reduce(gap, scratch, tid, group, warp, SUM)
        if not valid:
            return
        if not live:
            _fill_sample(g3, loss2, o, i, lane, group, grad, 0.0)
            return
        if not finite:
            _fill_sample(g3, loss2, o, i, lane, group, grad, math.nan)
            return
        L = math.log1p(rest + (ties - 1.0))
        mf = float(m)
        lse = mf + L
        wy = float(w[y])
        if lane == 0:
            loss2[o, i] = formulas.index_loss(mf, xy, L, wy, wsum, gap, eps, z, C)
        if grad:
            k = scale2[o, i]
            total = rest + ties
            a = k * ((1.0 - eps) * wy + eps / C * wsum + 2.0 * z * lse) / total
            b = k * eps / C
            for j in range(lane, C, group):
                e = exp_diff(load(x3, o, j, i, cache, mode), m, one, zero)
                if j == y:
                    g3[o, j, i] = formulas.target_entry(float(e), rest, ties, k, wy, wsum,
                                                        eps, z, lse, C)
                else:
                    g3[o, j, i] = e * a - b * w[j]

    @cuda.jit
    def prob_rows(x3, t3, w, eps, z, scale2, loss2, g3, grad, neg_inf, one, group, warp, mode):
        # t' = (1-e) t + e/C:  loss = sum_c w_c t'_c (lse - x_c) + s lse^2
        # g_j = k [p_j (sum_c w_c t'_c + 2 s lse) - w_j t'_j]
        scratch = cuda.shared.array(MAX_THREADS, float64)
        cache = cuda.shared.array(0, nbtype)
        tid, lane, row = row_id(group)
        inner = x3.shape[2]
        C = x3.shape[1]
        valid = row < x3.shape[0] * inner
        o = row // inner
        i = row % inner
        zero = one - one
        m, rest, ties, nans = row_stats(x3, o, i, lane, group, valid, one, zero, neg_inf,
                                        scratch, tid, warp, cache, mode)
        finite = math.isfinite(m) and nans == 0
        mass = 0.0
        gap = 0.0
        k0 = eps / C
        if valid and finite:
            for j in range(lane, C, group):
                wt = float(w[j]) * (float(t3[o, j, i]) * (1.0 - eps) + k0)
                mass += wt
                gap += wt * (float(m) - float(load(x3, o, j, i, cache, mode)))
        mass = group_reduce(mass, scratch, tid, group, warp, SUM)
        gap = group_reduce(gap, scratch, tid, group, warp, SUM)
        if not valid:
            return
        if not finite:
            _fill_sample(g3, loss2, o, i, lane, group, grad, math.nan)
            return
        L = math.log1p(rest + (ties - 1.0))
        lse = float(m) + L
        if lane == 0:
            loss2[o, i] = formulas.prob_loss(gap, L, mass, z, lse)
        if grad:
            k = scale2[o, i]
            a = k * (mass + 2.0 * z * lse) / (rest + ties)
            for j in range(lane, C, group):
                e = exp_diff(load(x3, o, j, i, cache, mode), m, one, zero)
                tj = float(t3[o, j, i]) * (1.0 - eps) + k0
                g3[o, j, i] = e * a - k * float(w[j]) * tj

    return types.SimpleNamespace(index=index_rows, prob=prob_rows)


# --- launchers (twins of jitloss.cpu.cross_entropy) ------------------------------------------


def _launch(name, x3, *args):
    blocks, threads, group = launch_config(x3.shape[0] * x3.shape[2], x3.shape[1])
    mode, shared = row_mode(x3.shape[1], x3.dtype.itemsize, group)
    kernel = getattr(kernels(x3.dtype), name)
    kernel[blocks, threads, 0, shared](x3, *args, _typed(-np.inf, x3.dtype),
                                       _typed(1.0, x3.dtype), group, _warp(group), mode)


def index_loss_grad(x3, y2, w, wsum, ignore, eps, z, scale2, g3=None, grad=True):
    """(per-sample losses (float64 device), gradient) for class-index targets."""
    loss2 = cuda.device_array(y2.shape, np.float64)
    g = g3 if g3 is not None else cuda.device_array(x3.shape if grad else (1, 1, 1), x3.dtype)
    s2 = scale2 if scale2 is not None else cuda.device_array((1, 1), np.float64)
    _launch("index", x3, y2, w, wsum, ignore, eps, z, s2, loss2, g, grad)
    return loss2, g


def index_loss(x3, y2, w, wsum, ignore, eps, z):
    """Per-sample losses for class-index targets (nothing of x3's size written)."""
    return index_loss_grad(x3, y2, w, wsum, ignore, eps, z, None, None, grad=False)[0]


def prob_loss_grad(x3, t3, w, eps, z, scale2, g3=None, grad=True):
    """(per-sample losses (float64 device), gradient) for probability targets."""
    loss2 = cuda.device_array((x3.shape[0], x3.shape[2]), np.float64)
    g = g3 if g3 is not None else cuda.device_array(x3.shape if grad else (1, 1, 1), x3.dtype)
    s2 = scale2 if scale2 is not None else cuda.device_array((1, 1), np.float64)
    _launch("prob", x3, t3, w, eps, z, s2, loss2, g, grad)
    return loss2, g


def prob_loss(x3, t3, w, eps, z):
    """Per-sample losses for probability targets."""
    return prob_loss_grad(x3, t3, w, eps, z, None, None, grad=False)[0]


# --- the device side of the public functions -----------------------------------------------


def _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss):
    reduction = _args.check_reduction(reduction)
    eps = _args.check_unit_interval(label_smoothing, "label_smoothing")
    z = _args.check_nonnegative(z_loss, "z_loss")
    ignore = int(ignore_index)
    (x,), compute, result = device_inputs((logits, "logits"))
    if len(x.shape) == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    if isinstance(axis, (tuple, list)) or axis is None:
        raise TypeError(f"axis must be a single int (the class axis), got {axis!r}")
    rows = _args.Rows.of(x, _args.normalize_axes(axis, len(x.shape)))
    classes = rows.classes
    x3 = take3(rows, x)
    if weight is None:
        w = cuda.to_device(np.ones(classes, compute))
    else:
        w = as_device(weight, "weight")
        _args.result_dtype(np.dtype(w.dtype), "weight")
        if tuple(w.shape) != (classes,):
            raise ValueError(
                f"weight has shape {tuple(w.shape)}; expected ({classes},), one per class")
        if np.dtype(w.dtype) != compute:
            from . import cast

            w = cast(w, compute)
    wsum = float(np.sum(w.copy_to_host(), dtype=np.float64))
    t = as_device(target, "target")
    kind = np.dtype(t.dtype).kind
    sample_shape = rows.reduced_shape(False)
    if kind in "iu":
        if tuple(t.shape) != sample_shape:
            raise ValueError(
                f"target holds class indices of shape {tuple(t.shape)}; expected logits' "
                f"shape without the class axis, {sample_shape}")
        from . import cast, contiguous

        labels = t if np.dtype(t.dtype) == np.int64 else cast(t, np.int64)
        labels = contiguous(labels)
        stats, bad = scan_labels(labels.reshape(labels.size), classes, ignore, w)
        if bad is not None:
            pos = np.unravel_index(bad[0], sample_shape) if sample_shape else ()
            raise ValueError(
                f"target holds label {bad[1]} at position {tuple(int(p) for p in pos)}, "
                f"outside [0, {classes}) and not ignore_index={ignore}")
        return rows, x3, compute, result, "index", take2(rows, labels), w, wsum, ignore, eps, \
            z, reduction, stats
    if kind == "f":
        if tuple(t.shape) != tuple(x.shape):
            raise TypeError(
                f"target is floating-point of shape {tuple(t.shape)}: floating-point targets "
                f"are class probabilities of logits' shape {tuple(x.shape)}")
        if ignore >= 0:
            raise ValueError(
                f"ignore_index={ignore} is not supported with probability targets")
        if np.dtype(t.dtype) != compute:
            from . import cast

            t = cast(t, compute)
        stats = cuda.to_device(np.array([rows.outer * rows.inner, 0.0]))
        return rows, x3, compute, result, "prob", take3(rows, t), w, wsum, ignore, eps, z, \
            reduction, stats
    raise TypeError(f"target must hold integer class indices or floating-point "
                    f"probabilities, got dtype {t.dtype}")


def _loss(plan, loss2):
    rows, result, reduction, stats = plan[0], plan[3], plan[11], plan[12]
    if reduction == "none":
        return restore2(rows, loss2, False, result)
    return finish(loss2.reshape(loss2.size), stats, reduction, result)


def cross_entropy_public(logits, target, axis, weight, ignore_index, reduction,
                         label_smoothing, z_loss):
    plan = _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss)
    rows, x3, compute, result, kind, yt, w, wsum, ignore, eps, z = plan[:11]
    if kind == "index":
        loss2 = index_loss(x3, yt, w, wsum, ignore, eps, z)
    else:
        loss2 = prob_loss(x3, yt, w, eps, z)
    return _loss(plan, loss2)


def cross_entropy_with_grad_public(logits, target, axis, weight, ignore_index, reduction,
                                   label_smoothing, z_loss, dloss, grad_out):
    plan = _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss)
    rows, x3, compute, result, kind, yt, w, wsum, ignore, eps, z, reduction, stats = plan
    n = rows.outer * rows.inner
    if reduction == "none" and dloss is not None:
        d = as_device(dloss, "dloss")
        if tuple(d.shape) != rows.reduced_shape(False):
            host = np.broadcast_to(np.asarray(d.copy_to_host(), np.float64),
                                   rows.reduced_shape(False))
            d = cuda.to_device(np.ascontiguousarray(host))
        from . import cast

        d = d if np.dtype(d.dtype) == np.float64 else cast(d, np.float64)
        dvec = take2(rows, d)
        dvec = dvec.reshape(n) if n else cuda.device_array(1, np.float64)
        per_sample = True
    else:
        k = 1.0 if dloss is None else _scalar_dloss(dloss, reduction)
        dvec = cuda.to_device(np.array([k]))
        per_sample = False
    scale = cuda.device_array(max(n, 1), np.float64)
    _fill_scale[grid1(max(n, 1))](scale, dvec, per_sample, stats, reduction == "mean")
    scale2 = scale[:n].reshape(rows.outer, rows.inner) if n else scale.reshape(1, 1)
    g3 = None
    if grad_out is not None:
        grad_out = check_device_out(grad_out, rows.shape, result, "grad_out")
        if result == compute:
            g3 = rows.view3(grad_out)
            # over the logits, never over the target or the weights (as on the CPU)
            if g3 is not None and not writes_through(g3, x3, apart=(yt, w)):
                g3 = None
    if kind == "index":
        loss2, g = index_loss_grad(x3, yt, w, wsum, ignore, eps, z, scale2, g3)
    else:
        loss2, g = prob_loss_grad(x3, yt, w, eps, z, scale2, g3)
    loss = _loss(plan, loss2)
    if grad_out is None:
        return loss, restore(rows, g, result)
    if g3 is None:
        copy_into(grad_out, restore(rows, g, result))
    return loss, grad_out


def _scalar_dloss(dloss, reduction):
    if hasattr(dloss, "__cuda_array_interface__") or hasattr(dloss, "__cuda_ndarray__"):
        dloss = as_device(dloss, "dloss").copy_to_host()
    d = np.asarray(dloss, dtype=np.float64)
    if d.size != 1:
        raise ValueError(
            f"dloss must be a scalar for reduction={reduction!r}, got shape {d.shape}")
    return float(d.reshape(()))
