"""CPU margin losses: launchers and fused loss-and-gradient kernels.

* max-margin: rows (b, 1 + N) with the positive score first;
  pair loss h_bj = max(0, margin - s_b0 + s_bj), j = 1..N.
* multi-margin (PyTorch's multi_margin_loss, Weston-Watkins):
  loss = w_y / C * sum_{j != y} max(0, margin - x_y + x_j)^p.
* multiclass hinge (Crammer-Singer): loss = max_j (x_j + margin [j != y]) - x_y.

Every kernel works on C-contiguous rows, one sample per row, parallel over rows with a
serial twin for small inputs. Optional arrays (the pairs for "none", per-pair upstream
gradients) come as (1, 1) dummies when absent, never indexed then. A row's loss goes to a
float64 array the public layer reduces in a fixed order. Loops that store never also
reduce in floating point (see ``cpu/_math.py``; the hinge gradient's one pass counts, in
integers, exact in any order), so results are the same bits in place (``grad_out=scores``)
or not. A hinge exactly at 0 has subgradient 0; a NaN score makes its terms and their
gradients NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint64
from numba.extending import register_jitable

from . import run
from ._labels import NO_IGNORE, scan
from ._math import (
    always_inline,
    _REDUCE,
    apart,
    as_type_of,
    aside_row,
    borrowed,
    max_nan,
    max_span,
    pairwise_sum,
    row_fill,
    rows_copy,
    same_memory,
    wide_vectors,
)

# --- launchers -----------------------------------------------------------------------------


def max_margin(s2, margin, pairs2=None):
    """Per-row sums of the pair losses (float64, (B,)); the (B, N) pairs into pairs2."""
    loss1 = np.empty(s2.shape[0], np.float64)
    store = pairs2 is not None
    pairs2 = pairs2 if store else np.empty((1, 1), s2.dtype)
    run(_max_margin_rows_serial, _max_margin_rows, s2.size, s2, margin, loss1, pairs2, store,
        _chunk_rows(s2.shape[1]))
    return loss1


def max_margin_grad(s2, margin, k, dl2=None, pairs2=None, g2=None):
    """(per-row loss sums, gradient); the pair gradients scale by k, or by dl2 (B, N)."""
    loss1 = np.empty(s2.shape[0], np.float64)
    store = pairs2 is not None
    pairs2 = pairs2 if store else np.empty((1, 1), s2.dtype)
    per_pair = dl2 is not None
    dl2 = dl2 if per_pair else np.empty((1, 1), np.float64)
    g2 = np.empty(s2.shape, s2.dtype) if g2 is None else g2
    args = (s2, margin, k, dl2, per_pair, loss1, pairs2, store, g2, _chunk_rows(s2.shape[1]))
    run(_max_margin_grad_rows_serial, _max_margin_grad_rows, s2.size, *args)
    return loss1, g2


def multi_margin(x2, y1, w, p, margin):
    """Per-sample multi-margin losses (float64)."""
    loss1 = np.empty(x2.shape[0], np.float64)
    run(_multi_margin_rows_serial, _multi_margin_rows, x2.size, x2, y1, w, p, margin, loss1)
    return loss1


def multi_margin_grad(x2, y1, w, p, margin, k1, g2=None):
    """(per-sample losses, gradient scaled per sample by k1)."""
    loss1 = np.empty(x2.shape[0], np.float64)
    g2 = np.empty(x2.shape, x2.dtype) if g2 is None else g2
    args = (x2, y1, w, p, margin, k1, loss1, g2)
    run(_multi_margin_grad_rows_serial, _multi_margin_grad_rows, x2.size, *args)
    return loss1, g2


def hinge(x2, y1, margin):
    """Per-sample Crammer-Singer losses (float64)."""
    loss1 = np.empty(x2.shape[0], np.float64)
    run(_hinge_rows_serial, _hinge_rows, x2.size, x2, y1, margin, loss1)
    return loss1


def hinge_grad(x2, y1, margin, k1, g2=None):
    """(per-sample losses, gradient scaled per sample by k1)."""
    loss1 = np.empty(x2.shape[0], np.float64)
    g2 = np.empty(x2.shape, x2.dtype) if g2 is None else g2
    run(_hinge_grad_rows_serial, _hinge_grad_rows, x2.size, x2, y1, margin, k1, loss1, g2)
    return loss1, g2


# --- small calls: one compiled call each ----------------------------------------------------
# (N, C) C-contiguous rows, int64 labels (checked by _labels.scan first: a bad label returns
# its flat index and computes nothing), "mean" or "sum", dloss = 1: the serial kernel and
# reduce_losses' pairwise sum in one call, the same bits as the general path (14 classes:
# about half the time).  ``mean`` scales the gradient by 1 / rows, as upstream_scale does.

@njit(cache=True)
def multi_margin_small(x2, y1, w, p, margin):
    """(first, sum of the losses) for a small multi-margin call."""
    first, _ = scan(y1, x2.shape[1], NO_IGNORE, w)
    if first >= 0:
        return first, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    _multi_margin_rows_serial(x2, y1, w, p, margin, loss1)
    return first, pairwise_sum(loss1)


@njit(cache=True)
def multi_margin_grad_small(x2, y1, w, p, margin, mean, g2):
    """multi_margin_small with the gradient into g2 (which may be x2; labels under it are
    copied first)."""
    y1 = y1 if apart(y1, g2) else y1.copy()
    first, _ = scan(y1, x2.shape[1], NO_IGNORE, w)
    if first >= 0:
        return first, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    k1 = np.full(x2.shape[0], 1.0 / x2.shape[0] if mean else 1.0)
    _multi_margin_grad_rows_serial(x2, y1, w, p, margin, k1, loss1, g2)
    return first, pairwise_sum(loss1)


@njit(cache=True)
def hinge_small(x2, y1, w, margin):
    """(first, sum of the losses) for a small Crammer-Singer call (w: unit weights, for
    the label scan only)."""
    first, _ = scan(y1, x2.shape[1], NO_IGNORE, w)
    if first >= 0:
        return first, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    _hinge_rows_serial(x2, y1, margin, loss1)
    return first, pairwise_sum(loss1)


@njit(cache=True)
def hinge_grad_small(x2, y1, w, margin, mean, g2):
    """hinge_small with the gradient into g2 (which may be x2; labels under it are copied
    first)."""
    y1 = y1 if apart(y1, g2) else y1.copy()
    first, _ = scan(y1, x2.shape[1], NO_IGNORE, w)
    if first >= 0:
        return first, 0.0
    loss1 = np.empty(x2.shape[0], np.float64)
    k1 = np.full(x2.shape[0], 1.0 / x2.shape[0] if mean else 1.0)
    _hinge_grad_rows_serial(x2, y1, margin, k1, loss1, g2)
    return first, pairwise_sum(loss1)


@njit(cache=True)
def max_margin_small(s2, margin):
    """Sum of the pair losses of (B, 1 + N) rows, for a small max-margin call."""
    loss1 = np.empty(s2.shape[0], np.float64)
    _max_margin_rows_serial(s2, margin, loss1, np.empty((1, 1), s2.dtype), False, 0)
    return pairwise_sum(loss1)


@njit(cache=True)
def max_margin_grad_small(s2, margin, mean, g2):
    """max_margin_small with the gradient into g2 (which may be s2)."""
    loss1 = np.empty(s2.shape[0], np.float64)
    k = 1.0 / (s2.shape[0] * (s2.shape[1] - 1)) if mean else 1.0
    _max_margin_grad_rows_serial(s2, margin, k, np.empty((1, 1), np.float64), False, loss1,
                                 np.empty((1, 1), s2.dtype), False, g2,
                                 _chunk_rows(s2.shape[1]))
    return pairwise_sum(loss1)


# --- max-margin (row i of 2-D arrays; no views, see cpu/_math.py) ----------------------------


# The loops run over the whole row, column 0 masked out (j > 0), rather than from 1: a row of
# 1 + N = 64 is then a whole number of vectors, where 63 would leave a scalar remainder.


@njit(fastmath=_REDUCE)
def _pair_sum(s2, i, top):
    """(sum_j max(0, top + s_ij), number of active pairs) over j >= 1, in float64."""
    wide_vectors()
    zero = as_type_of(0.0, s2)
    total = 0.0
    count = 0.0
    for j in range(s2.shape[1]):
        v = top + s2[i, j]
        active = v > zero and j > 0
        total += v if active or (v != v and j > 0) else 0.0
        count += 1.0 if active else 0.0
    return total, count


@njit(fastmath=_REDUCE)
def _active_dot(s2, r, top, dl2, i):
    """sum_j dl2[i, j - 1] over the active pairs j >= 1 (top + s_rj > 0), in float64."""
    wide_vectors()
    total = 0.0
    zero = as_type_of(0.0, s2)
    for j in range(1, s2.shape[1]):
        v = top + s2[r, j]
        total += dl2[i, j - 1] if v > zero else 0.0
    return total


@njit
def _store_pairs(s2, r, top, pairs2, i):
    # pairs2[i, j - 1] = the hinge of score s2[r, j]
    wide_vectors()
    zero = as_type_of(0.0, s2)
    for j in range(1, s2.shape[1]):
        v = top + s2[r, j]
        pairs2[i, j - 1] = v if v > zero or v != v else zero


@njit
def _max_margin_chunk(s2, r0, r1, margin, loss1, pairs2, store):
    # rows [r0, r1): one call per chunk of rows, since a call per short row (64 scores)
    # cost as much as the row's work
    wide_vectors()
    for i in range(r0, r1):
        top = as_type_of(margin, s2) - s2[i, 0]
        if store:
            _store_pairs(s2, i, top, pairs2, i)
        loss1[i] = _pair_sum(s2, i, top)[0]


@register_jitable
def _chunk_rows(classes: int) -> int:
    """Rows per task of the max-margin kernels: about 4096 scores."""
    return max(1, 4096 // max(classes, 1))


@njit(parallel=True, cache=True)
def _max_margin_rows(s2, margin, loss1, pairs2, store, chunk):
    # h_bj = max(0, margin - s_b0 + s_bj);  loss_b = sum_j h_bj
    # gradient: _max_margin_grad_rows
    wide_vectors()
    n = s2.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        wide_vectors()
        _max_margin_chunk(s2, c * chunk, min(c * chunk + chunk, n), margin, loss1, pairs2,
                          store)


@njit(cache=True)
def _max_margin_rows_serial(s2, margin, loss1, pairs2, store, chunk):
    # serial twin of _max_margin_rows, for small inputs
    s2, loss1, pairs2 = borrowed(s2), borrowed(loss1), borrowed(pairs2)
    _max_margin_chunk(s2, 0, s2.shape[0], margin, loss1, pairs2, store)


@njit
def _max_margin_grad_chunk(s2, q0, r0, r1, margin, k, dl2, per_pair, loss1, pairs2, store,
                           g2):
    # d h_bj / d s_bj = [h_bj > 0],  d h_bj / d s_b0 = -[h_bj > 0];  rows [r0, r1) of the
    # outputs from rows [r0 - q0, r1 - q0) of s2: q0 = r0 when s2 is a copy of the chunk's
    # rows (grad_out=scores, see _max_margin_grad_task), else 0.  s2 is borrowed: the caller may
    # pass a copy it owns, and the row loops below must not count references
    wide_vectors()
    s2 = borrowed(s2)
    zero = as_type_of(0.0, s2)
    kk = as_type_of(k, s2)
    for i in range(r0, r1):
        r = i - q0
        top = as_type_of(margin, s2) - s2[r, 0]
        total, count = _pair_sum(s2, r, top)
        dpos = _active_dot(s2, r, top, dl2, i) if per_pair else k * count
        if store:
            _store_pairs(s2, r, top, pairs2, i)
        if per_pair:
            for j in range(1, s2.shape[1]):
                v = top + s2[r, j]
                g2[i, j] = as_type_of(dl2[i, j - 1], s2) if v > zero else (v if v != v else zero)
        else:
            for j in range(s2.shape[1]):  # j = 0 is written below
                v = top + s2[r, j]
                g2[i, j] = kk if v > zero else (v if v != v else zero)
        g2[i, 0] = -dpos if not math.isnan(total) else np.nan
        loss1[i] = total


@njit
def _max_margin_grad_task(s2, c, chunk, margin, k, dl2, per_pair, loss1, pairs2, store, g2,
                          aside):
    # chunk c of the rows; in place (aside: g2 is s2) from a copy of the chunk's rows, as a
    # loop that reads what it writes runs LLVM's scalar fallback (2.6-7x slower measured)
    r0 = c * chunk
    r1 = min(r0 + chunk, s2.shape[0])
    if aside:
        _max_margin_grad_chunk(rows_copy(s2, r0, r1 - r0), r0, r0, r1, margin, k, dl2,
                               per_pair, loss1, pairs2, store, g2)
    else:
        _max_margin_grad_chunk(s2, 0, r0, r1, margin, k, dl2, per_pair, loss1, pairs2, store,
                               g2)


@njit(parallel=True, cache=True)
def _max_margin_grad_rows(s2, margin, k, dl2, per_pair, loss1, pairs2, store, g2, chunk):
    # loss as in _max_margin_rows;  g_bj = k_bj [h_bj > 0],  g_b0 = -sum_j k_bj [h_bj > 0]
    wide_vectors()
    aside = same_memory(s2, g2)
    for c in prange((s2.shape[0] + chunk - 1) // chunk):
        wide_vectors()
        _max_margin_grad_task(s2, c, chunk, margin, k, dl2, per_pair, loss1, pairs2, store,
                              g2, aside)


@njit(cache=True)
def _max_margin_grad_rows_serial(s2, margin, k, dl2, per_pair, loss1, pairs2, store, g2,
                                 chunk):
    # serial twin of _max_margin_grad_rows, for small inputs
    wide_vectors()
    s2, dl2, loss1 = borrowed(s2), borrowed(dl2), borrowed(loss1)
    pairs2, g2 = borrowed(pairs2), borrowed(g2)
    aside = same_memory(s2, g2)
    for c in range((s2.shape[0] + chunk - 1) // chunk):
        _max_margin_grad_task(s2, c, chunk, margin, k, dl2, per_pair, loss1, pairs2, store,
                              g2, aside)


# --- multi-margin (Weston-Watkins, PyTorch's multi_margin_loss) ---------------------------------


@njit(fastmath=_REDUCE)
def _multi_margin_sums(x2, i, y, p, margin):
    """(sum z_j^p, sum z_j^(p-1)) over j != y with z_j = margin - x_y + x_j > 0.

    The first is the loss before weight and 1/C; the second is what the target's gradient
    sums (1 for p = 1, z for p = 2).  NaN scores give NaN.
    """
    wide_vectors()
    always_inline()
    top = as_type_of(margin, x2) - x2[i, y]
    zero = as_type_of(0.0, x2)
    one = as_type_of(1.0, x2)
    total = 0.0
    slope = 0.0
    for j in range(x2.shape[1]):
        z = top + x2[i, j]
        on = (z > zero or z != z) and j != y
        total += (z if p == 1 else z * z) if on else zero
        slope += (one if p == 1 else z) if on else zero
    return total, slope


@njit
def _multi_margin_row(x2, i, y, w, p, margin):
    always_inline()
    total, _ = _multi_margin_sums(x2, i, y, p, margin)
    return np.float64(w[y]) * total / x2.shape[1]


@njit(parallel=True, cache=True)
def _multi_margin_rows(x2, y1, w, p, margin, loss1):
    # loss = w_y / C sum_{j != y} max(0, margin - x_y + x_j)^p
    # gradient: _multi_margin_grad_rows
    wide_vectors()
    for i in prange(x2.shape[0]):
        wide_vectors()
        loss1[i] = _multi_margin_row(x2, i, y1[i], w, p, margin)


@njit(cache=True)
def _multi_margin_rows_serial(x2, y1, w, p, margin, loss1):
    # serial twin of _multi_margin_rows, for small inputs
    wide_vectors()
    x2, y1, w, loss1 = borrowed(x2), borrowed(y1), borrowed(w), borrowed(loss1)
    for i in range(x2.shape[0]):
        loss1[i] = _multi_margin_row(x2, i, y1[i], w, p, margin)


@njit
def _multi_margin_grad_row(x2, r, y, w, p, margin, k, g2, i):
    # g_j = k w_y / C * (1 or 2 z_j) [z_j > 0] for j != y;  g_y = -sum_{j != y} g_j
    # g2[i] from row r of x2: in place (g2 is x2) the kernels pass a copy (see aside_row)
    wide_vectors()
    always_inline()
    C = x2.shape[1]
    total, slope = _multi_margin_sums(x2, r, y, p, margin)
    c = k * np.float64(w[y]) / C
    top = as_type_of(margin, x2) - x2[r, y]
    zero = as_type_of(0.0, x2)
    cc = as_type_of(c, x2)
    c2 = as_type_of(2.0 * c, x2)
    for j in range(C):
        z = top + x2[r, j]
        if p == 1:
            g2[i, j] = cc if z > zero else (z if z != z else zero)
        else:
            g2[i, j] = c2 * z if z > zero else (z if z != z else zero)
    g2[i, y] = -c * slope * (1.0 if p == 1 else 2.0)
    return np.float64(w[y]) * total / C


@njit(parallel=True, cache=True)
def _multi_margin_grad_rows(x2, y1, w, p, margin, k1, loss1, g2):
    # loss as in _multi_margin_rows;  g_j = k w_y/C (1 or 2 z_j)[z_j > 0], g_y = -sum_j g_j
    wide_vectors()
    aside = same_memory(x2, g2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        if aside:
            loss1[i] = _multi_margin_grad_row(aside_row(x2, i), i - i, y1[i], w, p, margin,
                                              k1[i], g2, i)
        else:
            loss1[i] = _multi_margin_grad_row(x2, i, y1[i], w, p, margin, k1[i], g2, i)


@njit(cache=True)
def _multi_margin_grad_rows_serial(x2, y1, w, p, margin, k1, loss1, g2):
    # serial twin of _multi_margin_grad_rows, for small inputs
    wide_vectors()
    x2, y1, w = borrowed(x2), borrowed(y1), borrowed(w)
    k1, loss1, g2 = borrowed(k1), borrowed(loss1), borrowed(g2)
    aside = same_memory(x2, g2)
    for i in range(x2.shape[0]):
        if aside:
            loss1[i] = _multi_margin_grad_row(aside_row(x2, i), i - i, y1[i], w, p, margin,
                                              k1[i], g2, i)
        else:
            loss1[i] = _multi_margin_grad_row(x2, i, y1[i], w, p, margin, k1[i], g2, i)


# --- multiclass hinge (Crammer-Singer) --------------------------------------------------------


SELECT_ROW_BYTES = 512  # rows up to this size take _augmented_max's one-loop form


@njit(fastmath=_REDUCE)
def _augmented_max(x2, i, y, margin):
    """max_{j != y} (x_j + margin), NaN if any score is NaN; -inf for a single class.

    Taken as max_{j != y} x_j + margin: rounding is monotonic, so it is the same value.
    Rows of up to SELECT_ROW_BYTES take one loop with x_y selected out; longer rows two
    plain reductions, over the classes before y and after it, where the select cost about
    twice as much (1000 classes).  Two loops of a variable length left short rows in
    scalar remainders: 10-64 float32 classes took 1.6-2.3x the time of the one loop."""
    wide_vectors()
    always_inline()
    if x2.shape[1] * x2.itemsize <= SELECT_ROW_BYTES:
        low = as_type_of(-np.inf, x2)
        best = low
        for j in range(x2.shape[1]):
            best = max_nan(best, x2[i, j] if j != y else low)
    else:
        u = uint64(y)
        rest = uint64(x2.shape[1]) - u - uint64(1)
        best = max_nan(max_span(x2, i, uint64(0), u), max_span(x2, i, u + uint64(1), rest))
    best = best + as_type_of(margin, x2)
    return best if not math.isnan(x2[i, y]) else x2[i, y]


_SPAN = 64  # elements per vectorised test in _first_attaining
# gradient rows up to this size are found and written in one pass (_hinge_grad_row); in place
# only up to FUSED_ASIDE_BYTES, as that pass reads a copy of the row
FUSED_ROW_BYTES = 8192
FUSED_ASIDE_BYTES = 1024


@njit(fastmath=_REDUCE)
def _first_attaining(x2, i, y, m, best):
    """The first j != y with x_j + m == best, or -1 (for ties).  Each span of _SPAN elements
    is first tested in one vectorised count and only a span that holds a match is scanned:
    a plain scalar scan with an early exit took as long as the rest of the gradient (1000
    classes)."""
    wide_vectors()
    always_inline()
    C = x2.shape[1]
    for b in range((C + _SPAN - 1) // _SPAN):
        b0 = b * _SPAN
        n = min(_SPAN, C - b0)
        hits = 0
        for jj in range(n):
            hits += 1 if x2[i, b0 + jj] + m == best else 0
        if hits:
            for jj in range(n):
                if b0 + jj != y and x2[i, b0 + jj] + m == best:
                    return b0 + jj
    return -1


@njit
def _hinge_row(x2, i, y, margin):
    always_inline()
    best = _augmented_max(x2, i, y, margin)
    xy = np.float64(x2[i, y])
    if math.isnan(best) or math.isnan(xy):
        return np.nan
    return max(np.float64(best), xy) - xy


@njit(parallel=True, cache=True)
def _hinge_rows(x2, y1, margin, loss1):
    # loss = max_j (x_j + margin [j != y]) - x_y
    # gradient: _hinge_grad_rows
    wide_vectors()
    for i in prange(x2.shape[0]):
        wide_vectors()
        loss1[i] = _hinge_row(x2, i, y1[i], margin)


@njit(cache=True)
def _hinge_rows_serial(x2, y1, margin, loss1):
    # serial twin of _hinge_rows, for small inputs
    wide_vectors()
    x2, y1, loss1 = borrowed(x2), borrowed(y1), borrowed(loss1)
    for i in range(x2.shape[0]):
        loss1[i] = _hinge_row(x2, i, y1[i], margin)


@njit(fastmath=_REDUCE)
def _hinge_grad_row(x2, r, y, margin, k, g2, i, fused):
    # g = k (e_j* - e_y) with j* the first j != y attaining the maximum, if it beats x_y
    # g2[i] from row r of x2: in place (g2 is x2) the kernels pass a copy of a short row
    wide_vectors()
    always_inline()
    best = _augmented_max(x2, r, y, margin)
    xy = np.float64(x2[r, y])
    if math.isnan(best) or math.isnan(xy):
        row_fill(g2, i, np.nan)
        return np.nan
    m = as_type_of(margin, x2)
    kk = as_type_of(k, g2)
    if np.float64(best) <= xy:
        row_fill(g2, i, 0.0)
    else:
        search = True
        if fused:
            # one pass writes k where x_j + margin attains the maximum and counts those
            # places; only a tie (more than one) is searched and written again with the first
            zero = as_type_of(0.0, g2)
            hits = 0
            for j in range(x2.shape[1]):
                hit = x2[r, j] + m == best and j != y
                g2[i, j] = kk if hit else zero
                hits += 1 if hit else 0
            search = hits > 1
        if search:
            star = _first_attaining(x2, r, y, m, best)
            row_fill(g2, i, 0.0)
            g2[i, star] = kk
        g2[i, y] = -kk
    return max(np.float64(best), xy) - xy


@njit
def _fused_aside(x2, g2):
    # (rows found and written in one pass, those rows read from a copy): see FUSED_ROW_BYTES
    row_bytes = x2.shape[1] * x2.itemsize
    if same_memory(x2, g2):
        return row_bytes <= FUSED_ASIDE_BYTES, row_bytes <= FUSED_ASIDE_BYTES
    return row_bytes <= FUSED_ROW_BYTES, False


@njit(parallel=True, cache=True)
def _hinge_grad_rows(x2, y1, margin, k1, loss1, g2):
    # loss as in _hinge_rows;  g = k (e_j* - e_y) when max_{j != y} (x_j + margin) > x_y
    wide_vectors()
    fused, aside = _fused_aside(x2, g2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        if aside:
            loss1[i] = _hinge_grad_row(aside_row(x2, i), i - i, y1[i], margin, k1[i], g2, i,
                                       fused)
        else:
            loss1[i] = _hinge_grad_row(x2, i, y1[i], margin, k1[i], g2, i, fused)


@njit(cache=True)
def _hinge_grad_rows_serial(x2, y1, margin, k1, loss1, g2):
    # serial twin of _hinge_grad_rows, for small inputs
    wide_vectors()
    x2, y1, k1 = borrowed(x2), borrowed(y1), borrowed(k1)
    loss1, g2 = borrowed(loss1), borrowed(g2)
    fused, aside = _fused_aside(x2, g2)
    for i in range(x2.shape[0]):
        if aside:
            loss1[i] = _hinge_grad_row(aside_row(x2, i), i - i, y1[i], margin, k1[i], g2, i,
                                       fused)
        else:
            loss1[i] = _hinge_grad_row(x2, i, y1[i], margin, k1[i], g2, i, fused)
