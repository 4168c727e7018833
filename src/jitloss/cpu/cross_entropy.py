"""CPU cross-entropy: fused loss and gradient kernels, launchers.

Two target kinds: class indices (``index``) and probabilities (``prob``); each with a
loss-only kernel (reads the logits once, writes only per-sample losses) and a fused
loss-and-gradient kernel.  Rows (classes contiguous) and lanes (classes strided, e.g.
PyTorch's ``(N, C, d1, ...)`` with the class axis 1) as in ``cpu/softmax.py``.

Per sample, with m = max(x), L = log(sum exp(x - m)) (``log1p`` of the non-maximal
terms), lse = m + L, weights w (ones when not given), W = sum(w), smoothing e and
z-loss s:

* index target y:  loss = (1 - e) w_y (lse - x_y) + e/C sum_c w_c (lse - x_c) + s lse^2
                   dx_j = k [p_j ((1 - e) w_y + e/C W + 2 s lse) - e/C w_j - (1 - e) w_y [j == y]]
                   (the entry j = y formed in float64 from the exact 1 - p_y)
* prob target t:   t' = (1 - e) t + e/C,  A = sum_c w_c t'_c
                   loss = sum_c w_c t'_c (lse - x_c) + s lse^2
                   dx_j = k [p_j (A + 2 s lse) - w_j t'_j]

with k the per-sample gradient scale (upstream gradient / mean's denominator).  lse - x
is formed as (m - x) + L, so a confident correct prediction keeps its tiny loss.

Passes over a row: max (from memory); the smoothing or target sums (from cache); the
exponentials, stored in the gradient (which may be the logits themselves: everything
later needs only the stored exponentials); the sums of the stored exponentials; the
gradient, rescaled in place.  Per-sample losses go to a float64 array that the public
layer reduces in a fixed order, so results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint64

from .. import _formulas as formulas
from . import (
    SHORT_CE_GRAD_MIN_BYTES,
    SHORT_CE_LOSS_MIN_BYTES,
    group_rows,
    lane_width_for,
    run,
    run_rows,
    short_rows,
    tile_rows,
    tile_top,
)
from ._labels import scan
from ._math import (
    always_inline,
    AHEAD,
    BLOCK,
    LANE_BLOCK,
    _REDUCE,
    apart,
    as_type_of,
    borrowed,
    group_scratch,
    group_span,
    lane_block,
    lanes_of,
    lanes_to_rows,
    lanes_exp,
    lanes_range,
    lanes_rest,
    lanes_sumexp,
    lanes_log1p,
    log1p_rest,
    log1p_rests,
    near_ok,
    pairwise_sum,
    prefetch_lanes,
    prefetch_row,
    aside_row,
    row_exp,
    row_exp_sum,
    row_fill,
    row_lse_parts,
    row_range,
    row_rest,
    rows_to_lanes,
    same_memory,
    short_affine,
    short_chunks,
    short_exp_args,
    short_lse_gap,
    short_prob_affine,
    short_prob_sums,
    short_scratch,
    SHORT_GROUP,
    tile,
    wide_vectors,
)

_ONE = (1.0, 0.0)  # exp_sub's 1/T for T = 1
# Gradient rows of at least FUSE_CLASSES classes store and sum their exponentials in one
# loop (_exp_rest).  Fused against not (float32 cross_entropy_with_grad rows, class indices,
# 2 threads, emeraldrapids): 0.86-0.95 of the time at 512 to 128256 classes, 0.98-1.02
# where most rows are confident (S < 2: the row is summed again), 1.12-1.16 at 64.
FUSE_CLASSES = 512

# --- launchers -----------------------------------------------------------------------------


def _rows(a3):
    return a3.reshape(a3.shape[0], a3.shape[1])


def _col(a2):
    """The (outer, 1) per-sample array a2 as a C-contiguous 1-D one (a view of the losses,
    which are allocated contiguous; targets and scales are only read): the row tiles slice
    it (lanes_of)."""
    return a2.reshape(-1)


def index_loss(x3, y2, w, wsum, ignore, eps, z):
    """Per-sample losses (float64, (outer, inner)) for class-index targets."""
    loss2 = np.empty(y2.shape, np.float64)
    if x3.shape[2] == 1:
        run_rows((_index_rows_serial, _index_rows), (_index_groups_serial, _index_groups),
                 _rows(x3), _col(y2), w, wsum, ignore, eps, z, _col(loss2),
                 tile_kernels=(_index_tiles_serial, _index_tiles),
                 short_kernels=(_index_short_serial, _index_short),
                 short_min_bytes=SHORT_CE_LOSS_MIN_BYTES)
    else:
        args = (x3, y2, w, wsum, ignore, eps, z, loss2, lane_width_for(x3))
        run(_index_lanes_serial, _index_lanes, x3.size, *args)
    return loss2


def index_loss_grad(x3, y2, w, wsum, ignore, eps, z, scale2, g3=None):
    """(per-sample losses, gradient) for class-index targets; g3 may be x3's memory."""
    loss2 = np.empty(y2.shape, np.float64)
    g3 = np.empty(x3.shape, x3.dtype) if g3 is None else g3
    if x3.shape[2] == 1:
        run_rows((_index_grad_rows_serial, _index_grad_rows),
                 (_index_grad_groups_serial, _index_grad_groups),
                 _rows(x3), _col(y2), w, wsum, ignore, eps, z, _col(scale2), _col(loss2),
                 _rows(g3), tile_kernels=(_index_grad_tiles_serial, _index_grad_tiles),
                 short_kernels=(_index_grad_short_serial, _index_grad_short),
                 short_min_bytes=SHORT_CE_GRAD_MIN_BYTES)
    else:
        args = (x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, lane_width_for(x3))
        run(_index_grad_lanes_serial, _index_grad_lanes, x3.size, *args)
    return loss2, g3


@njit(cache=True)
def index_small(x2, y1, ignore, w):
    """(first, denominator, total) for a small call with class indices, unit weights and
    neither smoothing nor z-loss: the label scan (``_labels.scan``) and, if every label is
    valid (first == -1), the sum of the per-sample losses, in one compiled call (the
    serial kernel and reduce_losses' sum: the same bits as the general path)."""
    first, denominator = scan(y1, x2.shape[1], ignore, w)
    if first >= 0:
        return first, denominator, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize, SHORT_CE_LOSS_MIN_BYTES):  # as run_rows
        _index_short_serial(x2, y1, w, float(x2.shape[1]), ignore, 0.0, 0.0, loss1)
    elif tile_rows(x2.shape[0], x2.shape[1], x2.itemsize):
        _index_tiles_serial(x2, y1, w, float(x2.shape[1]), ignore, 0.0, 0.0, loss1,
                            tile_top(x2.shape[1], x2.itemsize))
    elif G:
        _index_groups_serial(x2, y1, w, float(x2.shape[1]), ignore, 0.0, 0.0, loss1, G)
    else:
        _index_rows_serial(x2, y1, w, float(x2.shape[1]), ignore, 0.0, 0.0, loss1)
    return first, denominator, pairwise_sum(loss1)


@njit(cache=True)
def index_grad_small(x2, y1, ignore, w, mean, g2):
    """index_small with the gradient into g2 (which may be x2; the labels may lie under
    it: they are then copied first), for dloss = 1."""
    y1 = y1 if apart(y1, g2) else y1.copy()
    first, denominator = scan(y1, x2.shape[1], ignore, w)
    if first >= 0:
        return first, denominator, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    k = 1.0
    if mean:  # as _args.upstream_scale
        k = k / denominator if denominator != 0 else 0.0
    scale1 = np.full(x2.shape[0], k)
    args = (x2, y1, w, float(x2.shape[1]), ignore, 0.0, 0.0, scale1, loss1, g2)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize, SHORT_CE_GRAD_MIN_BYTES):  # as run_rows
        _index_grad_short_serial(*args)
    elif tile_rows(x2.shape[0], x2.shape[1], x2.itemsize):
        _index_grad_tiles_serial(*args, tile_top(x2.shape[1], x2.itemsize))
    elif G:
        _index_grad_groups_serial(*args, G)
    else:
        _index_grad_rows_serial(*args)
    return first, denominator, pairwise_sum(loss1)


@njit(cache=True)
def prob_small(x2, t2, w):
    """The sum of the per-sample losses for a small call with probability targets (t2 of
    x2's shape and dtype), unit weights and neither smoothing nor z-loss, in one compiled
    call (the serial kernels and reduce_losses' sum: the general path's bits)."""
    loss1 = np.empty(x2.shape[0], np.float64)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize, SHORT_CE_LOSS_MIN_BYTES):  # as run_rows
        _prob_short_serial(x2, t2, w, 0.0, 0.0, loss1)
    elif tile_rows(x2.shape[0], x2.shape[1], x2.itemsize):
        _prob_tiles_serial(x2, t2, w, 0.0, 0.0, loss1, tile_top(x2.shape[1], x2.itemsize))
    elif G:
        _prob_groups_serial(x2, t2, w, 0.0, 0.0, loss1, G)
    else:
        _prob_rows_serial(x2, t2, w, 0.0, 0.0, loss1)
    return pairwise_sum(loss1)


@njit(cache=True)
def prob_grad_small(x2, t2, w, mean, g2):
    """prob_small with the gradient into g2 (x2 itself or apart from x2; a target under it
    is copied first), dloss = 1."""
    t2 = t2 if apart(t2, g2) else t2.copy()
    loss1 = np.empty(x2.shape[0], np.float64)
    k = 1.0
    if mean:  # as _args.upstream_scale, the denominator being the number of samples
        k = k / x2.shape[0]
    scale1 = np.full(x2.shape[0], k)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize, SHORT_CE_GRAD_MIN_BYTES):  # as run_rows
        _prob_grad_short_serial(x2, t2, w, 0.0, 0.0, scale1, loss1, g2)
    elif tile_rows(x2.shape[0], x2.shape[1], x2.itemsize):
        _prob_grad_tiles_serial(x2, t2, w, 0.0, 0.0, scale1, loss1, g2,
                                tile_top(x2.shape[1], x2.itemsize))
    elif G:
        _prob_grad_groups_serial(x2, t2, w, 0.0, 0.0, scale1, loss1, g2, G)
    else:
        _prob_grad_rows_serial(x2, t2, w, 0.0, 0.0, scale1, loss1, g2)
    return pairwise_sum(loss1)


def prob_loss(x3, t3, w, eps, z):
    """Per-sample losses (float64, (outer, inner)) for probability targets."""
    loss2 = np.empty((x3.shape[0], x3.shape[2]), np.float64)
    if x3.shape[2] == 1:
        run_rows((_prob_rows_serial, _prob_rows), (_prob_groups_serial, _prob_groups),
                 _rows(x3), _rows(t3), w, eps, z, _col(loss2),
                 tile_kernels=(_prob_tiles_serial, _prob_tiles),
                 short_kernels=(_prob_short_serial, _prob_short),
                 short_min_bytes=SHORT_CE_LOSS_MIN_BYTES)
    else:
        args = (x3, t3, w, eps, z, loss2, lane_width_for(x3))
        run(_prob_lanes_serial, _prob_lanes, x3.size, *args)
    return loss2


def prob_loss_grad(x3, t3, w, eps, z, scale2, g3=None):
    """(per-sample losses, gradient) for probability targets; g3 may be x3's memory."""
    loss2 = np.empty((x3.shape[0], x3.shape[2]), np.float64)
    g3 = np.empty(x3.shape, x3.dtype) if g3 is None else g3
    if x3.shape[2] == 1:
        run_rows((_prob_grad_rows_serial, _prob_grad_rows),
                 (_prob_grad_groups_serial, _prob_grad_groups),
                 _rows(x3), _rows(t3), w, eps, z, _col(scale2), _col(loss2), _rows(g3),
                 tile_kernels=(_prob_grad_tiles_serial, _prob_grad_tiles),
                 short_kernels=(_prob_grad_short_serial, _prob_grad_short),
                 short_min_bytes=SHORT_CE_GRAD_MIN_BYTES)
    else:
        args = (x3, t3, w, eps, z, scale2, loss2, g3, lane_width_for(x3))
        run(_prob_grad_lanes_serial, _prob_grad_lanes, x3.size, *args)
    return loss2, g3


# --- per-row pieces (row i of 2-D arrays; no views, see cpu/_math.py) ----------------------


@njit(fastmath=_REDUCE)
def _row_gap(x2, i, m, w):
    """sum_c w_c (m - x_c) in float64 (the label-smoothing term; every term >= 0)."""
    wide_vectors()
    always_inline()
    n = x2.shape[1]
    total = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        part = as_type_of(0.0, x2)
        for jj in range(min(BLOCK, n - b0)):
            part += w[b0 + jj] * (m - x2[i, b0 + jj])
        total += part
    return total


@njit(fastmath=_REDUCE)
def _row_target_sums(x2, t2, i, w, m, k1, k0):
    """(sum_c w_c t'_c, sum_c w_c t'_c (m - x_c)) with t' = k1 t + k0, in float64."""
    wide_vectors()
    always_inline()
    n = x2.shape[1]
    mass = 0.0
    gap = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        pm = as_type_of(0.0, x2)
        pg = as_type_of(0.0, x2)
        for jj in range(min(BLOCK, n - b0)):
            wt = w[b0 + jj] * (t2[i, b0 + jj] * k1 + k0)
            pm += wt
            pg += wt * (m - x2[i, b0 + jj])
        mass += pm
        gap += pg
    return mass, gap


@njit
def _index_row(x2, i, y, w, wsum, ignore, eps, z):
    always_inline()
    if y == ignore:
        return 0.0
    m, rest, ties = row_lse_parts(x2, i, _ONE)
    if not math.isfinite(m):
        return np.nan
    gap = _row_gap(x2, i, m, w) if eps > 0 else 0.0
    return formulas.index_loss(
        np.float64(m), np.float64(x2[i, y]), log1p_rest(rest, ties), np.float64(w[y]), wsum,
        gap, eps, z, x2.shape[1],
    )


@njit
def _exp_rest(x2, i, m, near, g2, aside):
    """g2[i, j] = exp(x2[i, j] - m) and row_rest's (rest, ties) of that row.  Rows of at
    least FUSE_CLASSES sum as they store (row_exp_sum) and take (S - 1, 1) for a sum S >= 2:
    S - 1 is exact and no term is small beside S (see _log_softmax_row); below 2, and for
    shorter rows, the stored row is summed again without the terms equal to 1.  In place
    (aside) the exponentials are taken from a copy of the row (aside_row)."""
    always_inline()
    if x2.shape[1] >= FUSE_CLASSES:
        if aside:
            total = row_exp_sum(aside_row(x2, i), i - i, m, _ONE, g2, i, near)
        else:
            total = row_exp_sum(x2, i, m, _ONE, g2, i, near)
        if total >= 2.0:
            return total - 1.0, 1.0
    elif aside:
        row_exp(aside_row(x2, i), i - i, m, _ONE, g2, i, near)
    else:
        row_exp(x2, i, m, _ONE, g2, i, near)
    return row_rest(g2, i)


@njit
def _index_grad_row(x2, i, y, w, wsum, ignore, eps, z, scale, g2, aside):
    # aside: g2 is x2 (grad_out=logits), so a fused row reads its exponentials' arguments
    # from a copy of row i (see aside_row); the same bits either way
    wide_vectors()
    always_inline()
    C = x2.shape[1]
    if y == ignore:
        row_fill(g2, i, 0.0)
        return 0.0
    m, low = row_range(x2, i)
    if not math.isfinite(m):
        row_fill(g2, i, np.nan)
        return np.nan
    xy = np.float64(x2[i, y])  # read before g2 (possibly x2 itself) is written
    gap = _row_gap(x2, i, m, w) if eps > 0 else 0.0
    rest, ties = _exp_rest(x2, i, m, near_ok(m, low, _ONE), g2, aside)
    L = log1p_rest(rest, ties)
    wy = np.float64(w[y])
    loss = formulas.index_loss(np.float64(m), xy, L, wy, wsum, gap, eps, z, C)
    lse = np.float64(m) + L
    total = rest + ties
    ey = np.float64(g2[i, y])
    a = as_type_of(scale * ((1.0 - eps) * wy + eps / C * wsum + 2.0 * z * lse) / total, g2)
    b = as_type_of(scale * eps / C, g2)
    if eps > 0:
        for j in range(C):
            g2[i, j] = g2[i, j] * a - b * w[j]
    else:
        for j in range(C):
            g2[i, j] = g2[i, j] * a
    g2[i, y] = formulas.target_entry(ey, rest, ties, scale, wy, wsum, eps, z, lse, C)
    return loss


@njit
def _prob_row(x2, t2, i, w, eps, z):
    always_inline()
    m, rest, ties = row_lse_parts(x2, i, _ONE)
    if not math.isfinite(m):
        return np.nan
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / x2.shape[1], x2)
    mass, gap = _row_target_sums(x2, t2, i, w, m, k1, k0)
    L = log1p_rest(rest, ties)
    return formulas.prob_loss(gap, L, mass, z, np.float64(m) + L)


@njit
def _prob_grad_row(x2, t2, i, w, eps, z, scale, g2, aside):
    wide_vectors()
    always_inline()
    C = x2.shape[1]
    m, low = row_range(x2, i)
    if not math.isfinite(m):
        row_fill(g2, i, np.nan)
        return np.nan
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / C, x2)
    mass, gap = _row_target_sums(x2, t2, i, w, m, k1, k0)
    rest, ties = _exp_rest(x2, i, m, near_ok(m, low, _ONE), g2, aside)
    L = log1p_rest(rest, ties)
    lse = np.float64(m) + L
    a = as_type_of(scale * (mass + 2.0 * z * lse) / (rest + ties), g2)
    c1 = as_type_of(scale * (1.0 - eps), g2)
    c0 = as_type_of(scale * eps / C, g2)
    for j in range(C):
        g2[i, j] = g2[i, j] * a - w[j] * (t2[i, j] * c1 + c0)
    return formulas.prob_loss(gap, L, mass, z, lse)


# --- row kernels ------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _index_rows(x2, y1, w, wsum, ignore, eps, z, loss1):
    # loss_n = (1 - e) w_y (lse - x_y) + e/C sum_c w_c (lse - x_c) + s lse^2  (0 if ignored)
    # gradient: _index_grad_rows
    wide_vectors()
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        loss1[i] = _index_row(x2, i, y1[i], w, wsum, ignore, eps, z)


@njit(cache=True)
def _index_rows_serial(x2, y1, w, wsum, ignore, eps, z, loss1):
    # serial twin of _index_rows, for small inputs
    wide_vectors()
    x2, y1, w, loss1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(loss1)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        loss1[i] = _index_row(x2, i, y1[i], w, wsum, ignore, eps, z)


@njit(parallel=True, cache=True)
def _index_grad_rows(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2):
    # loss_n as in _index_rows;
    # g_j = k [p_j ((1-e) w_y + e/C W + 2 s lse) - e/C w_j - (1-e) w_y [j == y]]
    wide_vectors()
    aside = same_memory(x2, g2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        loss1[i] = _index_grad_row(x2, i, y1[i], w, wsum, ignore, eps, z, scale1[i], g2,
                                   aside)


@njit(cache=True)
def _index_grad_rows_serial(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2):
    # serial twin of _index_grad_rows, for small inputs
    wide_vectors()
    x2, y1, w = borrowed(x2), borrowed(y1), borrowed(w)
    scale1, loss1, g2 = borrowed(scale1), borrowed(loss1), borrowed(g2)
    aside = same_memory(x2, g2)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        loss1[i] = _index_grad_row(x2, i, y1[i], w, wsum, ignore, eps, z, scale1[i], g2,
                                   aside)


@njit(parallel=True, cache=True)
def _prob_rows(x2, t2, w, eps, z, loss1):
    # loss_n = sum_c w_c t'_c (lse - x_c) + s lse^2,  t' = (1 - e) t + e/C
    # gradient: _prob_grad_rows
    wide_vectors()
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        prefetch_row(t2, i + 1)
        loss1[i] = _prob_row(x2, t2, i, w, eps, z)


@njit(cache=True)
def _prob_rows_serial(x2, t2, w, eps, z, loss1):
    # serial twin of _prob_rows, for small inputs
    wide_vectors()
    x2, t2, w, loss1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(loss1)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        prefetch_row(t2, i + 1)
        loss1[i] = _prob_row(x2, t2, i, w, eps, z)


@njit(parallel=True, cache=True)
def _prob_grad_rows(x2, t2, w, eps, z, scale1, loss1, g2):
    # loss_n as in _prob_rows;  g_j = k [p_j (sum_c w_c t'_c + 2 s lse) - w_j t'_j]
    wide_vectors()
    aside = same_memory(x2, g2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        prefetch_row(t2, i + 1)
        loss1[i] = _prob_grad_row(x2, t2, i, w, eps, z, scale1[i], g2, aside)


@njit(cache=True)
def _prob_grad_rows_serial(x2, t2, w, eps, z, scale1, loss1, g2):
    # serial twin of _prob_grad_rows, for small inputs
    wide_vectors()
    x2, t2, w = borrowed(x2), borrowed(t2), borrowed(w)
    scale1, loss1, g2 = borrowed(scale1), borrowed(loss1), borrowed(g2)
    aside = same_memory(x2, g2)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        prefetch_row(t2, i + 1)
        loss1[i] = _prob_grad_row(x2, t2, i, w, eps, z, scale1[i], g2, aside)


# --- row groups (short rows; see cpu/softmax.py, "row groups") ------------------------------
# The steps of _index_row, _index_grad_row, _prob_row and _prob_grad_row, G rows at a time:
# each row's range and sums, then the group's logs in one vectorised loop (log1p_rests),
# then each row's loss (and gradient).  Written out here rather than shared with the row
# functions: split into functions of their own, the row functions measured 1.3-1.5x slower
# (14 to 32 classes), and the gradient row's scaling loop as a function of its own made
# the groups 1.07-1.33x slower (10 to 64 classes).


@njit
def _index_group(x2, y1, w, wsum, ignore, eps, z, loss1, r0, g, m, rest, ties, L):
    wide_vectors()
    C = x2.shape[1]
    for q in range(g):
        i = r0 + q
        m[q], rest[q], ties[q] = 0.0, 0.0, 1.0
        if y1[i] != ignore:
            m[q], rest[q], ties[q] = row_lse_parts(x2, i, _ONE)
    log1p_rests(rest, ties, g, L)
    for q in range(g):
        i = r0 + q
        y = y1[i]
        if y == ignore:
            loss1[i] = 0.0
        elif not math.isfinite(m[q]):
            loss1[i] = np.nan
        else:
            mq = m[q]
            gap = _row_gap(x2, i, mq, w) if eps > 0 else 0.0
            loss1[i] = formulas.index_loss(np.float64(mq), np.float64(x2[i, y]), L[q],
                                           np.float64(w[y]), wsum, gap, eps, z, C)


@njit(parallel=True, cache=True)
def _index_groups(x2, y1, w, wsum, ignore, eps, z, loss1, G):
    # _index_rows, G rows at a time
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _index_group(x2, y1, w, wsum, ignore, eps, z, loss1, r0, g, m, rest, ties, L)


@njit(cache=True)
def _index_groups_serial(x2, y1, w, wsum, ignore, eps, z, loss1, G):
    # serial twin of _index_groups, for small inputs
    wide_vectors()
    x2, y1, w, loss1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(loss1)
    N = x2.shape[0]
    m, rest, ties, L = group_scratch(min(G, N), x2)  # a small input's is smaller
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _index_group(x2, y1, w, wsum, ignore, eps, z, loss1, r0, g, m, rest, ties, L)


@njit
def _index_grad_group(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, aside, r0, g, m, xy,
                      gap, rest, ties, L):
    wide_vectors()
    C = x2.shape[1]
    for q in range(g):
        i = r0 + q
        y = y1[i]
        m[q], rest[q], ties[q] = 0.0, 0.0, 1.0
        if y == ignore:
            row_fill(g2, i, 0.0)
            continue
        mq, low = row_range(x2, i)
        m[q] = mq
        if not math.isfinite(mq):
            row_fill(g2, i, np.nan)
            continue
        xy[q] = np.float64(x2[i, y])  # read before g2 (possibly x2 itself) is written
        gap[q] = _row_gap(x2, i, mq, w) if eps > 0 else 0.0
        rest[q], ties[q] = _exp_rest(x2, i, mq, near_ok(mq, low, _ONE), g2, aside)
    log1p_rests(rest, ties, g, L)
    for q in range(g):
        i = r0 + q
        y = y1[i]
        if y == ignore:
            loss1[i] = 0.0
            continue
        if not math.isfinite(m[q]):
            loss1[i] = np.nan
            continue
        scale = scale1[i]
        wy = np.float64(w[y])
        mq = np.float64(m[q])
        loss1[i] = formulas.index_loss(mq, xy[q], L[q], wy, wsum, gap[q], eps, z, C)
        lse = mq + L[q]
        ey = np.float64(g2[i, y])
        a = as_type_of(scale * ((1.0 - eps) * wy + eps / C * wsum + 2.0 * z * lse)
                       / (rest[q] + ties[q]), g2)
        b = as_type_of(scale * eps / C, g2)
        if eps > 0:
            for j in range(C):
                g2[i, j] = g2[i, j] * a - b * w[j]
        else:
            for j in range(C):
                g2[i, j] = g2[i, j] * a
        g2[i, y] = formulas.target_entry(ey, rest[q], ties[q], scale, wy, wsum, eps, z, lse, C)


@njit(parallel=True, cache=True)
def _index_grad_groups(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, G):
    # _index_grad_rows, G rows at a time
    wide_vectors()
    aside = same_memory(x2, g2)
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _index_grad_group(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, aside, r0, g, m,
                          np.empty(G, np.float64), np.empty(G, np.float64), rest, ties, L)


@njit(cache=True)
def _index_grad_groups_serial(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, G):
    # serial twin of _index_grad_groups, for small inputs
    wide_vectors()
    x2, y1, w = borrowed(x2), borrowed(y1), borrowed(w)
    scale1, loss1, g2 = borrowed(scale1), borrowed(loss1), borrowed(g2)
    aside = same_memory(x2, g2)
    N = x2.shape[0]
    n = min(G, N)  # a small input's scratch is smaller
    m, rest, ties, L = group_scratch(n, x2)
    xy = np.empty(n, np.float64)
    gap = np.empty(n, np.float64)
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _index_grad_group(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, aside, r0, g, m,
                          xy, gap, rest, ties, L)


@njit
def _prob_group(x2, t2, w, eps, z, loss1, r0, g, m, rest, ties, L, mass, gap):
    wide_vectors()
    C = x2.shape[1]
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / C, x2)
    for q in range(g):
        i = r0 + q
        m[q], rest[q], ties[q] = row_lse_parts(x2, i, _ONE)
        mass[q], gap[q] = 0.0, 0.0
        if math.isfinite(m[q]):
            mass[q], gap[q] = _row_target_sums(x2, t2, i, w, m[q], k1, k0)
    log1p_rests(rest, ties, g, L)
    for q in range(g):
        i = r0 + q
        if not math.isfinite(m[q]):
            loss1[i] = np.nan
        else:
            loss1[i] = formulas.prob_loss(gap[q], L[q], mass[q], z, np.float64(m[q]) + L[q])


@njit(parallel=True, cache=True)
def _prob_groups(x2, t2, w, eps, z, loss1, G):
    # _prob_rows, G rows at a time
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _prob_group(x2, t2, w, eps, z, loss1, r0, g, m, rest, ties, L,
                    np.empty(G, np.float64), np.empty(G, np.float64))


@njit(cache=True)
def _prob_groups_serial(x2, t2, w, eps, z, loss1, G):
    # serial twin of _prob_groups, for small inputs
    wide_vectors()
    x2, t2, w, loss1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(loss1)
    N = x2.shape[0]
    n = min(G, N)  # a small input's scratch is smaller
    m, rest, ties, L = group_scratch(n, x2)
    mass = np.empty(n, np.float64)
    gap = np.empty(n, np.float64)
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _prob_group(x2, t2, w, eps, z, loss1, r0, g, m, rest, ties, L, mass, gap)


@njit
def _prob_grad_group(x2, t2, w, eps, z, scale1, loss1, g2, aside, r0, g, m, rest, ties, L,
                     mass, gap):
    wide_vectors()
    C = x2.shape[1]
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / C, x2)
    for q in range(g):
        i = r0 + q
        mq, low = row_range(x2, i)
        m[q] = mq
        rest[q], ties[q], mass[q], gap[q] = 0.0, 1.0, 0.0, 0.0
        if not math.isfinite(mq):
            row_fill(g2, i, np.nan)
            continue
        mass[q], gap[q] = _row_target_sums(x2, t2, i, w, mq, k1, k0)  # before g2 is written
        rest[q], ties[q] = _exp_rest(x2, i, mq, near_ok(mq, low, _ONE), g2, aside)
    log1p_rests(rest, ties, g, L)
    for q in range(g):
        i = r0 + q
        if not math.isfinite(m[q]):
            loss1[i] = np.nan
            continue
        scale = scale1[i]
        lse = np.float64(m[q]) + L[q]
        a = as_type_of(scale * (mass[q] + 2.0 * z * lse) / (rest[q] + ties[q]), g2)
        c1 = as_type_of(scale * (1.0 - eps), g2)
        c0 = as_type_of(scale * eps / C, g2)
        for j in range(C):
            g2[i, j] = g2[i, j] * a - w[j] * (t2[i, j] * c1 + c0)
        loss1[i] = formulas.prob_loss(gap[q], L[q], mass[q], z, lse)


@njit(parallel=True, cache=True)
def _prob_grad_groups(x2, t2, w, eps, z, scale1, loss1, g2, G):
    # _prob_grad_rows, G rows at a time
    wide_vectors()
    aside = same_memory(x2, g2)
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _prob_grad_group(x2, t2, w, eps, z, scale1, loss1, g2, aside, r0, g, m, rest, ties, L,
                         np.empty(G, np.float64), np.empty(G, np.float64))


@njit(cache=True)
def _prob_grad_groups_serial(x2, t2, w, eps, z, scale1, loss1, g2, G):
    # serial twin of _prob_grad_groups, for small inputs
    wide_vectors()
    x2, t2, w = borrowed(x2), borrowed(t2), borrowed(w)
    scale1, loss1, g2 = borrowed(scale1), borrowed(loss1), borrowed(g2)
    aside = same_memory(x2, g2)
    N = x2.shape[0]
    n = min(G, N)  # a small input's scratch is smaller
    m, rest, ties, L = group_scratch(n, x2)
    mass = np.empty(n, np.float64)
    gap = np.empty(n, np.float64)
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _prob_grad_group(x2, t2, w, eps, z, scale1, loss1, g2, aside, r0, g, m, rest, ties, L,
                         mass, gap)


# --- short rows as vectors (class indices) --------------------------------------------------
# Rows of at most SHORT_ROW_BYTES (64 float32, 32 float64 classes) with class-index targets
# take each row as vectors (cpu/softmax.py, "short rows as vectors"), SHORT_GROUP rows at a
# time: each row's range, sums and smoothing sum (short_lse_gap; with the gradient its
# exponentials stored too), the group's logarithms in one vectorised loop (log1p_rests),
# then each row's loss (and gradient: short_affine, then the target's entry).  The row
# tiles, which took these rows until session 27, spent much of their time transposing.  A
# row's bits do not depend on the rows around it, the threads, or whether the gradient is
# written in place.


@njit
def _short_args(x2, w):
    # (p, k, w2) of the short-row kernels: short_exp_args at temperature 1, short_chunks'
    # code, the weights as a (1, classes) row for the intrinsics
    return short_exp_args(_ONE, x2), short_chunks(x2.shape[1], x2.itemsize), w.reshape(
        1, x2.shape[1])


@njit(error_model="numpy")
def _index_short_losses(y1, wsum, ignore, eps, z, loss1, C, r0, g, m, L, gap, xy, wy):
    # loss1[r0 + q] of the group's rows from their m, L, gap, x_y (xy) and w_y (wy), in one
    # loop that vectorises (no gather, no branch: an ignored row's loss, of whatever its
    # scratch holds, is selected away)
    wide_vectors()
    for q in range(g):
        i = r0 + q
        mq = np.float64(m[q])
        loss = formulas.index_loss(mq, xy[q], L[q], np.float64(wy[q]), wsum,
                                   np.float64(gap[q]), eps, z, C)
        loss1[i] = (loss if math.isfinite(mq) else np.nan) if y1[i] != ignore else 0.0


@njit
def _index_short_group(x2, y1, w, w2, wsum, ignore, eps, z, loss1, p, k, r0, g, m, rest, ties,
                       L, gap, xy, wy):
    wide_vectors()
    for q in range(g):
        i = r0 + q
        y = y1[i]
        m[q], rest[q], ties[q] = 0.0, 0.0, 1.0
        if y != ignore:
            wy[q] = w[y]
            m[q], rest[q], ties[q], gap[q], xy[q], _ = short_lse_gap(x2, x2, w2, i, y, p, k,
                                                                     eps > 0, False)
    log1p_rests(rest, ties, g, L)
    _index_short_losses(y1, wsum, ignore, eps, z, loss1, x2.shape[1], r0, g, m, L, gap, xy, wy)


@njit(parallel=True, cache=True)
def _index_short(x2, y1, w, wsum, ignore, eps, z, loss1):
    # _index_rows for short rows, SHORT_GROUP rows at a time as vectors
    wide_vectors()
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        gap, wy, _, xy = short_scratch(x2)
        _index_short_group(x2, y1, w, w2, wsum, ignore, eps, z, loss1, p, k, r0, g, m, rest,
                           ties, L, gap, xy, wy)


@njit(cache=True)
def _index_short_serial(x2, y1, w, wsum, ignore, eps, z, loss1):
    # serial twin of _index_short, for small inputs
    wide_vectors()
    x2, y1, w, loss1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(loss1)
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    gap, wy, _, xy = short_scratch(x2)
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _index_short_group(x2, y1, w, w2, wsum, ignore, eps, z, loss1, p, k, r0, g, m, rest,
                           ties, L, gap, xy, wy)


@njit(error_model="numpy")
def _index_grad_short_coefs(wsum, eps, z, scale1, C, r0, g, m, rest, ties, L, wy, a, e):
    # per row of the group: a[q], the factor of its stored exponentials, and e[q], its
    # target's entry (formulas.target_entry, from the stored e_y that e[q] holds), in one
    # loop that vectorises (as _index_short_losses)
    wide_vectors()
    for q in range(g):
        wq = np.float64(wy[q])
        r, s = np.float64(rest[q]), np.float64(ties[q])
        lse = np.float64(m[q]) + L[q]
        sc = scale1[r0 + q]
        a[q] = as_type_of(sc * ((1.0 - eps) * wq + eps / C * wsum + 2.0 * z * lse) / (r + s), a)
        e[q] = formulas.target_entry(e[q], r, s, sc, wq, wsum, eps, z, lse, C)


@njit
def _index_grad_short_group(x2, y1, w, w2, wsum, ignore, eps, z, scale1, loss1, g2, p, k, r0,
                            g, m, rest, ties, L, gap, xy, wy, a, e):
    wide_vectors()
    C = x2.shape[1]
    for q in range(g):
        i = r0 + q
        y = y1[i]
        m[q], rest[q], ties[q] = 0.0, 0.0, 1.0
        if y == ignore:
            row_fill(g2, i, 0.0)
            continue
        wy[q] = w[y]
        m[q], rest[q], ties[q], gap[q], xy[q], e[q] = short_lse_gap(x2, g2, w2, i, y, p, k,
                                                                    eps > 0, True)
    log1p_rests(rest, ties, g, L)
    _index_short_losses(y1, wsum, ignore, eps, z, loss1, C, r0, g, m, L, gap, xy, wy)
    _index_grad_short_coefs(wsum, eps, z, scale1, C, r0, g, m, rest, ties, L, wy, a, e)
    for q in range(g):
        i = r0 + q
        y = y1[i]
        if y != ignore and math.isfinite(m[q]):  # else the row is 0 or NaN already
            short_affine(g2, w2, i, a[q], as_type_of(scale1[i] * eps / C, g2), k)
            g2[i, y] = e[q]


@njit(parallel=True, cache=True)
def _index_grad_short(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2):
    # _index_grad_rows for short rows, SHORT_GROUP rows at a time as vectors
    wide_vectors()
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        gap, wy, a, xy = short_scratch(x2)
        e = short_scratch(x2)[3]
        _index_grad_short_group(x2, y1, w, w2, wsum, ignore, eps, z, scale1, loss1, g2, p, k,
                                r0, g, m, rest, ties, L, gap, xy, wy, a, e)


@njit(cache=True)
def _index_grad_short_serial(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2):
    # serial twin of _index_grad_short, for small inputs
    wide_vectors()
    x2, y1, w, scale1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(scale1)
    loss1, g2 = borrowed(loss1), borrowed(g2)
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    gap, wy, a, xy = short_scratch(x2)
    e = short_scratch(x2)[3]
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _index_grad_short_group(x2, y1, w, w2, wsum, ignore, eps, z, scale1, loss1, g2, p, k,
                                r0, g, m, rest, ties, L, gap, xy, wy, a, e)


# --- short rows as vectors (probability targets) ----------------------------------------------
# As the class indices' above: each row's range, sums and target sums (short_prob_sums; with
# the gradient its exponentials stored too), the group's logarithms, then in loops that
# vectorise the losses and the gradient's factors, and each row's gradient (short_prob_affine).


@njit(error_model="numpy")
def _prob_short_losses(loss1, z, r0, g, m, L, mass, gap):
    # loss1[r0 + q] of the group's rows from their m, L, mass and gap (formulas.prob_loss),
    # in one loop that vectorises; NaN where m is not finite
    wide_vectors()
    for q in range(g):
        mq = np.float64(m[q])
        lse = mq + L[q]
        loss = formulas.prob_loss(np.float64(gap[q]), L[q], np.float64(mass[q]), z, lse)
        loss1[r0 + q] = loss if math.isfinite(mq) else np.nan


@njit
def _prob_short_group(x2, t2, w2, eps, z, loss1, p, k, r0, g, m, rest, ties, L, mass, gap):
    wide_vectors()
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / x2.shape[1], x2)
    for q in range(g):
        m[q], rest[q], ties[q], mass[q], gap[q] = short_prob_sums(x2, t2, x2, w2, r0 + q, p, k,
                                                                  k1, k0, False)
    log1p_rests(rest, ties, g, L)
    _prob_short_losses(loss1, z, r0, g, m, L, mass, gap)


@njit(parallel=True, cache=True)
def _prob_short(x2, t2, w, eps, z, loss1):
    # _prob_rows for short rows, SHORT_GROUP rows at a time as vectors
    wide_vectors()
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        mass, gap, _, _ = short_scratch(x2)
        _prob_short_group(x2, t2, w2, eps, z, loss1, p, k, r0, g, m, rest, ties, L, mass, gap)


@njit(cache=True)
def _prob_short_serial(x2, t2, w, eps, z, loss1):
    # serial twin of _prob_short, for small inputs
    wide_vectors()
    x2, t2, w, loss1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(loss1)
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    mass, gap, _, _ = short_scratch(x2)
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _prob_short_group(x2, t2, w2, eps, z, loss1, p, k, r0, g, m, rest, ties, L, mass, gap)


@njit(error_model="numpy")
def _prob_grad_short_coefs(z, scale1, r0, g, m, rest, ties, L, mass, a):
    # a[q], the factor of row q's stored exponentials, in one loop that vectorises
    wide_vectors()
    for q in range(g):
        lse = np.float64(m[q]) + L[q]
        a[q] = as_type_of(scale1[r0 + q] * (np.float64(mass[q]) + 2.0 * z * lse)
                          / (np.float64(rest[q]) + np.float64(ties[q])), a)


@njit
def _prob_grad_short_group(x2, t2, w2, eps, z, scale1, loss1, g2, p, k, r0, g, m, rest, ties,
                           L, mass, gap, a):
    wide_vectors()
    C = x2.shape[1]
    k1 = as_type_of(1.0 - eps, x2)
    k0 = as_type_of(eps / C, x2)
    for q in range(g):
        m[q], rest[q], ties[q], mass[q], gap[q] = short_prob_sums(x2, t2, g2, w2, r0 + q, p, k,
                                                                  k1, k0, True)
    log1p_rests(rest, ties, g, L)
    _prob_short_losses(loss1, z, r0, g, m, L, mass, gap)
    _prob_grad_short_coefs(z, scale1, r0, g, m, rest, ties, L, mass, a)
    for q in range(g):
        i = r0 + q
        if math.isfinite(m[q]):  # else the row is NaN already
            sc = scale1[i]
            short_prob_affine(g2, t2, w2, i, a[q], as_type_of(sc * (1.0 - eps), g2),
                              as_type_of(sc * eps / C, g2), k)


@njit(parallel=True, cache=True)
def _prob_grad_short(x2, t2, w, eps, z, scale1, loss1, g2):
    # _prob_grad_rows for short rows, SHORT_GROUP rows at a time as vectors
    wide_vectors()
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        mass, gap, a, _ = short_scratch(x2)
        _prob_grad_short_group(x2, t2, w2, eps, z, scale1, loss1, g2, p, k, r0, g, m, rest,
                               ties, L, mass, gap, a)


@njit(cache=True)
def _prob_grad_short_serial(x2, t2, w, eps, z, scale1, loss1, g2):
    # serial twin of _prob_grad_short, for small inputs
    wide_vectors()
    x2, t2, w, scale1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(scale1)
    loss1, g2 = borrowed(loss1), borrowed(g2)
    p, k, w2 = _short_args(x2, w)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    mass, gap, a, _ = short_scratch(x2)
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _prob_grad_short_group(x2, t2, w2, eps, z, scale1, loss1, g2, p, k, r0, g, m, rest,
                               ties, L, mass, gap, a)


# --- lane pieces (classes strided) -------------------------------------------------------------
# A lane block is x3[o, :, i0:i0 + w]: the same sums as the row pieces, one per lane, with
# per-lane coefficients; lanes whose maximum is not finite end up NaN, ignored lanes 0.


@njit(fastmath=_REDUCE)
def _lane_gap_row(x3, o, j, i0, m, wj, part):
    # part[k] += w_j (m[k] - x3[o, j, i0 + k]) for class row j (prefetching row j + AHEAD).
    # Lane loops run over uint64 k (see cpu/_math.py), one class row per call.
    wide_vectors()
    n = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, n)
    for k in range(n):
        part[k] += wj * (m[k] - x3[o, j, i0 + k])


@njit(fastmath=_REDUCE)
def _lanes_gap(x3, o, i0, m, w, gap):
    """gap[k] = sum_j w_j (m[k] - x3[o, j, i0 + k]) in float64."""
    wide_vectors()
    n = uint64(m.shape[0])
    part = np.empty(n, x3.dtype)
    for k in range(n):
        gap[k] = 0.0
    for b0 in range(0, x3.shape[1], LANE_BLOCK):
        for k in range(n):
            part[k] = 0.0
        for j in range(b0, min(b0 + LANE_BLOCK, x3.shape[1])):
            _lane_gap_row(x3, o, j, i0, m, w[j], part)
        for k in range(n):
            gap[k] += part[k]


@njit(fastmath=_REDUCE)
def _lane_target_row(x3, t3, o, j, i0, m, wj, k1, k0, pm, pg):
    # pm[k] += w_j t'_jk, pg[k] += w_j t'_jk (m[k] - x_jk) for class row j
    wide_vectors()
    n = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, n)
    prefetch_lanes(t3, o, j + AHEAD, i0, n)
    for k in range(n):
        wt = wj * (t3[o, j, i0 + k] * k1 + k0)
        pm[k] += wt
        pg[k] += wt * (m[k] - x3[o, j, i0 + k])


@njit(fastmath=_REDUCE)
def _lanes_target_sums(x3, t3, o, i0, m, w, k1, k0, mass, gap):
    """mass[k] = sum_j w_j t'_jk, gap[k] = sum_j w_j t'_jk (m[k] - x_jk), t' = k1 t + k0."""
    wide_vectors()
    n = uint64(m.shape[0])
    pm = np.empty(n, x3.dtype)
    pg = np.empty(n, x3.dtype)
    for k in range(n):
        mass[k] = 0.0
        gap[k] = 0.0
    for b0 in range(0, x3.shape[1], LANE_BLOCK):
        for k in range(n):
            pm[k] = 0.0
            pg[k] = 0.0
        for j in range(b0, min(b0 + LANE_BLOCK, x3.shape[1])):
            _lane_target_row(x3, t3, o, j, i0, m, w[j], k1, k0, pm, pg)
        for k in range(n):
            mass[k] += pm[k]
            gap[k] += pg[k]


@njit(fastmath=_REDUCE)
def _index_grad_lane_row(g3, o, j, i0, a, sb, wj, live, zero):
    # g_jk = g_jk a[k] - sb[k] w_j (0 for ignored lanes) for class row j
    wide_vectors()
    n = uint64(a.shape[0])
    prefetch_lanes(g3, o, j + AHEAD, i0, n)
    for k in range(n):
        v = g3[o, j, i0 + k] * a[k] - sb[k] * wj
        g3[o, j, i0 + k] = v if live[k] else zero


@njit(fastmath=_REDUCE)
def _prob_grad_lane_row(g3, t3, o, j, i0, a, wj, c1, c0):
    # g_jk = g_jk a[k] - w_j (t_jk c1[k] + c0[k]) for class row j
    wide_vectors()
    n = uint64(a.shape[0])
    prefetch_lanes(g3, o, j + AHEAD, i0, n)
    prefetch_lanes(t3, o, j + AHEAD, i0, n)
    for k in range(n):
        g3[o, j, i0 + k] = g3[o, j, i0 + k] * a[k] - wj * (t3[o, j, i0 + k] * c1[k] + c0[k])


@njit
def _index_lane_block(x3, y2, w, wsum, ignore, eps, z, loss2, o, i0, n):
    wide_vectors()
    C = x3.shape[1]
    m = np.empty(n, x3.dtype)
    rest = np.empty(n, np.float64)
    ties = np.empty(n, np.float64)
    gap = np.zeros(n, np.float64)
    near = lanes_range(x3, o, i0, m, np.empty(n, x3.dtype), _ONE)
    lanes_sumexp(x3, o, i0, m, _ONE, rest, ties, near)
    if eps > 0:
        _lanes_gap(x3, o, i0, m, w, gap)
    L = lanes_log1p(rest, ties)
    for k in range(n):
        y = y2[o, i0 + k]
        if y == ignore:
            loss2[o, i0 + k] = 0.0
        elif not math.isfinite(m[k]):
            loss2[o, i0 + k] = np.nan
        else:
            loss2[o, i0 + k] = formulas.index_loss(
                np.float64(m[k]), np.float64(x3[o, y, i0 + k]), L[k], np.float64(w[y]), wsum,
                gap[k], eps, z, C,
            )


@njit
def _index_grad_lane_block(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, o, i0, n):
    wide_vectors()
    C = x3.shape[1]
    m = np.empty(n, x3.dtype)
    rest = np.empty(n, np.float64)
    ties = np.empty(n, np.float64)
    gap = np.zeros(n, np.float64)
    xy = np.empty(n, np.float64)
    near = lanes_range(x3, o, i0, m, np.empty(n, x3.dtype), _ONE)
    for k in range(n):  # read before g3 (possibly x3 itself) is written
        y = y2[o, i0 + k]
        xy[k] = x3[o, y, i0 + k] if y != ignore else 0.0
    if eps > 0:
        _lanes_gap(x3, o, i0, m, w, gap)
    lanes_exp(x3, o, i0, m, _ONE, g3, near, same_memory(x3, g3))
    lanes_rest(g3, o, i0, rest, ties)
    a = np.empty(n, g3.dtype)
    live = np.empty(n, np.bool_)
    L = lanes_log1p(rest, ties)
    for k in range(n):
        y = y2[o, i0 + k]
        sc = scale2[o, i0 + k]
        live[k] = y != ignore
        if not live[k]:
            loss2[o, i0 + k] = 0.0
            a[k] = 0.0
        elif not math.isfinite(m[k]):
            loss2[o, i0 + k] = np.nan
            a[k] = np.nan
        else:
            wy = np.float64(w[y])
            mk = np.float64(m[k])
            loss2[o, i0 + k] = formulas.index_loss(mk, xy[k], L[k], wy, wsum, gap[k], eps, z, C)
            lse = mk + L[k]
            a[k] = sc * ((1.0 - eps) * wy + eps / C * wsum + 2.0 * z * lse) / (rest[k] + ties[k])
    ey = np.empty(n, np.float64)
    for k in range(n):
        y = y2[o, i0 + k]
        ey[k] = g3[o, y, i0 + k] if live[k] else 0.0
    zero = as_type_of(0.0, g3)
    sb = np.empty(n, g3.dtype)
    for k in range(n):
        sb[k] = scale2[o, i0 + k] * eps / C
    for j in range(C):
        _index_grad_lane_row(g3, o, j, i0, a, sb, w[j], live, zero)
    for k in range(n):
        y = y2[o, i0 + k]
        if live[k] and math.isfinite(m[k]):
            g3[o, y, i0 + k] = formulas.target_entry(
                ey[k], rest[k], ties[k], scale2[o, i0 + k], np.float64(w[y]), wsum, eps, z,
                np.float64(m[k]) + L[k], C,
            )


@njit
def _prob_lane_block(x3, t3, w, eps, z, loss2, o, i0, n):
    wide_vectors()
    C = x3.shape[1]
    m = np.empty(n, x3.dtype)
    rest = np.empty(n, np.float64)
    ties = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    gap = np.empty(n, np.float64)
    near = lanes_range(x3, o, i0, m, np.empty(n, x3.dtype), _ONE)
    k1 = as_type_of(1.0 - eps, x3)
    k0 = as_type_of(eps / C, x3)
    _lanes_target_sums(x3, t3, o, i0, m, w, k1, k0, mass, gap)
    lanes_sumexp(x3, o, i0, m, _ONE, rest, ties, near)
    L = lanes_log1p(rest, ties)
    for k in range(n):
        if not math.isfinite(m[k]):
            loss2[o, i0 + k] = np.nan
        else:
            loss2[o, i0 + k] = formulas.prob_loss(gap[k], L[k], mass[k], z,
                                                  np.float64(m[k]) + L[k])


@njit
def _prob_grad_lane_block(x3, t3, w, eps, z, scale2, loss2, g3, o, i0, n):
    wide_vectors()
    C = x3.shape[1]
    m = np.empty(n, x3.dtype)
    rest = np.empty(n, np.float64)
    ties = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    gap = np.empty(n, np.float64)
    near = lanes_range(x3, o, i0, m, np.empty(n, x3.dtype), _ONE)
    k1 = as_type_of(1.0 - eps, x3)
    k0 = as_type_of(eps / C, x3)
    _lanes_target_sums(x3, t3, o, i0, m, w, k1, k0, mass, gap)
    lanes_exp(x3, o, i0, m, _ONE, g3, near, same_memory(x3, g3))
    lanes_rest(g3, o, i0, rest, ties)
    a = np.empty(n, g3.dtype)
    c1 = np.empty(n, g3.dtype)
    c0 = np.empty(n, g3.dtype)
    L = lanes_log1p(rest, ties)
    for k in range(n):
        sc = scale2[o, i0 + k]
        c1[k] = sc * (1.0 - eps)
        c0[k] = sc * eps / C
        if not math.isfinite(m[k]):
            loss2[o, i0 + k] = np.nan
            a[k] = np.nan
        else:
            lse = np.float64(m[k]) + L[k]
            loss2[o, i0 + k] = formulas.prob_loss(gap[k], L[k], mass[k], z, lse)
            a[k] = sc * (mass[k] + 2.0 * z * lse) / (rest[k] + ties[k])
    for j in range(C):
        _prob_grad_lane_row(g3, t3, o, j, i0, a, w[j], c1, c0)


# --- row tiles (short rows as lanes) ----------------------------------------------------
# (softmax, log_softmax and logsumexp took them too until session 24, and now take their
# short rows as vectors: cpu/softmax.py, "short rows as vectors".)
# A row of a few classes is a chain of dependent steps (its maximum, its exponentials and
# their sum, a division, the scaling) too short to keep a core busy: a 32-class float32
# softmax row took 60-80 ns, most of it waiting on that chain, whatever the row kernels'
# loops did.  The lane kernels have no such chain per row: each step runs over all lanes
# at once, one vector of lanes per class.  So rows of at most TILE_ROW_BYTES
# (cpu/__init__.py) are transposed R at a time (tile_width_for: up to TILE_BYTES a tile)
# into the lanes of a (classes, R) tile (rows_to_lanes, in transpose_block's 16 x 16
# blocks), go through the lane kernel's block, and are transposed back (lanes_to_rows).
# Single-threaded against the row kernels (float32, emeraldrapids), tiles of 128 rows,
# which the wider tiles now taken beat (see TILE_BYTES): softmax 0.32 of the time at 10
# classes, 0.41 at 16, 0.58 at 32 (1.4 at 64); log_softmax 0.37, 0.53, 0.73; logsumexp,
# against the row groups, 0.37, 0.54, 0.58.  Up to 63 float32 classes (31 float64) the row
# kernels' loops run scalar, and tiles took 0.54-0.97 of their time (see TILE_ROW_BYTES);
# at 64 classes a row is one vector iteration, and stays.  The backward functions, whose
# rows wait on no exponentials, keep their row kernels: in tiles of 128 rows
# softmax_backward took 0.96-1.65x the time, and log_softmax_backward 0.61x at 10 classes
# but 1.56x at 32 (2 threads).  A row's results are the lane kernels' arithmetic (the same
# bits as the row taken along axis 0), whatever the number of rows, threads, the tiles'
# width or the tile it falls in.
# The rows of a tile, transposed into its lanes, go through the lane blocks above; their
# per-sample arrays (targets, scales, losses) are sliced to the tile (lanes_of), and the
# probability targets are transposed alongside.  Against the row groups (float32, 2
# threads, emeraldrapids, index targets with the gradient): 0.49 of the time at 10
# classes, 0.64 at 16, 0.87 at 32.  Since session 27 only rows of at most
# SHORT_CE_GRAD_MIN_BYTES with the gradient, SHORT_CE_LOSS_MIN_BYTES without, take the
# tiles; longer ones take their rows as vectors (cpu/__init__.py; "short rows as vectors"
# above).


@njit
def _index_tile(x2, y1, w, wsum, ignore, eps, z, loss1, r0, T):
    wide_vectors()
    g = rows_to_lanes(x2, r0, T)
    _index_lane_block(T, lanes_of(y1, r0, g), w, wsum, ignore, eps, z, lanes_of(loss1, r0, g),
                      0, uint64(0), uint64(g))


@njit(parallel=True, cache=True)
def _index_tiles(x2, y1, w, wsum, ignore, eps, z, loss1, R):
    # _index_rows for short rows, R rows at a time as lanes
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + R - 1) // R):
        wide_vectors()
        _index_tile(x2, y1, w, wsum, ignore, eps, z, loss1, t * R, tile(N, R, x2))


@njit(cache=True)
def _index_tiles_serial(x2, y1, w, wsum, ignore, eps, z, loss1, R):
    # serial twin of _index_tiles, for small inputs
    wide_vectors()
    x2, y1, w, loss1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(loss1)
    N = x2.shape[0]
    T = tile(N, R, x2)
    for t in range((N + R - 1) // R):
        _index_tile(x2, y1, w, wsum, ignore, eps, z, loss1, t * R, T)


@njit
def _index_grad_tile(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, r0, T, U):
    wide_vectors()
    g = rows_to_lanes(x2, r0, T)
    _index_grad_lane_block(T, lanes_of(y1, r0, g), w, wsum, ignore, eps, z,
                           lanes_of(scale1, r0, g), lanes_of(loss1, r0, g), U, 0, uint64(0),
                           uint64(g))
    lanes_to_rows(U, g2, r0, g)


@njit(parallel=True, cache=True)
def _index_grad_tiles(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, R):
    # _index_grad_rows for short rows, R rows at a time as lanes
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + R - 1) // R):
        wide_vectors()
        _index_grad_tile(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, t * R,
                         tile(N, R, x2), tile(N, R, x2))


@njit(cache=True)
def _index_grad_tiles_serial(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, R):
    # serial twin of _index_grad_tiles, for small inputs
    wide_vectors()
    x2, y1, w, scale1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(scale1)
    loss1, g2 = borrowed(loss1), borrowed(g2)
    N = x2.shape[0]
    T, U = tile(N, R, x2), tile(N, R, x2)
    for t in range((N + R - 1) // R):
        _index_grad_tile(x2, y1, w, wsum, ignore, eps, z, scale1, loss1, g2, t * R,
                         T, U)


@njit
def _prob_tile(x2, t2, w, eps, z, loss1, r0, T, P):
    wide_vectors()
    g = rows_to_lanes(x2, r0, T)
    rows_to_lanes(t2, r0, P)
    _prob_lane_block(T, P, w, eps, z, lanes_of(loss1, r0, g), 0, uint64(0), uint64(g))


@njit(parallel=True, cache=True)
def _prob_tiles(x2, t2, w, eps, z, loss1, R):
    # _prob_rows for short rows, R rows at a time as lanes
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + R - 1) // R):
        wide_vectors()
        _prob_tile(x2, t2, w, eps, z, loss1, t * R, tile(N, R, x2), tile(N, R, x2))


@njit(cache=True)
def _prob_tiles_serial(x2, t2, w, eps, z, loss1, R):
    # serial twin of _prob_tiles, for small inputs
    wide_vectors()
    x2, t2, w, loss1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(loss1)
    N = x2.shape[0]
    T, P = tile(N, R, x2), tile(N, R, x2)
    for t in range((N + R - 1) // R):
        _prob_tile(x2, t2, w, eps, z, loss1, t * R, T, P)


@njit
def _prob_grad_tile(x2, t2, w, eps, z, scale1, loss1, g2, r0, T, P, U):
    wide_vectors()
    g = rows_to_lanes(x2, r0, T)
    rows_to_lanes(t2, r0, P)
    _prob_grad_lane_block(T, P, w, eps, z, lanes_of(scale1, r0, g), lanes_of(loss1, r0, g), U,
                          0, uint64(0), uint64(g))
    lanes_to_rows(U, g2, r0, g)


@njit(parallel=True, cache=True)
def _prob_grad_tiles(x2, t2, w, eps, z, scale1, loss1, g2, R):
    # _prob_grad_rows for short rows, R rows at a time as lanes
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + R - 1) // R):
        wide_vectors()
        _prob_grad_tile(x2, t2, w, eps, z, scale1, loss1, g2, t * R, tile(N, R, x2),
                        tile(N, R, x2), tile(N, R, x2))


@njit(cache=True)
def _prob_grad_tiles_serial(x2, t2, w, eps, z, scale1, loss1, g2, R):
    # serial twin of _prob_grad_tiles, for small inputs
    wide_vectors()
    x2, t2, w, scale1 = borrowed(x2), borrowed(t2), borrowed(w), borrowed(scale1)
    loss1, g2 = borrowed(loss1), borrowed(g2)
    N = x2.shape[0]
    T, P, U = tile(N, R, x2), tile(N, R, x2), tile(N, R, x2)
    for t in range((N + R - 1) // R):
        _prob_grad_tile(x2, t2, w, eps, z, scale1, loss1, g2, t * R, T, P, U)


# --- lane kernels -----------------------------------------------------------------------------
# Task t covers outer index o and lanes [i0, i0 + n) (``lane_block``; i0 and n unsigned).


@njit(parallel=True, cache=True)
def _index_lanes(x3, y2, w, wsum, ignore, eps, z, loss2, width):
    # loss as in _index_rows, class axis strided
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _index_lane_block(x3, y2, w, wsum, ignore, eps, z, loss2, o, i0, n)


@njit(cache=True)
def _index_lanes_serial(x3, y2, w, wsum, ignore, eps, z, loss2, width):
    # serial twin of _index_lanes, for small inputs
    wide_vectors()
    x3, y2, w, loss2 = borrowed(x3), borrowed(y2), borrowed(w), borrowed(loss2)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _index_lane_block(x3, y2, w, wsum, ignore, eps, z, loss2, o, i0, n)


@njit(parallel=True, cache=True)
def _index_grad_lanes(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, width):
    # loss and gradient as in _index_grad_rows, class axis strided
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _index_grad_lane_block(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, o, i0,
                               n)


@njit(cache=True)
def _index_grad_lanes_serial(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, width):
    # serial twin of _index_grad_lanes, for small inputs
    wide_vectors()
    x3, y2, w = borrowed(x3), borrowed(y2), borrowed(w)
    scale2, loss2, g3 = borrowed(scale2), borrowed(loss2), borrowed(g3)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _index_grad_lane_block(x3, y2, w, wsum, ignore, eps, z, scale2, loss2, g3, o, i0,
                               n)


@njit(parallel=True, cache=True)
def _prob_lanes(x3, t3, w, eps, z, loss2, width):
    # loss as in _prob_rows, class axis strided
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _prob_lane_block(x3, t3, w, eps, z, loss2, o, i0, n)


@njit(cache=True)
def _prob_lanes_serial(x3, t3, w, eps, z, loss2, width):
    # serial twin of _prob_lanes, for small inputs
    wide_vectors()
    x3, t3, w, loss2 = borrowed(x3), borrowed(t3), borrowed(w), borrowed(loss2)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _prob_lane_block(x3, t3, w, eps, z, loss2, o, i0, n)


@njit(parallel=True, cache=True)
def _prob_grad_lanes(x3, t3, w, eps, z, scale2, loss2, g3, width):
    # loss and gradient as in _prob_grad_rows, class axis strided
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _prob_grad_lane_block(x3, t3, w, eps, z, scale2, loss2, g3, o, i0, n)


@njit(cache=True)
def _prob_grad_lanes_serial(x3, t3, w, eps, z, scale2, loss2, g3, width):
    # serial twin of _prob_grad_lanes, for small inputs
    wide_vectors()
    x3, t3, w = borrowed(x3), borrowed(t3), borrowed(w)
    scale2, loss2, g3 = borrowed(scale2), borrowed(loss2), borrowed(g3)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _prob_grad_lane_block(x3, t3, w, eps, z, scale2, loss2, g3, o, i0, n)
