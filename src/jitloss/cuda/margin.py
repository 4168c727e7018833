"""CUDA margin losses: kernels (the twins of ``jitloss.cpu.margin``) and the device side of
the public functions.  One thread group per sample row, as in ``jitloss.cuda.softmax``;
formulas, hinge-point subgradients (0) and NaN handling as on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from .. import _args
from ..cpu._labels import NO_IGNORE
from . import (
    MAX_THREADS,
    as_device,
    cast,
    check_device_out,
    contiguous,
    copy_into,
    device_inputs,
    grid1,
    launch_config,
    restore,
    take2,
    take3,
    writes_through,
)
from ._reduce import MAX, MIN, SUM, group_reduce
from .cross_entropy import _scalar_dloss, finish, scan_labels
from .softmax import _warp, row_id


# --- kernels --------------------------------------------------------------------------------


@cuda.jit
def _max_margin(s2, margin, k, dl2, per_pair, loss1, pairs2, store, g2, grad, group, warp):
    # h_bj = max(0, margin - s_b0 + s_bj);  loss_b = sum_j h_bj
    # g_bj = k_bj [h_bj > 0],  g_b0 = -sum_j k_bj [h_bj > 0]   (0 at the hinge, NaN kept)
    scratch = cuda.shared.array(MAX_THREADS, float64)
    tid, lane, b = row_id(group)
    valid = b < s2.shape[0]
    n = s2.shape[1] - 1
    top = (margin - float(s2[b, 0])) if valid else 0.0  # read before g2 (maybe s2) is written
    total = 0.0
    dpos = 0.0
    if valid:
        for j in range(lane, n, group):
            v = top + float(s2[b, j + 1])
            if v > 0 or v != v:
                total += v
                dpos += (dl2[b, j] if per_pair else k) if v > 0 else v
    total = group_reduce(total, scratch, tid, group, warp, SUM)
    dpos = group_reduce(dpos, scratch, tid, group, warp, SUM)
    if not valid:
        return
    for j in range(lane, n, group):
        v = top + float(s2[b, j + 1])
        if store:
            pairs2[b, j] = v if v > 0 or v != v else 0.0
        if grad:
            d = dl2[b, j] if per_pair else k
            g2[b, j + 1] = d if v > 0 else (v if v != v else 0.0)
    if lane == 0:
        loss1[b] = total
        if grad:
            g2[b, 0] = -dpos


@cuda.jit
def _multi_margin(x2, y1, w, p, margin, k1, loss1, g2, grad, group, warp):
    # loss = w_y / C sum_{j != y} max(0, margin - x_y + x_j)^p
    # g_j = k w_y / C (1 or 2 z_j) [z_j > 0] (j != y),  g_y = -sum_{j != y} g_j
    scratch = cuda.shared.array(MAX_THREADS, float64)
    tid, lane, i = row_id(group)
    valid = i < x2.shape[0]
    C = x2.shape[1]
    y = y1[i] if valid else 0
    top = (margin - float(x2[i, y])) if valid else 0.0  # read before g2 (maybe x2) is written
    total = 0.0
    slope = 0.0
    if valid:
        for j in range(lane, C, group):
            zj = top + float(x2[i, j])
            if j != y and (zj > 0 or zj != zj):
                total += zj if p == 1 else zj * zj
                slope += 1.0 if p == 1 else zj
    total = group_reduce(total, scratch, tid, group, warp, SUM)
    slope = group_reduce(slope, scratch, tid, group, warp, SUM)
    if not valid:
        return
    c = (k1[i] if grad else 0.0) * float(w[y]) / C
    if grad:
        for j in range(lane, C, group):
            zj = top + float(x2[i, j])
            if j == y:
                g2[i, j] = -c * slope * (1.0 if p == 1 else 2.0)
            elif zj > 0:
                g2[i, j] = c if p == 1 else 2.0 * c * zj
            else:
                g2[i, j] = zj if zj != zj else 0.0
    if lane == 0:
        loss1[i] = float(w[y]) * total / C


@cuda.jit
def _hinge(x2, y1, margin, k1, loss1, g2, grad, group, warp):
    # loss = max_j (x_j + margin [j != y]) - x_y;  g = k (e_j* - e_y) if max_{j != y} beats x_y
    scratch = cuda.shared.array(MAX_THREADS, float64)
    tid, lane, i = row_id(group)
    valid = i < x2.shape[0]
    C = x2.shape[1]
    y = y1[i] if valid else 0
    xy = float(x2[i, y]) if valid else 0.0
    best = -math.inf
    nans = 0.0
    if valid:
        for j in range(lane, C, group):
            v = float(x2[i, j])
            nans += 1.0 if v != v else 0.0
            if j != y:
                best = max(best, v + margin)
    best = group_reduce(best, scratch, tid, group, warp, MAX)
    nans = group_reduce(nans, scratch, tid, group, warp, SUM)
    # the first j != y attaining the maximum: smallest index, found by a min-reduction
    star = float(C)
    if valid and nans == 0 and best > xy:
        for j in range(lane, C, group):
            if j != y and float(x2[i, j]) + margin == best and j < star:
                star = float(j)
    star = group_reduce(star, scratch, tid, group, warp, MIN)
    if not valid:
        return
    if grad:
        k = k1[i]
        for j in range(lane, C, group):
            if nans > 0:
                g2[i, j] = math.nan
            elif j == star:
                g2[i, j] = k
            elif j == y and star < C:
                g2[i, j] = -k
            else:
                g2[i, j] = 0.0
    if lane == 0:
        loss1[i] = math.nan if nans > 0 else max(best, xy) - xy


# --- launchers ------------------------------------------------------------------------------


def _group(rows, classes):
    blocks, threads, group = launch_config(rows, classes)
    return blocks, threads, group, _warp(group)


def max_margin_grad(s2, margin, k, dl2=None, pairs2=None, g2=None, grad=True):
    """(per-row loss sums (float64 device), gradient)."""
    B = s2.shape[0]
    loss1 = cuda.device_array(B, np.float64)
    store = pairs2 is not None
    pairs2 = pairs2 if store else cuda.device_array((1, 1), s2.dtype)
    per_pair = dl2 is not None
    dl2 = dl2 if per_pair else cuda.device_array((1, 1), np.float64)
    g2 = g2 if g2 is not None else cuda.device_array(s2.shape if grad else (1, 1), s2.dtype)
    blocks, threads, group, warp = _group(B, s2.shape[1])
    _max_margin[blocks, threads](s2, margin, k, dl2, per_pair, loss1, pairs2, store, g2, grad,
                                 group, warp)
    return loss1, g2


def max_margin(s2, margin, pairs2=None):
    return max_margin_grad(s2, margin, 1.0, None, pairs2, None, grad=False)[0]


def multi_margin_grad(x2, y1, w, p, margin, k1, g2=None, grad=True):
    n = x2.shape[0]
    loss1 = cuda.device_array(n, np.float64)
    g2 = g2 if g2 is not None else cuda.device_array(x2.shape if grad else (1, 1), x2.dtype)
    k1 = k1 if k1 is not None else cuda.device_array(1, np.float64)
    blocks, threads, group, warp = _group(n, x2.shape[1])
    _multi_margin[blocks, threads](x2, y1, w, p, margin, k1, loss1, g2, grad, group, warp)
    return loss1, g2


def multi_margin(x2, y1, w, p, margin):
    return multi_margin_grad(x2, y1, w, p, margin, None, None, grad=False)[0]


def hinge_grad(x2, y1, margin, k1, g2=None, grad=True):
    n = x2.shape[0]
    loss1 = cuda.device_array(n, np.float64)
    g2 = g2 if g2 is not None else cuda.device_array(x2.shape if grad else (1, 1), x2.dtype)
    k1 = k1 if k1 is not None else cuda.device_array(1, np.float64)
    blocks, threads, group, warp = _group(n, x2.shape[1])
    _hinge[blocks, threads](x2, y1, margin, k1, loss1, g2, grad, group, warp)
    return loss1, g2


def hinge(x2, y1, margin):
    return hinge_grad(x2, y1, margin, None, None, grad=False)[0]


# --- the device side of the public functions ------------------------------------------------


@cuda.jit
def _fill(out, value):
    k = cuda.grid(1)
    if k < out.shape[0]:
        out[k] = value


def _losses(per, reduction, denominator, result, shape):
    """The returned loss from per-sample float64 device losses."""
    if reduction == "none":
        out = per.reshape(*shape) if shape else per.reshape(())
        return out if np.dtype(result) == np.float64 else cast(out, result)
    stats = cuda.to_device(np.array([float(denominator), 0.0]))
    return finish(per, stats, reduction, result)


def _scale(dloss, reduction, denominator, shape, n):
    """Per-sample (or per-pair) gradient scale as a float64 device vector of n."""
    if reduction == "none" and dloss is not None:
        d = as_device(dloss, "dloss")
        if tuple(d.shape) != tuple(shape):
            host = np.broadcast_to(np.asarray(d.copy_to_host(), np.float64), shape)
            d = cuda.to_device(np.ascontiguousarray(host))
        d = contiguous(d if np.dtype(d.dtype) == np.float64 else cast(d, np.float64))
        return d.reshape(n) if n else cuda.device_array(1, np.float64)
    k = 1.0 if dloss is None else _scalar_dloss(dloss, reduction)
    if reduction == "mean":
        k = k / denominator if denominator else 0.0
    out = cuda.device_array(max(n, 1), np.float64)
    _fill[grid1(max(n, 1))](out, k)
    return out


def _pair_rows(scores, num_negatives, margin, reduction):
    reduction = _args.check_reduction(reduction)
    margin = _args.check_nonnegative(margin, "margin")
    (s,), compute, result = device_inputs((scores, "scores"))
    shape = tuple(s.shape)
    if len(shape) == 1:
        if num_negatives is None:
            raise ValueError("1-D scores need num_negatives=N")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        group = int(num_negatives) + 1
        if shape[0] % group:
            raise ValueError(f"scores has length {shape[0]}, not a multiple of 1 + "
                             f"num_negatives = {group}")
        s2 = contiguous(s).reshape(shape[0] // group, group)
    elif len(shape) == 2:
        if shape[1] < 2:
            raise ValueError(f"scores of shape {shape} has no negatives")
        if num_negatives is not None and num_negatives != shape[1] - 1:
            raise ValueError(f"num_negatives={num_negatives} does not match scores of shape "
                             f"{shape}")
        s2 = contiguous(s)
    else:
        raise ValueError(f"scores must be 1-D or 2-D, got shape {shape}")
    return s2, shape, compute, result, margin, reduction


def max_margin_loss_public(scores, num_negatives, margin, reduction):
    s2, shape, compute, result, margin, reduction = _pair_rows(scores, num_negatives, margin,
                                                               reduction)
    B, group = s2.shape
    if reduction == "none":
        pairs = cuda.device_array((B, group - 1), compute)
        max_margin(s2, margin, pairs)
        return pairs if compute == result else cast(pairs, result)
    return _losses(max_margin(s2, margin), reduction, B * (group - 1), result, None)


def max_margin_loss_with_grad_public(scores, num_negatives, margin, reduction, dloss, grad_out):
    s2, shape, compute, result, margin, reduction = _pair_rows(scores, num_negatives, margin,
                                                               reduction)
    B, group = s2.shape
    n_pairs = B * (group - 1)
    dl2, k = None, 1.0
    if reduction == "none" and dloss is not None:
        dl2 = _scale(dloss, reduction, n_pairs, (B, group - 1), n_pairs).reshape(B, group - 1)
    else:
        k = 1.0 if dloss is None else _scalar_dloss(dloss, reduction)
        if reduction == "mean":
            k = k / n_pairs if n_pairs else 0.0
    pairs = cuda.device_array((B, group - 1), compute) if reduction == "none" else None
    g2 = None
    if grad_out is not None:
        grad_out = check_device_out(grad_out, shape, result, "grad_out")
        from .._args import _c_contiguous

        if result == compute and _c_contiguous(grad_out):
            g2 = grad_out.reshape(B, group)
            if not writes_through(g2, s2, apart=(dl2,)):
                g2 = None
    rows, g = max_margin_grad(s2, margin, k, dl2, pairs, g2)
    if pairs is not None:
        loss = pairs if compute == result else cast(pairs, result)
    else:
        loss = _losses(rows, reduction, n_pairs, result, None)
    grad = g.reshape(*shape)
    if grad_out is None:
        return loss, grad if compute == result else cast(grad, result)
    if g2 is None:
        copy_into(grad_out, grad)
    return loss, grad_out


def _index_rows(scores, target, axis, margin, reduction):
    reduction = _args.check_reduction(reduction)
    margin = _args.check_nonnegative(margin, "margin")
    (x,), compute, result = device_inputs((scores, "scores"))
    if len(x.shape) == 0:
        raise ValueError("scores must have at least one dimension (the classes)")
    if isinstance(axis, (tuple, list)) or axis is None:
        raise TypeError(f"axis must be a single int (the class axis), got {axis!r}")
    rows = _args.Rows.of(x, _args.normalize_axes(axis, len(x.shape)), rows_only=True)
    x2 = take3(rows, x).reshape(rows.outer, rows.classes)
    t = as_device(target, "target")
    if np.dtype(t.dtype).kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    sample_shape = rows.reduced_shape(False)
    if tuple(t.shape) != sample_shape:
        raise ValueError(f"target has shape {tuple(t.shape)}; expected scores' shape without "
                         f"the class axis, {sample_shape}")
    labels = contiguous(t if np.dtype(t.dtype) == np.int64 else cast(t, np.int64))
    ones = cuda.to_device(np.ones(rows.classes, compute))
    stats, bad = scan_labels(labels.reshape(labels.size), rows.classes, NO_IGNORE, ones)
    if bad is not None:
        pos = np.unravel_index(bad[0], sample_shape) if sample_shape else ()
        raise ValueError(f"target holds label {bad[1]} at position "
                         f"{tuple(int(p) for p in pos)}, outside [0, {rows.classes})")
    y1 = take2(rows, labels).reshape(rows.outer)
    return rows, x2, y1, compute, result, margin, reduction


def _weights(weight, classes, compute):
    if weight is None:
        return cuda.to_device(np.ones(classes, compute))
    w = as_device(weight, "weight")
    _args.result_dtype(np.dtype(w.dtype), "weight")
    if tuple(w.shape) != (classes,):
        raise ValueError(f"weight has shape {tuple(w.shape)}; expected ({classes},)")
    return w if np.dtype(w.dtype) == compute else cast(w, compute)


def _index_results(rows, loss1, reduction, result, grad_out=None, g2=None, direct=None):
    loss = _losses(loss1, reduction, rows.outer, result, rows.reduced_shape(False))
    if g2 is None:
        return loss
    grad = restore(rows, g2.reshape(*rows.shape3), result)
    if grad_out is None:
        return loss, grad
    if direct is None:
        copy_into(grad_out, grad)
    return loss, grad_out


def _grad_rows(rows, grad_out, result, compute, x2, y1, k1, w=None):
    """(grad_out checked, its (samples, classes) rows if the kernel may write them over the
    scores x2, apart from the labels, the scales k1 and the weights w, else None)."""
    if grad_out is None:
        return None, None
    grad_out = check_device_out(grad_out, rows.shape, result, "grad_out")
    g3 = rows.view3(grad_out) if result == compute else None
    if g3 is None:
        return grad_out, None
    g2 = g3.reshape(rows.outer, rows.classes)
    return grad_out, (g2 if writes_through(g2, x2, apart=(y1, k1, w)) else None)


def multi_margin_loss_public(scores, target, axis, p, margin, weight, reduction):
    from ..margin import _check_p

    p = _check_p(p)
    rows, x2, y1, compute, result, margin, reduction = _index_rows(scores, target, axis, margin,
                                                                   reduction)
    w = _weights(weight, rows.classes, compute)
    return _index_results(rows, multi_margin(x2, y1, w, p, margin), reduction, result)


def multi_margin_loss_with_grad_public(scores, target, axis, p, margin, weight, reduction,
                                       dloss, grad_out):
    from ..margin import _check_p

    p = _check_p(p)
    rows, x2, y1, compute, result, margin, reduction = _index_rows(scores, target, axis, margin,
                                                                   reduction)
    w = _weights(weight, rows.classes, compute)
    k1 = _scale(dloss, reduction, rows.outer, rows.reduced_shape(False), rows.outer)
    grad_out, direct = _grad_rows(rows, grad_out, result, compute, x2, y1, k1, w)
    loss1, g2 = multi_margin_grad(x2, y1, w, p, margin, k1, direct)
    return _index_results(rows, loss1, reduction, result, grad_out, g2, direct)


def multiclass_hinge_loss_public(scores, target, axis, margin, reduction):
    rows, x2, y1, compute, result, margin, reduction = _index_rows(scores, target, axis, margin,
                                                                   reduction)
    return _index_results(rows, hinge(x2, y1, margin), reduction, result)


def multiclass_hinge_loss_with_grad_public(scores, target, axis, margin, reduction, dloss,
                                           grad_out):
    rows, x2, y1, compute, result, margin, reduction = _index_rows(scores, target, axis, margin,
                                                                   reduction)
    k1 = _scale(dloss, reduction, rows.outer, rows.reduced_shape(False), rows.outer)
    grad_out, direct = _grad_rows(rows, grad_out, result, compute, x2, y1, k1)
    loss1, g2 = hinge_grad(x2, y1, margin, k1, direct)
    return _index_results(rows, loss1, reduction, result, grad_out, g2, direct)
