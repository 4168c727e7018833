"""Independent float64 references for the tests: NumPy/SciPy formulas and mpmath.

Nothing here imports jitloss.  Each reference is the textbook formula evaluated in float64
(or in mpmath at 100 digits), written for clarity, not speed.
"""

from __future__ import annotations

import mpmath
import numpy as np
import scipy.special

mpmath.mp.dps = 100


def f64(x):
    return np.asarray(x, dtype=np.float64)


# --- softmax family ------------------------------------------------------------------


def softmax(x, axis=-1, temperature=1.0):
    return scipy.special.softmax(f64(x) / temperature, axis=axis)


def log_softmax(x, axis=-1, temperature=1.0):
    """(x - m) - log1p(sum of exp(x - m) over all but one maximal element), in float64.

    scipy.special.log_softmax takes the log of the whole sum, which rounds
    log_softmax([0, -40])[0] to 0 instead of -4.25e-18; this keeps the small terms.
    """
    x = f64(x) / temperature
    axes = tuple(range(x.ndim)) if axis is None else np.atleast_1d(axis)
    axes = tuple(int(a) % max(x.ndim, 1) for a in axes)
    moved = np.moveaxis(x, axes, tuple(range(-len(axes), 0))) if axes else x[..., None]
    flat = moved.reshape(moved.shape[: moved.ndim - max(len(axes), 1)] + (-1,))
    with np.errstate(invalid="ignore", over="ignore"):
        m = flat.max(axis=-1, keepdims=True)
        d = flat - m
        e = np.exp(d)
        first = np.argmax(flat, axis=-1)[..., None]
        np.put_along_axis(e, first, 0.0, axis=-1)
        y = d - np.log1p(e.sum(axis=-1, keepdims=True))
    y = y.reshape(moved.shape)
    return np.moveaxis(y, tuple(range(-len(axes), 0)), axes) if axes else y[..., 0]


def logsumexp(x, axis=-1, b=None, keepdims=False, return_sign=False):
    return scipy.special.logsumexp(
        f64(x), axis=axis, b=None if b is None else f64(b), keepdims=keepdims,
        return_sign=return_sign,
    )


def softmax_backward(y, dy, axis=-1, temperature=1.0):
    """dx = J^T dy with the softmax Jacobian J = diag(y) - y y^T, built row by row."""
    y = np.moveaxis(f64(y), axis, -1)
    dy = np.moveaxis(f64(dy), axis, -1)
    out = np.empty_like(y)
    for idx in np.ndindex(y.shape[:-1]):
        yr = y[idx]
        jac = np.diag(yr) - np.outer(yr, yr)
        out[idx] = jac.T @ dy[idx] / temperature
    return np.moveaxis(out, -1, axis)


def log_softmax_backward(logp, dy, axis=-1, temperature=1.0):
    """dx = J^T dy with the log-softmax Jacobian J = I - 1 p^T, built row by row."""
    logp = np.moveaxis(f64(logp), axis, -1)
    dy = np.moveaxis(f64(dy), axis, -1)
    out = np.empty_like(logp)
    n = logp.shape[-1]
    for idx in np.ndindex(logp.shape[:-1]):
        p = np.exp(logp[idx])
        jac = np.eye(n) - np.outer(np.ones(n), p)
        out[idx] = jac.T @ dy[idx] / temperature
    return np.moveaxis(out, -1, axis)


# --- mpmath (for the ulp tests) -------------------------------------------------------


def mp_softmax_row(row, temperature=1.0):
    """Softmax and log-softmax of one row with 100-digit arithmetic, as mpf lists."""
    t = mpmath.mpf(temperature)
    xs = [mpmath.mpf(float(v)) / t for v in row]
    m = max(xs)
    top = xs.index(m)
    es = [mpmath.exp(v - m) for v in xs]
    # log(sum) as log1p of the terms beyond the maximal one: at 100 digits, 1 + 1e-94 would
    # keep only 6 digits of the small part
    log_s = mpmath.log1p(mpmath.fsum(e for k, e in enumerate(es) if k != top))
    s = 1 + mpmath.fsum(e for k, e in enumerate(es) if k != top)
    return [e / s for e in es], [v - m - log_s for v in xs]


def ulp_error(got, exact, dtype):
    """|got - exact| in units of the last place of exact rounded to dtype (mpf exact)."""
    dtype = np.dtype(dtype)
    rounded = dtype.type(float(exact))
    if rounded == 0:
        spacing = float(np.finfo(dtype).smallest_subnormal)
    else:
        spacing = float(np.spacing(abs(rounded)))
    return float(abs(mpmath.mpf(float(got)) - exact)) / spacing


def finite_difference(f, x, dy, eps=1e-6):
    """Directional derivatives: sum(dy * f(x + eps e_i)) - ... for each element i (float64)."""
    x = f64(x).copy()
    grad = np.empty_like(x)
    flat = x.reshape(-1)
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = np.sum(dy * f(x))
        flat[i] = old - eps
        down = np.sum(dy * f(x))
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


# --- cross-entropy ------------------------------------------------------------------------


def _lse_last(x):
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def cross_entropy_per_sample(x, target, axis=-1, weight=None, ignore_index=-100,
                             label_smoothing=0.0, z_loss=0.0):
    """PyTorch's cross-entropy per sample, in float64 NumPy; returns (losses, denominator)."""
    xm = np.moveaxis(f64(x), axis, -1)
    classes = xm.shape[-1]
    logp = log_softmax(xm, axis=-1)
    lse = _lse_last(xm)
    w = np.ones(classes) if weight is None else f64(weight)
    t = np.asarray(target)
    eps = label_smoothing
    if t.dtype.kind in "iu":
        live = t != ignore_index
        tc = np.where(live, t, 0)
        nll = -w[tc] * np.take_along_axis(logp, tc[..., None], axis=-1)[..., 0]
        smooth = -(logp * w).sum(axis=-1)
        per = (1 - eps) * nll + eps / classes * smooth + z_loss * lse**2
        per = np.where(live, per, 0.0)
        denominator = w[tc][live].sum()
    else:
        tt = np.moveaxis(f64(t), axis, -1) * (1 - eps) + eps / classes
        per = -(logp * tt * w).sum(axis=-1) + z_loss * lse**2
        denominator = per.size
    return per, denominator


def cross_entropy(x, target, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0):
    per, denominator = cross_entropy_per_sample(x, target, axis, weight, ignore_index,
                                                label_smoothing, z_loss)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return per.sum() / denominator


def cross_entropy_grad(x, target, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                       label_smoothing=0.0, z_loss=0.0, dloss=1.0):
    """The analytic gradient, built from softmax and one-hot arrays in float64."""
    xm = np.moveaxis(f64(x), axis, -1)
    classes = xm.shape[-1]
    p = softmax(xm, axis=-1)
    lse = _lse_last(xm)[..., None]
    w = np.ones(classes) if weight is None else f64(weight)
    t = np.asarray(target)
    eps = label_smoothing
    if t.dtype.kind in "iu":
        live = (t != ignore_index)[..., None]
        tc = np.where(t != ignore_index, t, 0)
        onehot = np.zeros_like(p)
        np.put_along_axis(onehot, tc[..., None], 1.0, axis=-1)
        wy = w[tc][..., None]
        g = (1 - eps) * wy * (p - onehot) + eps / classes * (w.sum() * p - w) + 2 * z_loss * lse * p
        g = np.where(live, g, 0.0)
        denominator = w[tc][live[..., 0]].sum()
    else:
        tt = np.moveaxis(f64(t), axis, -1) * (1 - eps) + eps / classes
        g = p * (tt * w).sum(axis=-1, keepdims=True) - w * tt + 2 * z_loss * lse * p
        denominator = t.size // classes
    k = np.asarray(dloss, dtype=np.float64)
    if reduction == "none":
        g = g * np.broadcast_to(k, g.shape[:-1])[..., None]
    elif reduction == "sum":
        g = g * k
    else:
        g = g * (k / denominator if denominator else 0.0)
    return np.moveaxis(g, -1, axis)


# --- margin losses ------------------------------------------------------------------------


def max_margin_pairs(scores, num_negatives=None, margin=1.0):
    s = f64(scores)
    s = s.reshape(-1, num_negatives + 1) if s.ndim == 1 else s
    return np.maximum(0.0, margin - s[:, :1] + s[:, 1:])


def max_margin_grad(scores, num_negatives=None, margin=1.0, dpairs=1.0):
    """d(sum of dpairs * pairs)/d scores, with subgradient 0 at the hinge."""
    s = f64(scores)
    s2 = s.reshape(-1, num_negatives + 1) if s.ndim == 1 else s
    active = (margin - s2[:, :1] + s2[:, 1:]) > 0
    k = np.broadcast_to(np.asarray(dpairs, dtype=np.float64), active.shape) * active
    g = np.concatenate([-k.sum(axis=1, keepdims=True), k], axis=1)
    return g.reshape(s.shape)


def _multi_margin_terms(x, y, margin, weight, axis):
    """(y, w, z_j = margin - x_y + x_j with classes last, mask of j != y, C)."""
    x = np.moveaxis(f64(x), axis, -1)
    classes = x.shape[-1]
    y = np.asarray(y)
    w = np.ones(classes) if weight is None else f64(weight)
    z = margin - np.take_along_axis(x, y[..., None], axis=-1) + x
    others = np.arange(classes) != y[..., None]
    return y, w, z, others, classes


def multi_margin_per_sample(x, y, p=1, margin=1.0, weight=None, axis=-1):
    y, w, z, others, classes = _multi_margin_terms(x, y, margin, weight, axis)
    h = np.where((z > 0) & others, z**p, 0.0)
    return w[y] * h.sum(axis=-1) / classes


def multi_margin_grad(x, y, p=1, margin=1.0, weight=None, axis=-1, dsample=1.0):
    y, w, z, others, classes = _multi_margin_terms(x, y, margin, weight, axis)
    d = np.where((z > 0) & others, p * z ** (p - 1), 0.0) * (w[y] / classes)[..., None]
    d = d * np.broadcast_to(np.asarray(dsample, dtype=np.float64), y.shape)[..., None]
    np.put_along_axis(d, y[..., None], -d.sum(axis=-1, keepdims=True), axis=-1)
    return np.moveaxis(d, -1, axis)


def hinge_per_sample(x, y, margin=1.0, axis=-1):
    x = np.moveaxis(f64(x), axis, -1)
    y = np.asarray(y)
    aug = x + margin * (np.arange(x.shape[-1]) != y[..., None])
    return aug.max(axis=-1) - np.take_along_axis(x, y[..., None], axis=-1)[..., 0]


def hinge_grad_rows(x, y, margin, k):
    """Crammer-Singer subgradient of (N, C) rows in x's own precision, row by row: k (e_j* -
    e_y) with j* = np.argmax (the first) of x_j + margin over j != y, when that beats x_y;
    a row holding a NaN is all NaN."""
    x = np.asarray(x)
    g = np.zeros(x.shape, x.dtype)
    for i, (row, t) in enumerate(zip(x, y)):
        if np.isnan(row).any():
            g[i] = np.nan
            continue
        aug = row + x.dtype.type(margin)
        aug[t] = -np.inf
        j = int(np.argmax(aug))
        if row.size > 1 and aug[j] > row[t]:
            g[i, j] = k[i]
            g[i, t] = -k[i]
    return g
