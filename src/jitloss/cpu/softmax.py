"""CPU softmax family: launchers and kernels.

Launchers take C-contiguous ``(outer, classes, inner)`` arrays prepared by the public
layer (``jitloss.softmax``), or ``(outer, classes)`` rows, allocate what is not given,
choose serial or parallel and the layout: rows (``inner == 1``) run the row kernels,
anything else the lane kernels, which stride over the classes and vectorise over
``inner``.
``s`` is ``1 / temperature`` as a float64 pair ``(hi, lo)`` (see
``jitloss._args.check_temperature``) throughout.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint64

from .. import _formulas as formulas
from . import group_rows, lane_width_for, online_lanes, run, run_rows, short_rows
from ._math import (
    always_inline,
    BLOCK,
    row_dot_block,
    row_sum_block,
    AHEAD,
    _REDUCE,
    as_type_of,
    borrowed,
    exp,
    exp_sub,
    group_scratch,
    group_span,
    has_nan,
    lane_block,
    lanes_dot,
    lanes_exp,
    lanes_exp_scale,
    lanes_exp_store,
    lanes_online_total,
    lanes_scale,
    lanes_range,
    lanes_sum,
    lanes_sumexp,
    LANE_TILE,
    log1p_rest,
    log1p_rest_vec,
    log1p_rests,
    max_nan,
    near_ok,
    NEAR_ALL,
    NEAR_MIXED,
    prefetch_lanes,
    prefetch_row,
    row_dot,
    row_fill,
    aside_row,
    rows_copy,
    row_exp_sum,
    row_lse,
    row_range,
    row_sum,
    row_sumexp,
    same_memory,
    stack_lanes,
    tile_row,
    wide_piece,
    row_rest,
    short_backward,
    short_chunks,
    short_exp_args,
    short_scratch,
    SHORT_GROUP,
    short_lse,
    short_shift,
    short_softmax_row,
    wide_vectors,
)


# log_softmax rows store their exponentials in the output row as they sum them, however
# long (measured on znver3, ratio to np.copyto: 256 x 32000 float32 0.92-1.00x storing,
# 1.12-1.21x not).  Rows over a quarter of L2 took row_lse_parts (online beyond half of
# L2) and then the output pass until a session on znver4 (1 MiB L2), where storing took
# 0.86-0.94 of that time (32 x 128256 and 16 x 256000 float32, 1 and 2 threads, in-process);
# on znver5 (1 MiB L2 too) it had measured 6% slower at 32 x 128256.
_ONE = (1.0, 0.0)  # temperature 1


# --- launchers -----------------------------------------------------------------------------


def _empty(shape, dtype, out):
    return np.empty(shape, dtype) if out is None else out


def _rows(a3):
    """The (outer, classes) rows of an (outer, classes, 1) array (or a 2-D one), else None."""
    if a3.ndim == 2:
        return a3
    return a3.reshape(a3.shape[0], a3.shape[1]) if a3.shape[2] == 1 else None


def softmax(x3, s, out3=None):
    """exp((x - max) * s) / sum(...) over axis 1 of x3; returns out3."""
    out3 = _empty(x3.shape, x3.dtype, out3)
    x2 = _rows(x3)
    if x2 is not None:
        run_rows((_softmax_rows_serial, _softmax_rows), None, x2, _rows(out3), s,
                 short_kernels=(_softmax_short_serial, _softmax_short))
    else:
        run(_softmax_lanes_serial, _softmax_lanes, x3.size, x3, out3, s, lane_width_for(x3),
            online_lanes(x3))
    return out3


def log_softmax(x3, s, out3=None):
    """(x - max) * s - log(sum(exp((x - max) * s))) over axis 1 of x3; returns out3."""
    out3 = _empty(x3.shape, x3.dtype, out3)
    x2 = _rows(x3)
    if x2 is not None:
        run_rows((_log_softmax_rows_serial, _log_softmax_rows),
                 (_log_softmax_groups_serial, _log_softmax_groups), x2, _rows(out3), s,
                 short_kernels=(_log_softmax_short_serial, _log_softmax_short))
    else:
        run(_log_softmax_lanes_serial, _log_softmax_lanes, x3.size, x3, out3, s, lane_width_for(x3))
    return out3


@njit
def _as_rows(a):
    """The (rows, classes) view of a C-contiguous 1-D or 2-D array (classes last)."""
    return a.reshape(a.size // a.shape[-1], a.shape[-1])


# The small twins take a C-contiguous 1-D or 2-D array of at least one element (the public
# layer reshapes anything else) and reshape it in compiled code: two reshapes in Python
# cost about 0.4 us of a 14-element softmax's 2.5.


@njit(cache=True)
def softmax_small(x):
    """softmax of the rows of a small C-contiguous array at temperature 1, allocated and
    computed in one compiled call (the serial twin's arithmetic: the same bits)."""
    out = np.empty_like(x)
    x2, out2 = _as_rows(x), _as_rows(out)
    if short_rows(x2.shape[1], x2.itemsize):
        _softmax_short_serial(x2, out2, _ONE)
    else:
        _softmax_rows_serial(x2, out2, _ONE)
    return out


@njit(cache=True)
def log_softmax_small(x):
    """log_softmax's twin of softmax_small."""
    out = np.empty_like(x)
    x2, out2 = _as_rows(x), _as_rows(out)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize):
        _log_softmax_short_serial(x2, out2, _ONE)
    elif G:
        _log_softmax_groups_serial(x2, out2, _ONE, G)
    else:
        _log_softmax_rows_serial(x2, out2, _ONE)
    return out


@njit(cache=True)
def softmax_backward_small(y, dy):
    """softmax_backward's twin of softmax_small (temperature 1)."""
    out = np.empty_like(y)
    y2, dy2, out2 = _as_rows(y), _as_rows(dy), _as_rows(out)
    if short_rows(y2.shape[1], y2.itemsize):
        _backward_short_serial(y2, dy2, out2, _ONE, False)
    else:
        _softmax_backward_rows_serial(y2, dy2, out2, _ONE)
    return out


@njit(cache=True)
def log_softmax_backward_small(logp, dy):
    """log_softmax_backward's twin of softmax_small (temperature 1)."""
    out = np.empty_like(logp)
    logp2, dy2, out2 = _as_rows(logp), _as_rows(dy), _as_rows(out)
    if short_rows(logp2.shape[1], logp2.itemsize):
        _backward_short_serial(logp2, dy2, out2, _ONE, True)
    else:
        _log_softmax_backward_rows_serial(logp2, dy2, out2, _ONE)
    return out


@njit(cache=True)
def logsumexp_small(x):
    """logsumexp's twin of softmax_small: one value per row, as a 1-D array."""
    x2 = _as_rows(x)
    out1 = np.empty(x2.shape[0], x2.dtype)
    G = group_rows(x2.shape[0], x2.shape[1], x2.itemsize)
    if short_rows(x2.shape[1], x2.itemsize):
        _logsumexp_short_serial(x2, out1)
    elif G:
        _logsumexp_groups_serial(x2, out1, G)
    else:
        _logsumexp_rows_serial(x2, out1)
    return out1


def logsumexp(x3, out2=None):
    """log(sum(exp(x))) over axis 1 of x3, into the (outer, inner) array out2."""
    out2 = _empty((x3.shape[0], x3.shape[2]), x3.dtype, out2)
    if x3.shape[2] == 1:
        run_rows((_logsumexp_rows_serial, _logsumexp_rows),
                 (_logsumexp_groups_serial, _logsumexp_groups), _rows(x3), out2[:, 0],
                 short_kernels=(_logsumexp_short_serial, _logsumexp_short))
    else:
        run(_logsumexp_lanes_serial, _logsumexp_lanes, x3.size, x3, out2, lane_width_for(x3))
    return out2


def logsumexp_b(x3, b3, return_sign, out2=None, sign2=None):
    """log|sum(b * exp(x))| over axis 1 and its sign (SciPy's rules); returns (out2, sign2).

    Without ``return_sign`` a negative sum gives NaN.  ``b3`` has x3's shape and dtype.
    """
    shape2 = (x3.shape[0], x3.shape[2])
    out2 = _empty(shape2, x3.dtype, out2)
    sign2 = _empty(shape2, x3.dtype, sign2)
    run(_logsumexp_b_serial, _logsumexp_b, x3.size, x3, b3, out2, sign2, return_sign)
    return out2, sign2


def softmax_backward(y3, dy3, s, out3=None):
    """y * (dy - sum(dy * y)) * s over axis 1; returns out3."""
    out3 = _empty(y3.shape, y3.dtype, out3)
    if _rows(y3) is not None:
        args = (_rows(y3), _rows(dy3), _rows(out3), s)
        if short_rows(y3.shape[1], y3.itemsize):
            run(_backward_short_serial, _backward_short, y3.size, *args, False)
        else:
            run(_softmax_backward_rows_serial, _softmax_backward_rows, y3.size, *args)
    else:
        args = (y3, dy3, out3, s, lane_width_for(y3))
        run(_softmax_backward_lanes_serial, _softmax_backward_lanes, y3.size, *args)
    return out3


def log_softmax_backward(logp3, dy3, s, out3=None):
    """(dy - exp(logp) * sum(dy)) * s over axis 1; returns out3."""
    out3 = _empty(logp3.shape, logp3.dtype, out3)
    if _rows(logp3) is not None:
        args = (_rows(logp3), _rows(dy3), _rows(out3), s)
        if short_rows(logp3.shape[1], logp3.itemsize):
            run(_backward_short_serial, _backward_short, logp3.size, *args, True)
        else:
            run(_log_softmax_backward_rows_serial, _log_softmax_backward_rows, logp3.size,
                *args)
    else:
        args = (logp3, dy3, out3, s, lane_width_for(logp3))
        run(_log_softmax_backward_lanes_serial, _log_softmax_backward_lanes, logp3.size, *args)
    return out3


# --- row kernels (classes contiguous) ---------------------------------------------------


@njit
def _softmax_row(x2, out2, i, s, aside):
    # aside: out2 is x2 (in place), so the exponentials are taken from a copy of the row
    # (see aside_row); the same bits either way
    wide_vectors()
    always_inline()
    m, low = row_range(x2, i)
    if not math.isfinite(m):  # +inf, NaN, or all -inf
        row_fill(out2, i, np.nan)
        return
    near = near_ok(m, low, s)
    if aside:
        total = row_exp_sum(aside_row(x2, i), 0, m, s, out2, i, near)
    else:
        total = row_exp_sum(x2, i, m, s, out2, i, near)
    inv = as_type_of(1.0 / total, x2)
    for j in range(x2.shape[1]):
        out2[i, j] *= inv


@njit(parallel=True, cache=True)
def _softmax_rows(x2, out2, s):
    # y_j = exp((x_j - m) s) / sum_k exp((x_k - m) s),  m = max_k x_k,  s = 1 / T
    # gradient: dx = y * (dy - sum(dy * y)) * s  (_softmax_backward_rows)
    wide_vectors()
    aside = same_memory(x2, out2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        _softmax_row(x2, out2, i, s, aside)


@njit(cache=True)
def _softmax_rows_serial(x2, out2, s):
    # serial twin of _softmax_rows, for small inputs
    wide_vectors()
    x2, out2, s = borrowed(x2), borrowed(out2), borrowed(s)
    aside = same_memory(x2, out2)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        _softmax_row(x2, out2, i, s, aside)


@njit
def _log_softmax_row(x2, out2, i, s, aside):
    # The row stores its exponentials in out2 as it sums them (row_exp_sum), so in place
    # (aside, as in _softmax_row) it reads a copy of row i: that loop must not read what it
    # writes (see aside_row), and the output pass reads the copy.  A sum S >= 2 gives
    # log1p_rest(S - 1, 1) = log1p(S - 1), exact to the last bit of S (no term is small
    # beside S); below 2 the largest term dominates, and the stored row is summed again
    # without the terms equal to 1 (row_rest), which keeps a probability near 1 its tiny
    # logarithm.  Against storing and then row_rest for every row: 0.88-0.98 of the time at
    # 1000 to 128256 float32 classes, 0.93-1.05 at 64 (2 threads, emeraldrapids).
    wide_vectors()
    always_inline()
    src, k = x2, i
    m, low = row_range(x2, i)
    if not math.isfinite(m):
        row_fill(out2, i, np.nan)
        return
    if aside:
        src, k = aside_row(x2, i), i - i  # 0 of i's (prange) type
    total = row_exp_sum(src, k, m, s, out2, i, near_ok(m, low, s))
    if total >= 2.0:
        rest, ties = total - 1.0, 1.0
    else:
        rest, ties = row_rest(out2, i)
    sm = as_type_of(s[0], x2)
    lsm = as_type_of(log1p_rest(rest, ties), x2)
    _log_softmax_out(src, k, out2, i, m, sm, lsm)


@njit
def _log_softmax_out(src, k, out2, i, m, sm, lsm):
    # out2[i] = (src[k] - m) * sm - lsm.  A function of its own: inlined after the branch on
    # the row length, this loop ran 2x slower on znver5 (AVX-512): 1.1 ns per float32
    # element for the whole row against 0.59.
    wide_vectors()
    for j in range(out2.shape[1]):
        out2[i, j] = (src[k, j] - m) * sm - lsm


@njit(parallel=True, cache=True)
def _log_softmax_rows(x2, out2, s):
    # y_j = (x_j - m) s - log1p(sum_{k != argmax} exp((x_k - m) s)),  m = max_k x_k
    # gradient: dx = (dy - exp(y) * sum(dy)) * s  (_log_softmax_backward_rows)
    wide_vectors()
    aside = same_memory(x2, out2)
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        _log_softmax_row(x2, out2, i, s, aside)


@njit(cache=True)
def _log_softmax_rows_serial(x2, out2, s):
    # serial twin of _log_softmax_rows, for small inputs
    wide_vectors()
    x2, out2, s = borrowed(x2), borrowed(out2), borrowed(s)
    aside = same_memory(x2, out2)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        _log_softmax_row(x2, out2, i, s, aside)


@njit
def _lse_row(x2, i):
    always_inline()
    m, lse = row_lse(x2, i, (1.0, 0.0))
    if math.isfinite(m):
        return m + lse  # NaN if the row holds one
    return np.nan if has_nan(x2[i]) else m  # +inf, or -inf for all -inf (or empty)


@njit(parallel=True, cache=True)
def _logsumexp_rows(x2, out1):
    # lse = m + log1p(sum_{k != argmax} exp(x_k - m)),  m = max_k x_k
    # gradient: d lse / dx = softmax(x)
    wide_vectors()
    for i in prange(x2.shape[0]):
        wide_vectors()
        prefetch_row(x2, i + 1)
        out1[i] = _lse_row(x2, i)


@njit(cache=True)
def _logsumexp_rows_serial(x2, out1):
    # serial twin of _logsumexp_rows, for small inputs
    wide_vectors()
    x2, out1 = borrowed(x2), borrowed(out1)
    for i in range(x2.shape[0]):
        prefetch_row(x2, i + 1)
        out1[i] = _lse_row(x2, i)


@njit
def _softmax_backward_row(y2, dy2, k, out2, i, s):
    # out2[i] from rows k of y2 and dy2: in place (out2 is y2 or dy2) the kernels pass
    # copies of both rows (aside_row), as the loop would run scalar reading what it writes.
    # A row of one BLOCK takes its sum in one loop (row_dot_block, the same bits): 0.85-0.93
    # of the time at 10 to 100 float32 classes (2 threads, emeraldrapids), float64 level
    wide_vectors()
    always_inline()
    if y2.shape[1] <= BLOCK:
        dot = as_type_of(row_dot_block(dy2, y2, k), y2)
    else:
        dot = as_type_of(row_dot(dy2, y2, k), y2)
    sm = as_type_of(s[0], y2)
    for j in range(y2.shape[1]):
        out2[i, j] = y2[k, j] * (dy2[k, j] - dot) * sm


@njit(parallel=True, cache=True)
def _softmax_backward_rows(y2, dy2, out2, s):
    # y = softmax(x s):  dx_j = y_j (dy_j - sum_k dy_k y_k) s
    # (the vector-Jacobian product of softmax; linear in dy)
    wide_vectors()
    aside = same_memory(y2, out2) or same_memory(dy2, out2)
    for i in prange(y2.shape[0]):
        wide_vectors()
        if aside:
            _softmax_backward_row(aside_row(y2, i), aside_row(dy2, i), i - i, out2, i, s)
        else:
            _softmax_backward_row(y2, dy2, i, out2, i, s)


@njit(cache=True)
def _softmax_backward_rows_serial(y2, dy2, out2, s):
    # serial twin of _softmax_backward_rows, for small inputs
    wide_vectors()
    y2, dy2, out2, s = borrowed(y2), borrowed(dy2), borrowed(out2), borrowed(s)
    aside = same_memory(y2, out2) or same_memory(dy2, out2)
    for i in range(y2.shape[0]):
        if aside:
            _softmax_backward_row(aside_row(y2, i), aside_row(dy2, i), 0, out2, i, s)
        else:
            _softmax_backward_row(y2, dy2, i, out2, i, s)


# The row functions of both backward kernels are inlined into them (always_inline in
# cpu/_math.py).  In-process against calls per row (2 threads, znver4, the same bits):
# softmax_backward 0.52-0.54 of the time at 65536 x 32 and 262144 x 10 float32, 0.76 at
# 16384 x 128, 0.86-0.97 at 4096 x 1000, 1.00 at 256 x 32000, float64 0.56 at 65536 x 16;
# log_softmax_backward 0.77-0.80 at 10-32 classes, float64 0.81 at 16.  Inlined, the
# output loop of log_softmax_backward (an exponential each: a dozen constants) reloaded its
# constants in every vector iteration, and rows over INLINE_EXP_ROW_BYTES took 1.05-1.27x
# the time (128 to 1000 float32 classes): their kernels' loops call it, once a row.  The
# kernels write the in-place choice (aside) out in both loops: through one more inlined
# helper taking aside, rows of 10-32 float32 classes took 1.12-1.29x the time.
INLINE_EXP_ROW_BYTES = 256


@njit
def _log_softmax_backward_row(logp2, dy2, k, out2, i, s):
    # out2[i] from rows k of logp2 and dy2 (in place: copies, as in _softmax_backward_row)
    wide_vectors()
    always_inline()
    if logp2.shape[1] <= BLOCK:
        total = as_type_of(row_sum_block(dy2, k), logp2)
    else:
        total = as_type_of(row_sum(dy2, k), logp2)
    sm = as_type_of(s[0], logp2)
    for j in range(logp2.shape[1]):
        out2[i, j] = (dy2[k, j] - exp(logp2[k, j]) * total) * sm


@njit
def _log_softmax_backward_long_row(logp2, dy2, k, out2, i, s):
    # _log_softmax_backward_row as a call of its own
    wide_vectors()
    _log_softmax_backward_row(logp2, dy2, k, out2, i, s)


@njit(parallel=True, cache=True)
def _log_softmax_backward_rows(logp2, dy2, out2, s):
    # logp = log_softmax(x s):  dx_j = (dy_j - exp(logp_j) sum_k dy_k) s
    # (the vector-Jacobian product of log_softmax; linear in dy)
    wide_vectors()
    aside = same_memory(logp2, out2) or same_memory(dy2, out2)
    if logp2.shape[1] * logp2.itemsize <= INLINE_EXP_ROW_BYTES:
        for i in prange(logp2.shape[0]):
            wide_vectors()
            if aside:
                _log_softmax_backward_row(aside_row(logp2, i), aside_row(dy2, i), i - i, out2,
                                          i, s)
            else:
                _log_softmax_backward_row(logp2, dy2, i, out2, i, s)
    else:
        for i in prange(logp2.shape[0]):
            wide_vectors()
            if aside:
                _log_softmax_backward_long_row(aside_row(logp2, i), aside_row(dy2, i), i - i,
                                               out2, i, s)
            else:
                _log_softmax_backward_long_row(logp2, dy2, i, out2, i, s)


@njit(cache=True)
def _log_softmax_backward_rows_serial(logp2, dy2, out2, s):
    # serial twin of _log_softmax_backward_rows, for small inputs
    wide_vectors()
    logp2, dy2, out2, s = borrowed(logp2), borrowed(dy2), borrowed(out2), borrowed(s)
    aside = same_memory(logp2, out2) or same_memory(dy2, out2)
    if logp2.shape[1] * logp2.itemsize <= INLINE_EXP_ROW_BYTES:
        for i in range(logp2.shape[0]):
            if aside:
                _log_softmax_backward_row(aside_row(logp2, i), aside_row(dy2, i), 0, out2, i, s)
            else:
                _log_softmax_backward_row(logp2, dy2, i, out2, i, s)
    else:
        for i in range(logp2.shape[0]):
            if aside:
                _log_softmax_backward_long_row(aside_row(logp2, i), aside_row(dy2, i), 0, out2,
                                               i, s)
            else:
                _log_softmax_backward_long_row(logp2, dy2, i, out2, i, s)


# --- row groups (short rows) ------------------------------------------------------------
# A short row is a chain of dependent steps (its range, then its sum, then a log, then its
# output), and 10 to 100 float32 classes are too little arithmetic to hide the chain's
# latency, the log's above all (a scalar log1p with a division: 35-40 ns of a 64-class
# row's 150-170 on emeraldrapids).  log_softmax and logsumexp rows of at most
# GROUP_ROW_BYTES (cpu/__init__.py) therefore go through in groups of G rows
# (group_rows), one step at a time for the whole group: the logs form one vectorised loop
# (log1p_rests), and the steps of different rows, independent, overlap.  Each row takes
# the row kernels' primitives in the same order; only the log differs (the vectorisable
# ``log1p`` against libm's, both within 1 ulp), so a grouped row may differ from the same
# row alone in the last bit.  The steps are written out in the group rather than shared
# with the row functions: as functions of their own (array arguments, a raise path) they
# keep numba's reference counting per call, and the row functions measured 1.3-1.5x
# slower.  A task covers one group (``group_span``), its scratch allocated once
# (``group_scratch``).  softmax has no log, and grouped it measured 1.0-1.25x slower.


@njit
def _log_softmax_group(x2, out2, s, aside, r0, g, m, rest, ties, L):
    # _log_softmax_row's steps for a short row; in place (aside) the group's rows are read
    # from a copy, as the output step reads them after the exponentials are written
    wide_vectors()
    src, k0 = x2, r0
    if aside:
        src, k0 = rows_copy(x2, r0, g), r0 - r0
    for q in range(g):
        i, k = r0 + q, k0 + q
        mq, low = row_range(src, k)
        m[q] = mq
        rest[q], ties[q] = 0.0, 1.0
        if not math.isfinite(mq):
            row_fill(out2, i, np.nan)
            continue
        total = row_exp_sum(src, k, mq, s, out2, i, near_ok(mq, low, s))
        if total >= 2.0:
            rest[q], ties[q] = total - 1.0, 1.0
        else:
            rest[q], ties[q] = row_rest(out2, i)
    log1p_rests(rest, ties, g, L)
    sm = as_type_of(s[0], x2)
    for q in range(g):
        if math.isfinite(m[q]):
            _log_softmax_out(src, k0 + q, out2, r0 + q, m[q], sm, as_type_of(L[q], x2))


@njit(parallel=True, cache=True)
def _log_softmax_groups(x2, out2, s, G):
    # _log_softmax_rows, G rows at a time, step by step
    wide_vectors()
    aside = same_memory(x2, out2)
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _log_softmax_group(x2, out2, s, aside, r0, g, m, rest, ties, L)


@njit(cache=True)
def _log_softmax_groups_serial(x2, out2, s, G):
    # serial twin of _log_softmax_groups, for small inputs
    wide_vectors()
    x2, out2, s = borrowed(x2), borrowed(out2), borrowed(s)
    aside = same_memory(x2, out2)
    N = x2.shape[0]
    m, rest, ties, L = group_scratch(min(G, N), x2)  # a small input's is smaller
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _log_softmax_group(x2, out2, s, aside, r0, g, m, rest, ties, L)


@njit
def _logsumexp_group(x2, out1, r0, g, m, rest, ties, L):
    # _lse_row's steps for a short row
    wide_vectors()
    for q in range(g):
        i = r0 + q
        mq, low = row_range(x2, i)
        m[q] = mq
        rest[q], ties[q] = 0.0, 1.0
        if math.isfinite(mq):
            rest[q], ties[q] = row_sumexp(x2, i, mq, _ONE, near_ok(mq, low, _ONE))
    log1p_rests(rest, ties, g, L)
    for q in range(g):
        i = r0 + q
        if math.isfinite(m[q]):
            out1[i] = m[q] + L[q]  # NaN if the row holds one
        else:
            out1[i] = np.nan if has_nan(x2[i]) else m[q]  # +inf, or -inf for all -inf


@njit(parallel=True, cache=True)
def _logsumexp_groups(x2, out1, G):
    # _logsumexp_rows, G rows at a time, step by step
    wide_vectors()
    N = x2.shape[0]
    for t in prange((N + G - 1) // G):
        wide_vectors()
        r0, g = group_span(t, G, N)
        m, rest, ties, L = group_scratch(G, x2)
        _logsumexp_group(x2, out1, r0, g, m, rest, ties, L)


@njit(cache=True)
def _logsumexp_groups_serial(x2, out1, G):
    # serial twin of _logsumexp_groups, for small inputs
    wide_vectors()
    x2, out1 = borrowed(x2), borrowed(out1)
    N = x2.shape[0]
    m, rest, ties, L = group_scratch(min(G, N), x2)  # a small input's is smaller
    for t in range((N + G - 1) // G):
        r0, g = group_span(t, G, N)
        _logsumexp_group(x2, out1, r0, g, m, rest, ties, L)


# --- short rows as vectors ---------------------------------------------------------------
# Rows of at most SHORT_ROW_BYTES (64 float32, 32 float64 classes) take each row as the
# vectors of short_softmax_row, short_lse, short_shift and short_backward (cpu/_math.py,
# "short rows as vectors"), written in LLVM IR: the row kernels' loops run such a row
# scalar, and the row tiles (cpu/cross_entropy.py), which took them until session 24,
# spent half their time transposing.  Float32, 2 threads, znver4, in-process against the
# tiles: see README ("What session 24 found").  A row's bits do not
# depend on the rows around it, the threads, or whether it is computed in place.


@njit
def _lse_short_group(x2, p, k, r0, g, m, rest, ties, L):
    # m[q], rest[q], ties[q] of rows r0 + q < r0 + g (short_lse) and L[q] = log1p_rest of
    # them, in one loop that vectorises (log1p_rests: libm's log1p a row took 2.7x the time
    # of the tiles in log_softmax at 262144 x 8); L[q] is meaningless where m[q] is not
    # finite
    wide_vectors()
    for q in range(g):
        m[q], rest[q], ties[q] = short_lse(x2, r0 + q, p, k)
    log1p_rests(rest, ties, g, L)


@njit
def _log_softmax_short_group(x2, out2, p, sm, k, r0, g, m, rest, ties, L):
    # (x_j - m) s - L for rows r0 .. r0 + g - 1, each as vectors (_lse_short_group, then
    # short_shift).  In place, a row is read before it is written, and a row whose
    # maximum is not finite is written (NaN) only after every row's sums
    wide_vectors()
    _lse_short_group(x2, p, k, r0, g, m, rest, ties, L)
    for q in range(g):
        if math.isfinite(m[q]):
            short_shift(x2, out2, r0 + q, m[q], sm, as_type_of(L[q], x2), k)
        else:
            row_fill(out2, r0 + q, np.nan)


@njit
def _logsumexp_short_group(x2, out1, p, k, r0, g, m, rest, ties, L):
    # m + L for rows r0 .. r0 + g - 1, each as vectors (_lse_short_group); a row whose
    # maximum is not finite gives NaN if it holds one, else that maximum (+inf, -inf)
    wide_vectors()
    _lse_short_group(x2, p, k, r0, g, m, rest, ties, L)
    for q in range(g):
        i = r0 + q
        if math.isfinite(m[q]):
            out1[i] = m[q] + L[q]  # NaN if the row holds one
        else:
            out1[i] = np.nan if has_nan(x2[i]) else m[q]


@njit(parallel=True, cache=True)
def _softmax_short(x2, out2, s):
    # y_j = exp((x_j - m) s) / sum_k exp((x_k - m) s), each short row as vectors
    # gradient: dx = y * (dy - sum(dy * y)) * s  (_softmax_backward_rows)
    wide_vectors()
    p = short_exp_args(s, x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    for i in prange(x2.shape[0]):
        wide_vectors()
        short_softmax_row(x2, out2, i, p, k)


@njit(cache=True)
def _softmax_short_serial(x2, out2, s):
    # serial twin of _softmax_short, for small inputs
    wide_vectors()
    x2, out2, s = borrowed(x2), borrowed(out2), borrowed(s)
    p = short_exp_args(s, x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    for i in range(x2.shape[0]):
        short_softmax_row(x2, out2, i, p, k)


@njit(parallel=True, cache=True)
def _log_softmax_short(x2, out2, s):
    # y_j = (x_j - m) s - log1p(rest + ties - 1), short rows SHORT_GROUP at a time as vectors
    # gradient: dx = (dy - exp(y) * sum(dy)) * s  (_log_softmax_backward_rows)
    wide_vectors()
    p = short_exp_args(s, x2)
    sm = as_type_of(s[0], x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        _log_softmax_short_group(x2, out2, p, sm, k, r0, g, m, rest, ties, L)


@njit(parallel=True, cache=True)
def _logsumexp_short(x2, out1):
    # log(sum_j exp(x_j)) = m + log1p(rest + ties - 1), short rows SHORT_GROUP at a time
    # gradient: softmax(x) (logsumexp's VJP is softmax: _softmax_short)
    wide_vectors()
    p = short_exp_args(_ONE, x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    N = x2.shape[0]
    for t in prange((N + SHORT_GROUP - 1) // SHORT_GROUP):
        wide_vectors()
        r0, g = group_span(t, SHORT_GROUP, N)
        m, rest, ties, L = short_scratch(x2)
        _logsumexp_short_group(x2, out1, p, k, r0, g, m, rest, ties, L)


@njit(parallel=True, cache=True)
def _backward_short(y2, dy2, out2, s, log):
    # y = softmax(x s):      dx_j = y_j (dy_j - sum_k dy_k y_k) s
    # y = log_softmax(x s):  dx_j = (dy_j - exp(y_j) sum_k dy_k) s  (log), short rows as
    # vectors (the vector-Jacobian products; linear in dy)
    wide_vectors()
    sm = as_type_of(s[0], y2)
    k = short_chunks(y2.shape[1], y2.itemsize)
    for i in prange(y2.shape[0]):
        wide_vectors()
        short_backward(y2, dy2, out2, i, sm, log, k)


@njit(cache=True)
def _backward_short_serial(y2, dy2, out2, s, log):
    # serial twin of _backward_short, for small inputs
    wide_vectors()
    y2, dy2, out2, s = borrowed(y2), borrowed(dy2), borrowed(out2), borrowed(s)
    sm = as_type_of(s[0], y2)
    k = short_chunks(y2.shape[1], y2.itemsize)
    for i in range(y2.shape[0]):
        short_backward(y2, dy2, out2, i, sm, log, k)


@njit(cache=True)
def _logsumexp_short_serial(x2, out1):
    # serial twin of _logsumexp_short, for small inputs
    wide_vectors()
    x2, out1 = borrowed(x2), borrowed(out1)
    p = short_exp_args(_ONE, x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _logsumexp_short_group(x2, out1, p, k, r0, g, m, rest, ties, L)


@njit(cache=True)
def _log_softmax_short_serial(x2, out2, s):
    # serial twin of _log_softmax_short, for small inputs
    wide_vectors()
    x2, out2, s = borrowed(x2), borrowed(out2), borrowed(s)
    p = short_exp_args(s, x2)
    sm = as_type_of(s[0], x2)
    k = short_chunks(x2.shape[1], x2.itemsize)
    N = x2.shape[0]
    m, rest, ties, L = short_scratch(x2)
    for t in range((N + SHORT_GROUP - 1) // SHORT_GROUP):
        r0, g = group_span(t, SHORT_GROUP, N)
        _log_softmax_short_group(x2, out2, p, sm, k, r0, g, m, rest, ties, L)


# --- lane kernels (classes strided, inner contiguous) ---------------------------------------
# Task t covers outer index o and lanes [i0, i0 + w) (``lane_block``; i0 and w unsigned).


# Lane blocks of arrays that stream from memory (online, from cpu.online_lanes: float32
# only) take their range and sums in one read (lanes_online_total) and their exponentials
# again in the output pass: in tiles, scaled, into out3 (lanes_exp_scale), or, in place or
# for mixed lanes, stored and then scaled (lanes_exp, lanes_scale: the same bits).
# Storing the exponentials with the sums and scaling them reads and writes out3 twice, and
# there that memory pass cost more than a second exponential (see "Online sums" in
# _math.py).  Other blocks take the range, the stored exponentials with their sums, and
# the scaling; float64 always does (with the sums apart and the exponentials again, its
# output pass measured 1.04-1.13x the time: an exponential of twice the cost for half
# the elements per byte).


@njit
def _softmax_lane_block(x3, out3, s, o, i0, w, online):
    wide_vectors()
    m = np.empty(w, x3.dtype)
    low = np.empty(w, x3.dtype)
    total = np.empty(w, np.float64)
    aside = same_memory(x3, out3)
    if online:
        near = lanes_online_total(x3, o, i0, m, low, s, total)
    else:
        near = lanes_range(x3, o, i0, m, low, s)
        lanes_exp_store(x3, o, i0, m, s, out3, total, near, aside)
    inv = np.empty(w, x3.dtype)
    for k in range(w):
        inv[k] = 1.0 / total[k] if math.isfinite(m[k]) else np.nan
    if not online:
        lanes_scale(out3, o, i0, inv)
    elif not aside and near[0] != NEAR_MIXED:
        lanes_exp_scale(x3, o, i0, m, s, inv, out3, near[0] == NEAR_ALL)
    else:
        lanes_exp(x3, o, i0, m, s, out3, near, aside)
        lanes_scale(out3, o, i0, inv)


@njit(parallel=True, cache=True)
def _softmax_lanes(x3, out3, s, width, online):
    # y_j = exp((x_j - m) s) / sum_k exp((x_k - m) s) along axis 1, lane by lane
    # gradient: dx = y * (dy - sum(dy * y)) * s  (_softmax_backward_lanes)
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _softmax_lane_block(x3, out3, s, o, i0, n, online)


@njit(cache=True)
def _softmax_lanes_serial(x3, out3, s, width, online):
    # serial twin of _softmax_lanes, for small inputs
    wide_vectors()
    x3, out3, s = borrowed(x3), borrowed(out3), borrowed(s)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _softmax_lane_block(x3, out3, s, o, i0, n, online)


@njit
def _lse_lane_block(x3, o, i0, w, s, m, lse):
    """m[k] and lse[k] = log(sum_j exp((x - m[k]) s)) for each lane (0 where m is not finite)."""
    wide_vectors()
    rest = np.empty(w, np.float64)
    ties = np.empty(w, np.float64)
    near = lanes_range(x3, o, i0, m, np.empty(w, x3.dtype), s)
    lanes_sumexp(x3, o, i0, m, s, rest, ties, near)
    for k in range(w):  # computed before the select, so that the loop vectorises
        t = log1p_rest_vec(rest[k], ties[k])
        lse[k] = t if math.isfinite(m[k]) else 0.0


@njit
def _log_softmax_lane_block(x3, out3, s, o, i0, w):
    wide_vectors()
    m = np.empty(w, x3.dtype)
    lse = np.empty(w, np.float64)
    _lse_lane_block(x3, o, i0, w, s, m, lse)
    sm = as_type_of(s[0], x3)
    lsm = np.empty(w, x3.dtype)
    for k in range(w):
        lsm[k] = lse[k] if math.isfinite(m[k]) else np.nan
    if same_memory(x3, out3):
        for j in range(x3.shape[1]):
            _log_softmax_lane_out_aside(x3, out3, o, j, i0, m, sm, lsm)
        return
    C = x3.shape[1]
    if not wide_piece(x3, w):
        for j in range(C):  # nested: as a function of its own 20% slower (znver5)
            prefetch_lanes(x3, o, j + AHEAD, i0, w)
            for k in range(w):
                out3[o, j, i0 + k] = (x3[o, j, i0 + k] - m[k]) * sm - lsm[k]
        return
    for j0 in range(0, C, LANE_TILE):  # a wide piece: no prefetch hints (prefetch_lanes)
        _log_softmax_lane_tile(x3, out3, o, j0, min(LANE_TILE, C - j0), i0, m, sm, lsm)


@njit(fastmath=_REDUCE)
def _log_softmax_lane_tile(x3, out3, o, j0, n, i0, m, sm, lsm):
    # out3 = (x3 - m[k]) s - lse[k] over the lane tile of n rows at j0 (out3 is not x3)
    wide_vectors()
    w = uint64(m.shape[0])
    for k in range(w):
        mk = m[k]
        c = lsm[k]
        for r in range(LANE_TILE):
            j = tile_row(j0, r, n)
            out3[o, j, i0 + k] = (x3[o, j, i0 + k] - mk) * sm - c


# In place (out3 is an input), the lane blocks' output loops read the pieces of class row j
# from copies on the stack: reading what it writes, a loop runs LLVM's scalar fallback (1.3x
# slower for log_softmax along axis 0, 2.6x for softmax's exponentials; the same bits).


@njit(fastmath=_REDUCE)
def _log_softmax_lane_out_aside(x3, out3, o, j, i0, m, sm, lsm):
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    src = stack_lanes(x3)
    for k in range(w):
        src[k] = x3[o, j, i0 + k]
    for k in range(w):
        out3[o, j, i0 + k] = (src[k] - m[k]) * sm - lsm[k]


@njit(parallel=True, cache=True)
def _log_softmax_lanes(x3, out3, s, width):
    # y_j = (x_j - m) s - log(sum_k exp((x_k - m) s)) along axis 1, lane by lane
    # gradient: dx = (dy - exp(y) * sum(dy)) * s  (_log_softmax_backward_lanes)
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _log_softmax_lane_block(x3, out3, s, o, i0, n)


@njit(cache=True)
def _log_softmax_lanes_serial(x3, out3, s, width):
    # serial twin of _log_softmax_lanes, for small inputs
    wide_vectors()
    x3, out3, s = borrowed(x3), borrowed(out3), borrowed(s)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _log_softmax_lane_block(x3, out3, s, o, i0, n)


@njit
def _logsumexp_lane_block(x3, out2, o, i0, w):
    wide_vectors()
    m = np.empty(w, x3.dtype)
    lse = np.empty(w, np.float64)
    _lse_lane_block(x3, o, i0, w, (1.0, 0.0), m, lse)
    for k in range(w):
        if math.isfinite(m[k]):
            out2[o, i0 + k] = m[k] + lse[k]
        else:
            out2[o, i0 + k] = np.nan if has_nan(x3[o, :, i0 + k]) else m[k]


@njit(parallel=True, cache=True)
def _logsumexp_lanes(x3, out2, width):
    # lse = m + log(sum_k exp(x_k - m)) along axis 1, lane by lane
    # gradient: d lse / dx = softmax(x)
    wide_vectors()
    nb = (x3.shape[2] + width - 1) // width
    for t in prange(x3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _logsumexp_lane_block(x3, out2, o, i0, n)


@njit(cache=True)
def _logsumexp_lanes_serial(x3, out2, width):
    # serial twin of _logsumexp_lanes, for small inputs
    wide_vectors()
    x3, out2 = borrowed(x3), borrowed(out2)
    nb = (x3.shape[2] + width - 1) // width
    for t in range(x3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, x3.shape[2])
        _logsumexp_lane_block(x3, out2, o, i0, n)


@njit
def _softmax_backward_lane_block(y3, dy3, out3, s, o, i0, w):
    wide_vectors()
    dot = np.empty(w, np.float64)
    lanes_dot(dy3, y3, o, i0, dot)
    d = np.empty(w, y3.dtype)
    for k in range(w):
        d[k] = dot[k]
    sm = as_type_of(s[0], y3)
    if same_memory(y3, out3) or same_memory(dy3, out3):
        for j in range(y3.shape[1]):
            _softmax_backward_lane_out_aside(y3, dy3, out3, o, j, i0, d, sm)
        return
    # a row at a time: in lane tiles this pass (two inputs) took 1.13-1.35x the time at
    # 300 x 4096 and about the same at 1000 x 4096 (float32, znver4, in-process)
    for j in range(y3.shape[1]):
        prefetch_lanes(y3, o, j + AHEAD, i0, w)
        prefetch_lanes(dy3, o, j + AHEAD, i0, w)
        for k in range(w):
            out3[o, j, i0 + k] = y3[o, j, i0 + k] * (dy3[o, j, i0 + k] - d[k]) * sm


@njit
def _softmax_backward_lane_out_aside(y3, dy3, out3, o, j, i0, d, sm):
    wide_vectors()
    w = uint64(d.shape[0])
    a = stack_lanes(y3)
    b = stack_lanes(dy3)
    for k in range(w):
        a[k] = y3[o, j, i0 + k]
        b[k] = dy3[o, j, i0 + k]
    for k in range(w):
        out3[o, j, i0 + k] = a[k] * (b[k] - d[k]) * sm


@njit(parallel=True, cache=True)
def _softmax_backward_lanes(y3, dy3, out3, s, width):
    # y = softmax(x s) along axis 1:  dx_j = y_j (dy_j - sum_k dy_k y_k) s
    # (the vector-Jacobian product of softmax; linear in dy)
    wide_vectors()
    nb = (y3.shape[2] + width - 1) // width
    for t in prange(y3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, y3.shape[2])
        _softmax_backward_lane_block(y3, dy3, out3, s, o, i0, n)


@njit(cache=True)
def _softmax_backward_lanes_serial(y3, dy3, out3, s, width):
    # serial twin of _softmax_backward_lanes, for small inputs
    wide_vectors()
    y3, dy3, out3, s = borrowed(y3), borrowed(dy3), borrowed(out3), borrowed(s)
    nb = (y3.shape[2] + width - 1) // width
    for t in range(y3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, y3.shape[2])
        _softmax_backward_lane_block(y3, dy3, out3, s, o, i0, n)


@njit
def _log_softmax_backward_lane_block(logp3, dy3, out3, s, o, i0, w):
    wide_vectors()
    total = np.empty(w, np.float64)
    lanes_sum(dy3, o, i0, total)
    t = np.empty(w, logp3.dtype)
    for k in range(w):
        t[k] = total[k]
    sm = as_type_of(s[0], logp3)
    if same_memory(logp3, out3) or same_memory(dy3, out3):
        for j in range(logp3.shape[1]):
            _log_softmax_backward_lane_out_aside(logp3, dy3, out3, o, j, i0, t, sm)
        return
    C = logp3.shape[1]
    if not wide_piece(logp3, w):
        for j in range(C):
            prefetch_lanes(logp3, o, j + AHEAD, i0, w)
            prefetch_lanes(dy3, o, j + AHEAD, i0, w)
            for k in range(w):
                out3[o, j, i0 + k] = (dy3[o, j, i0 + k]
                                      - exp(logp3[o, j, i0 + k]) * t[k]) * sm
        return
    for j0 in range(0, C, LANE_TILE):  # a wide piece: no prefetch hints (prefetch_lanes)
        _log_softmax_backward_lane_tile(logp3, dy3, out3, o, j0, min(LANE_TILE, C - j0), i0,
                                        t, sm)


@njit(fastmath=_REDUCE)
def _log_softmax_backward_lane_tile(logp3, dy3, out3, o, j0, n, i0, t, sm):
    # out3 = (dy3 - exp(logp3) t[k]) s over the lane tile of n rows at j0 (out3 is no input)
    wide_vectors()
    w = uint64(t.shape[0])
    for k in range(w):
        c = t[k]
        for r in range(LANE_TILE):
            j = tile_row(j0, r, n)
            out3[o, j, i0 + k] = (dy3[o, j, i0 + k] - exp(logp3[o, j, i0 + k]) * c) * sm


@njit
def _log_softmax_backward_lane_out_aside(logp3, dy3, out3, o, j, i0, t, sm):
    wide_vectors()
    w = uint64(t.shape[0])
    a = stack_lanes(logp3)
    b = stack_lanes(dy3)
    for k in range(w):
        a[k] = logp3[o, j, i0 + k]
        b[k] = dy3[o, j, i0 + k]
    for k in range(w):
        out3[o, j, i0 + k] = (b[k] - exp(a[k]) * t[k]) * sm


@njit(parallel=True, cache=True)
def _log_softmax_backward_lanes(logp3, dy3, out3, s, width):
    # logp = log_softmax(x s) along axis 1:  dx_j = (dy_j - exp(logp_j) sum_k dy_k) s
    # (the vector-Jacobian product of log_softmax; linear in dy)
    wide_vectors()
    nb = (logp3.shape[2] + width - 1) // width
    for t in prange(logp3.shape[0] * nb):
        wide_vectors()
        o, i0, n = lane_block(t, nb, width, logp3.shape[2])
        _log_softmax_backward_lane_block(logp3, dy3, out3, s, o, i0, n)


@njit(cache=True)
def _log_softmax_backward_lanes_serial(logp3, dy3, out3, s, width):
    # serial twin of _log_softmax_backward_lanes, for small inputs
    wide_vectors()
    logp3, dy3, out3, s = borrowed(logp3), borrowed(dy3), borrowed(out3), borrowed(s)
    nb = (logp3.shape[2] + width - 1) // width
    for t in range(logp3.shape[0] * nb):
        o, i0, n = lane_block(t, nb, width, logp3.shape[2])
        _log_softmax_backward_lane_block(logp3, dy3, out3, s, o, i0, n)


# --- logsumexp with weights b (SciPy's semantics), lanes of width 1 or more ---------------


@njit
def _lse_b_lane(x3, b3, o, i, return_sign):
    # lse = log|sum_j b_j exp(x_j)| with terms of b_j == 0 left out (even if x_j is inf/NaN);
    # sign = sign of the sum.  The maximal terms are kept apart: lse = m + log|mb| + log1p(r/mb).
    # gradient: d lse / dx_j = b_j exp(x_j - lse) * sign
    wide_vectors()
    C = x3.shape[1]
    m = -np.inf
    for j in range(C):
        if b3[o, j, i] != 0:
            m = max_nan(m, np.float64(x3[o, j, i]))
    if math.isnan(m):
        return np.nan, np.nan
    if m == -np.inf:
        return -np.inf, 0.0
    if m == np.inf:  # direct sum: +-inf, or NaN when infinities of both signs meet
        total = 0.0
        for j in range(C):
            bj = np.float64(b3[o, j, i])
            if bj != 0 and x3[o, j, i] == np.inf:
                total += bj * np.inf
        sign = np.nan if math.isnan(total) else (1.0 if total > 0 else -1.0)
    else:
        mb = 0.0
        rest = 0.0
        for j in range(C):
            bj = np.float64(b3[o, j, i])
            if bj != 0:
                v = np.float64(x3[o, j, i])
                if v == m:
                    mb += bj
                else:
                    rest += bj * exp_sub(x3[o, j, i], as_type_of(m, x3), (1.0, 0.0))
        total, sign = formulas.signed_lse(m, mb, rest)
    if not return_sign and sign < 0:
        total = np.nan
    return total, sign


@njit(parallel=True, cache=True)
def _logsumexp_b(x3, b3, out2, sign2, return_sign):
    # out = log|sum_j b_j exp(x_j)| along axis 1 (SciPy's logsumexp with b), sign2 its sign
    # gradient: d out / dx_j = b_j exp(x_j - out) * sign
    wide_vectors()
    n = x3.shape[0] * x3.shape[2]
    for t in prange(n):
        wide_vectors()
        o = t // x3.shape[2]
        i = t % x3.shape[2]
        out2[o, i], sign2[o, i] = _lse_b_lane(x3, b3, o, i, return_sign)


@njit(cache=True)
def _logsumexp_b_serial(x3, b3, out2, sign2, return_sign):
    # serial twin of _logsumexp_b, for small inputs
    wide_vectors()
    x3, b3, out2, sign2 = borrowed(x3), borrowed(b3), borrowed(out2), borrowed(sign2)
    n = x3.shape[0] * x3.shape[2]
    for t in range(n):
        o = t // x3.shape[2]
        i = t % x3.shape[2]
        out2[o, i], sign2[o, i] = _lse_b_lane(x3, b3, o, i, return_sign)
