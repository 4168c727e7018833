"""Margin (hinge) losses with fused gradients: the vectorised max-margin loss, PyTorch's
multi_margin_loss (Weston-Watkins) and the Crammer-Singer multiclass hinge.

Public layer: arguments are checked and shaped here; the per-sample work is done by
``jitloss.cpu.margin`` (or ``jitloss.cuda.margin`` for CUDA arrays) on C-contiguous rows
(a class axis other than the last costs one transposed copy); the per-sample losses are
reduced here in a fixed order.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _args
from ._args import Rows, check_nonnegative, check_out, check_reduction, float_inputs
from .cpu import PARALLEL_MIN_ELEMENTS as _PARALLEL_MIN
from .cpu import _labels

__all__ = [
    "max_margin_loss",
    "max_margin_loss_with_grad",
    "multi_margin_loss",
    "multi_margin_loss_with_grad",
    "multiclass_hinge_loss",
    "multiclass_hinge_loss_with_grad",
]


@functools.cache
def _cpu():
    # imported at the first call: ``import jitloss`` plus a first softmax then skips this
    # family's kernel definitions (about 5 ms of numba dispatchers for the margin losses)
    from .cpu import margin as backend

    return backend


def _cuda():
    from .cuda import margin as backend  # imported lazily

    return backend


def _on_cuda(*arrays) -> bool:
    return _args.any_cuda_array(*arrays)


# Small calls with the commonest arguments take one compiled call (cpu/margin.py's *_small:
# checks, losses and their sum; 14 classes in about half the time); anything else, or a
# call these checks do not admit, goes the general way, which gives the same bits.


def _small_args(size, margin, reduction, dloss=None, grad_out=None, like=None) -> bool:
    # grad_out may lie over the labels: the small kernels copy them then (cpu._math.apart)
    return (
        0 < size < _PARALLEL_MIN and type(reduction) is str
        and (reduction == "mean" or reduction == "sum")
        and type(margin) in (float, int) and 0 <= margin < float("inf") and dloss is None
        and (grad_out is None or _args.plain_out(grad_out, like))
    )


def _small_index(scores, target, axis, margin, reduction, dloss=None, grad_out=None) -> bool:
    """True for (N, C) C-contiguous rows with int64 labels and the commonest arguments."""
    return _args.plain_index_rows(scores, target, axis) and _small_args(
        scores.size, margin, reduction, dloss, grad_out, scores)


def _small_index_loss(found, scores, target, reduction):
    """The returned loss of a small class-index call from its (first bad label, sum of the
    losses); raises the label error if there was a bad label."""
    first, total = found
    if first >= 0:
        raise _args.label_error(target, first, scores.shape[1], None)
    return _args.reduce_total(total, reduction, scores.shape[0], scores.dtype)


def _small_pairs(scores, num_negatives, margin, reduction, dloss=None, grad_out=None) -> bool:
    """True for (B, 1 + N) C-contiguous float32/float64 rows and the commonest arguments."""
    return (
        type(scores) is np.ndarray and scores.ndim == 2 and scores.shape[1] >= 2
        and num_negatives is None and scores.dtype in _args.NATIVE
        and scores.flags.c_contiguous
        and _small_args(scores.size, margin, reduction, dloss, grad_out, scores)
    )


# --- max-margin ------------------------------------------------------------------------------


class _PairPlan(NamedTuple):
    s: np.ndarray  # the caller's scores as an array
    s2: np.ndarray  # (B, 1 + N) C-contiguous rows
    compute: np.dtype
    result: np.dtype
    margin: float
    reduction: str


def _pair_plan(scores, num_negatives, margin, reduction) -> _PairPlan:
    reduction = check_reduction(reduction)
    margin = check_nonnegative(margin, "margin")
    (s,), compute, result = float_inputs((scores, "scores"))
    if num_negatives is not None:
        if isinstance(num_negatives, (bool, np.bool_)) or not isinstance(
            num_negatives, numbers.Integral
        ):
            raise TypeError(f"num_negatives must be an integer, got {num_negatives!r}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
    if s.ndim == 1:
        if num_negatives is None:
            raise ValueError(
                "1-D scores need num_negatives=N: they hold groups of 1 + N scores, the "
                "positive first"
            )
        group = int(num_negatives) + 1
        if s.shape[0] % group:
            raise ValueError(
                f"scores has length {s.shape[0]}, not a multiple of 1 + num_negatives = {group}"
            )
        s2 = s.reshape(-1, group)
    elif s.ndim == 2:
        if s.shape[1] < 2:
            raise ValueError(
                f"scores of shape {s.shape} has no negatives: expected (B, 1 + N), N >= 1"
            )
        if num_negatives is not None and num_negatives != s.shape[1] - 1:
            raise ValueError(
                f"num_negatives={num_negatives} does not match scores of shape {s.shape}"
            )
        s2 = s
    else:
        raise ValueError(f"scores must be 1-D or 2-D, got shape {s.shape}")
    return _PairPlan(s, np.ascontiguousarray(s2), compute, result, margin, reduction)


def max_margin_loss(scores: ArrayLike, *, num_negatives: Optional[int] = None,
                    margin: float = 1.0, reduction: str = "mean") -> Any:
    r"""The vectorised max-margin (pairwise hinge) loss of positives against negatives.

    Each sample b has one positive score :math:`s_{b0}` and N negative scores
    :math:`s_{bj}`; each pair costs

    .. math:: h_{bj} = \max(0,\ \mathrm{margin} - s_{b0} + s_{bj}),\quad j = 1..N.

    Parameters
    ----------
    scores : array_like or CUDA array
        ``(B, 1 + N)`` with the positive in column 0, or 1-D of length ``B * (1 + N)``
        in the same order (positive first in each group) with ``num_negatives=N``.
    num_negatives : int, optional
        N; required for 1-D scores.
    margin : float, optional
        Finite and >= 0.  Default 1.
    reduction : {"mean", "sum", "none"}, optional
        "none" returns the ``(B, N)`` pair losses, "mean" averages the B*N pair terms.

    Returns
    -------
    loss : scalar or ndarray

    Examples
    --------
    >>> from jitloss import max_margin_loss
    >>> s = [0.5, 0.2, -0.1, 1.0, -0.5, 0.3]   # B=2 groups: positive, 2 negatives
    >>> round(float(max_margin_loss(s, num_negatives=2, reduction="sum")), 12)
    1.4
    >>> max_margin_loss(s, num_negatives=2, reduction="none")
    array([[0.7, 0.4],
           [0. , 0.3]])
    """
    if _on_cuda(scores):
        return _cuda().max_margin_loss_public(scores, num_negatives, margin, reduction)
    if _small_pairs(scores, num_negatives, margin, reduction):
        total = _cpu().max_margin_small(scores, float(margin))
        n_pairs = scores.shape[0] * (scores.shape[1] - 1)
        return _args.reduce_total(total, reduction, n_pairs, scores.dtype)
    plan = _pair_plan(scores, num_negatives, margin, reduction)
    B, group = plan.s2.shape
    pairs = np.empty((B, group - 1), plan.compute) if plan.reduction == "none" else None
    rows = _cpu().max_margin(plan.s2, plan.margin, pairs)
    if pairs is not None:
        return pairs.astype(plan.result, copy=False)
    return _args.reduce_losses(rows, plan.reduction, B * (group - 1), plan.result)


def max_margin_loss_with_grad(scores: ArrayLike, *, num_negatives: Optional[int] = None,
                              margin: float = 1.0, reduction: str = "mean",
                              dloss: Optional[ArrayLike] = None,
                              grad_out: Optional[np.ndarray] = None) -> Tuple[Any, np.ndarray]:
    r""":func:`max_margin_loss` and its gradient with respect to ``scores``, in one pass.

    With :math:`k_{bj}` the upstream gradient of pair (b, j) (``dloss``, divided by B*N
    for "mean"):

    .. math:: \frac{\partial L}{\partial s_{bj}} = k_{bj} [h_{bj} > 0],\quad
              \frac{\partial L}{\partial s_{b0}} = -\sum_j k_{bj} [h_{bj} > 0]

    (a pair exactly at the hinge, :math:`h_{bj} = 0`, has subgradient 0).

    Parameters
    ----------
    scores, num_negatives, margin, reduction
        As in :func:`max_margin_loss`.
    dloss : float or array_like, optional
        Upstream gradient: a scalar for "mean"/"sum", ``(B, N)`` values (broadcastable)
        for "none".  Default 1.
    grad_out : ndarray, optional
        Array of ``scores``' shape and dtype for the gradient; may be ``scores`` itself.

    Returns
    -------
    loss : scalar or ndarray
    dscores : ndarray
        Same layout as ``scores``.

    Examples
    --------
    >>> from jitloss import max_margin_loss_with_grad
    >>> s = [0.5, 0.2, -0.1, 1.0, -0.5, 0.3]
    >>> loss, g = max_margin_loss_with_grad(s, num_negatives=2, reduction="sum")
    >>> g
    array([-2.,  1.,  1., -1.,  0.,  1.])
    """
    if _on_cuda(scores, grad_out):
        return _cuda().max_margin_loss_with_grad_public(scores, num_negatives, margin,
                                                        reduction, dloss, grad_out)
    if _small_pairs(scores, num_negatives, margin, reduction, dloss, grad_out):
        g2 = np.empty_like(scores) if grad_out is None else grad_out
        total = _cpu().max_margin_grad_small(scores, float(margin), reduction == "mean", g2)
        n_pairs = scores.shape[0] * (scores.shape[1] - 1)
        return _args.reduce_total(total, reduction, n_pairs, scores.dtype), g2
    plan = _pair_plan(scores, num_negatives, margin, reduction)
    B, group = plan.s2.shape
    n_pairs = B * (group - 1)
    k = _args.upstream_scale(dloss, plan.reduction, n_pairs, (B, group - 1))
    dl2 = None
    if not isinstance(k, float):
        dl2, k = np.ascontiguousarray(k), 1.0
    pairs = np.empty((B, group - 1), plan.compute) if plan.reduction == "none" else None
    g2 = _grad_view(grad_out, plan.s, plan.result, plan.compute, (B, group), plan.s2, dl2)
    rows, g2_out = _cpu().max_margin_grad(plan.s2, plan.margin, k, dl2, pairs, g2)
    if pairs is not None:
        loss = pairs.astype(plan.result, copy=False)
    else:
        loss = _args.reduce_losses(rows, plan.reduction, n_pairs, plan.result)
    return loss, _deliver_grad(grad_out, g2, g2_out.reshape(plan.s.shape), plan)


def _grad_view(grad_out, s, result, compute, shape2, s2, dl2):
    """grad_out as C-contiguous rows the kernel may write directly (over the scores s2,
    apart from the upstream gradient dl2), or None."""
    if grad_out is None:
        return None
    check_out(grad_out, s.shape, result, "grad_out")
    if result != compute or not grad_out.flags.c_contiguous:
        return None
    g2 = grad_out.reshape(shape2)
    return g2 if _args.writes_through(g2, s2, apart=(dl2,)) else None


def _deliver_grad(grad_out, direct, grad, plan):
    if grad_out is None:
        return grad.astype(plan.result, copy=False)
    if direct is None:
        np.copyto(grad_out, grad, casting="unsafe")
    return grad_out


# --- class-index margin losses ------------------------------------------------------------------


class _IndexPlan(NamedTuple):
    rows: Rows
    x2: np.ndarray  # (samples, classes) C-contiguous rows
    y1: np.ndarray  # (samples,) int64 labels
    compute: np.dtype
    result: np.dtype
    margin: float
    reduction: str
    plain: bool = False  # (N, C) C-contiguous rows in the caller's own shape


def _index_plan(scores, target, axis, margin, reduction) -> _IndexPlan:
    if (
        _args.plain_index_rows(scores, target, axis) and type(reduction) is str
        and reduction in _args.REDUCTIONS and type(margin) in (float, int)
        and 0 <= margin < float("inf")
    ):
        # the common case ((N, C) C-contiguous rows, int64 labels) skips the general
        # machinery, and _index_results skips its reshapes (14 classes: 23-33 -> 9-17 us)
        n, classes = scores.shape
        first, _ = _labels.scan(target, classes, _labels.NO_IGNORE, _unit(classes, scores.dtype))
        if first >= 0:
            raise _args.label_error(target, first, classes, None)
        rows = Rows(scores.shape, (1,), (0, 1), n, classes, 1)
        return _IndexPlan(rows, scores, target, scores.dtype, scores.dtype, float(margin),
                          reduction, True)
    reduction = check_reduction(reduction)
    margin = check_nonnegative(margin, "margin")
    (x,), compute, result = float_inputs((scores, "scores"))
    if x.ndim == 0:
        raise ValueError("scores must have at least one dimension (the classes)")
    if isinstance(axis, (tuple, list)) or axis is None:
        raise TypeError(f"axis must be a single int (the class axis), got {axis!r}")
    rows = Rows.of(x, _args.normalize_axes(axis, x.ndim), rows_only=True)
    x2 = rows.take3(x).reshape(rows.outer, rows.classes)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    sample_shape = rows.reduced_shape(False)
    if t.shape != sample_shape:
        raise ValueError(
            f"target has shape {t.shape}; expected scores' shape without the class axis, "
            f"{sample_shape}"
        )
    labels = t.astype(np.int64, copy=False)
    first, _ = _labels.scan(labels.reshape(-1), rows.classes, _labels.NO_IGNORE,
                            _unit(rows.classes, compute))
    if first >= 0:
        raise _args.label_error(labels, first, rows.classes, None)
    y1 = rows.take2(labels).reshape(-1)
    return _IndexPlan(rows, x2, y1, compute, result, margin, reduction)


@functools.lru_cache(maxsize=64)
def _unit(classes: int, dtype: np.dtype) -> np.ndarray:
    w = np.ones(classes, dtype)
    w.flags.writeable = False
    return w


def _check_p(p) -> int:
    if isinstance(p, (bool, np.bool_)) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    return int(p)


def _weights(weight, classes, compute):
    if weight is None:
        return _unit(classes, compute)
    w = np.asarray(weight)
    _args.result_dtype(w.dtype, "weight")
    if w.shape != (classes,):
        raise ValueError(f"weight has shape {w.shape}; expected ({classes},), one per class")
    w = np.ascontiguousarray(w, dtype=compute).view()
    w.flags.writeable = False
    return w


def _sample_scale(plan: _IndexPlan, dloss) -> np.ndarray:
    n = plan.rows.outer
    k = _args.upstream_scale(dloss, plan.reduction, n, plan.rows.reduced_shape(False))
    if isinstance(k, float):
        return np.full(n, k)
    return np.ascontiguousarray(plan.rows.take2(k)).reshape(-1)


def _index_grad_out(plan: _IndexPlan, grad_out, k1, w=None):
    """grad_out as the kernel's (samples, classes) rows if it may write them (over the
    scores, apart from the labels, the per-sample scales k1 and the weights w), or None."""
    if grad_out is None:
        return None
    if plan.plain and _args.plain_out(grad_out, plan.x2, plan.y1, k1, w):
        return grad_out
    rows = plan.rows
    check_out(grad_out, rows.shape, plan.result, "grad_out")
    if plan.result != plan.compute:
        return None
    g3 = rows.view3(grad_out)
    if g3 is None or not _args.writes_through(g3, plan.x2.reshape(rows.shape3),
                                              apart=(plan.y1, k1, w)):
        return None
    return g3.reshape(rows.outer, rows.classes)


def _index_results(plan: _IndexPlan, loss1, grad_out=None, direct=None, g2=None):
    if plan.plain:  # results already in the caller's shape and dtype
        loss = _args.reduce_losses(loss1, plan.reduction, plan.rows.outer, plan.result)
        return loss if g2 is None else (loss, _deliver_grad(grad_out, direct, g2, plan))
    rows = plan.rows
    per = loss1.reshape(rows.outer, 1)
    loss = _args.reduce_losses(rows.restore2(per, False), plan.reduction, rows.outer,
                               plan.result)
    if g2 is None:
        return loss
    grad = rows.restore(g2.reshape(rows.shape3))
    return loss, _deliver_grad(grad_out, direct, grad, plan)


def multi_margin_loss(scores: ArrayLike, target: ArrayLike, *, axis: int = -1, p: int = 1,
                      margin: float = 1.0, weight: Optional[ArrayLike] = None,
                      reduction: str = "mean") -> Any:
    r"""PyTorch's ``multi_margin_loss`` (Weston-Watkins multiclass hinge).

    For scores :math:`x` over C classes and target :math:`y`:

    .. math:: \ell = \frac{w_y}{C} \sum_{j \ne y} \max(0,\ \mathrm{margin} - x_y + x_j)^p

    Parameters
    ----------
    scores : array_like or CUDA array
        Scores with the classes along ``axis``.
    target : array_like of int
        Class indices, shaped like ``scores`` without ``axis``.
    axis : int, optional
        The class axis (default -1).
    p : {1, 2}, optional
        Power of each hinge term.
    margin : float, optional
        Finite and >= 0.  Default 1.
    weight : array_like, optional
        One weight per class; multiplies the terms after the power.
    reduction : {"mean", "sum", "none"}, optional
        "mean" averages over samples (as PyTorch does, weights or not).

    Returns
    -------
    loss : scalar or ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import multi_margin_loss
    >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
    >>> round(float(multi_margin_loss(x, [3])), 12)  # (0.3 + 0.4 + 0.6) / 4
    0.325
    """
    if _on_cuda(scores, target, weight):
        return _cuda().multi_margin_loss_public(scores, target, axis, p, margin, weight,
                                                reduction)
    if (weight is None and type(p) is int and (p == 1 or p == 2)
            and _small_index(scores, target, axis, margin, reduction)):
        found = _cpu().multi_margin_small(scores, target, _unit(scores.shape[1], scores.dtype),
                                          p, float(margin))
        return _small_index_loss(found, scores, target, reduction)
    p = _check_p(p)
    plan = _index_plan(scores, target, axis, margin, reduction)
    w = _weights(weight, plan.rows.classes, plan.compute)
    return _index_results(plan, _cpu().multi_margin(plan.x2, plan.y1, w, p, plan.margin))


def multi_margin_loss_with_grad(scores: ArrayLike, target: ArrayLike, *, axis: int = -1,
                                p: int = 1, margin: float = 1.0,
                                weight: Optional[ArrayLike] = None, reduction: str = "mean",
                                dloss: Optional[ArrayLike] = None,
                                grad_out: Optional[np.ndarray] = None) -> Tuple[Any, np.ndarray]:
    r""":func:`multi_margin_loss` and its gradient with respect to ``scores``, in one pass.

    With :math:`z_j = \mathrm{margin} - x_y + x_j` and :math:`k` the upstream gradient:

    .. math:: \frac{\partial \ell}{\partial x_j} = k \frac{w_y}{C}\, p\, z_j^{p-1} [z_j > 0]
              \ (j \ne y), \qquad \frac{\partial \ell}{\partial x_y} = -\sum_{j \ne y}
              \frac{\partial \ell}{\partial x_j}

    Parameters
    ----------
    scores, target, axis, p, margin, weight, reduction
        As in :func:`multi_margin_loss`.
    dloss : float or array_like, optional
        Upstream gradient (scalar, or per sample for "none").  Default 1.
    grad_out : ndarray, optional
        Array of ``scores``' shape and dtype for the gradient; may be ``scores`` itself.

    Returns
    -------
    loss : scalar or ndarray
    dscores : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import multi_margin_loss_with_grad
    >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
    >>> loss, g = multi_margin_loss_with_grad(x, [3])
    >>> g
    array([[ 0.25,  0.25,  0.25, -0.75]])
    """
    if _on_cuda(scores, target, weight, grad_out):
        return _cuda().multi_margin_loss_with_grad_public(scores, target, axis, p, margin,
                                                          weight, reduction, dloss, grad_out)
    if (weight is None and type(p) is int and (p == 1 or p == 2)
            and _small_index(scores, target, axis, margin, reduction, dloss, grad_out)):
        g2 = np.empty_like(scores) if grad_out is None else grad_out
        found = _cpu().multi_margin_grad_small(
            scores, target, _unit(scores.shape[1], scores.dtype), p, float(margin),
            reduction == "mean", g2)
        return _small_index_loss(found, scores, target, reduction), g2
    p = _check_p(p)
    plan = _index_plan(scores, target, axis, margin, reduction)
    w = _weights(weight, plan.rows.classes, plan.compute)
    k1 = _sample_scale(plan, dloss)
    direct = _index_grad_out(plan, grad_out, k1, w)
    loss1, g2 = _cpu().multi_margin_grad(plan.x2, plan.y1, w, p, plan.margin, k1, direct)
    return _index_results(plan, loss1, grad_out, direct, g2)


def multiclass_hinge_loss(scores: ArrayLike, target: ArrayLike, *, axis: int = -1,
                          margin: float = 1.0, reduction: str = "mean") -> Any:
    r"""The Crammer-Singer multiclass hinge loss.

    .. math:: \ell = \max_j \big(x_j + \mathrm{margin}\,[j \ne y]\big) - x_y

    Parameters
    ----------
    scores : array_like or CUDA array
        Scores with the classes along ``axis``.
    target : array_like of int
        Class indices, shaped like ``scores`` without ``axis``.
    axis : int, optional
        The class axis (default -1).
    margin : float, optional
        Finite and >= 0.  Default 1.
    reduction : {"mean", "sum", "none"}, optional
        "mean" averages over samples.

    Returns
    -------
    loss : scalar or ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import multiclass_hinge_loss
    >>> x = np.array([[2.0, 1.5, -1.0], [0.0, 3.0, 1.0]])
    >>> multiclass_hinge_loss(x, [0, 1], reduction="none")  # 1.5 + 1 - 2, and 0
    array([0.5, 0. ])
    """
    if _on_cuda(scores, target):
        return _cuda().multiclass_hinge_loss_public(scores, target, axis, margin, reduction)
    if _small_index(scores, target, axis, margin, reduction):
        found = _cpu().hinge_small(scores, target, _unit(scores.shape[1], scores.dtype),
                                   float(margin))
        return _small_index_loss(found, scores, target, reduction)
    plan = _index_plan(scores, target, axis, margin, reduction)
    return _index_results(plan, _cpu().hinge(plan.x2, plan.y1, plan.margin))


def multiclass_hinge_loss_with_grad(scores: ArrayLike, target: ArrayLike, *, axis: int = -1,
                                    margin: float = 1.0, reduction: str = "mean",
                                    dloss: Optional[ArrayLike] = None,
                                    grad_out: Optional[np.ndarray] = None
                                    ) -> Tuple[Any, np.ndarray]:
    r""":func:`multiclass_hinge_loss` and its gradient with respect to ``scores``.

    With :math:`j^*` the first :math:`j \ne y` attaining
    :math:`\max_{j \ne y} (x_j + \mathrm{margin})` and :math:`k` the upstream gradient,
    the gradient is :math:`k\,(e_{j^*} - e_y)` when that maximum exceeds :math:`x_y`,
    and 0 otherwise (0 at the hinge point, where the two are equal).

    Parameters
    ----------
    scores, target, axis, margin, reduction
        As in :func:`multiclass_hinge_loss`.
    dloss : float or array_like, optional
        Upstream gradient (scalar, or per sample for "none").  Default 1.
    grad_out : ndarray, optional
        Array of ``scores``' shape and dtype for the gradient; may be ``scores`` itself.

    Returns
    -------
    loss : scalar or ndarray
    dscores : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import multiclass_hinge_loss_with_grad
    >>> x = np.array([[2.0, 1.5, -1.0], [0.0, 3.0, 1.0]])
    >>> loss, g = multiclass_hinge_loss_with_grad(x, [0, 1], reduction="sum")
    >>> g
    array([[-1.,  1.,  0.],
           [ 0.,  0.,  0.]])
    """
    if _on_cuda(scores, target, grad_out):
        return _cuda().multiclass_hinge_loss_with_grad_public(scores, target, axis, margin,
                                                              reduction, dloss, grad_out)
    if _small_index(scores, target, axis, margin, reduction, dloss, grad_out):
        g2 = np.empty_like(scores) if grad_out is None else grad_out
        found = _cpu().hinge_grad_small(scores, target, _unit(scores.shape[1], scores.dtype),
                                        float(margin), reduction == "mean", g2)
        return _small_index_loss(found, scores, target, reduction), g2
    plan = _index_plan(scores, target, axis, margin, reduction)
    k1 = _sample_scale(plan, dloss)
    direct = _index_grad_out(plan, grad_out, k1)
    loss1, g2 = _cpu().hinge_grad(plan.x2, plan.y1, plan.margin, k1, direct)
    return _index_results(plan, loss1, grad_out, direct, g2)
