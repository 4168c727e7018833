"""Softmax cross-entropy, and its gradient fused into the same pass.

Public layer: arguments are checked and shaped here (``jitloss._args``); the per-sample
work is done by ``jitloss.cpu.cross_entropy`` (or ``jitloss.cuda.cross_entropy`` for
CUDA arrays), and the per-sample losses are reduced here in a fixed order.
"""

from __future__ import annotations

import numbers
import functools
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _args
from ._args import (
    Rows,
    check_nonnegative,
    check_out,
    check_reduction,
    check_unit_interval,
    float_inputs,
    normalize_axes,
)
from .cpu import PARALLEL_MIN_ELEMENTS as _PARALLEL_MIN
from .cpu import _labels

__all__ = ["cross_entropy", "cross_entropy_with_grad"]


@functools.cache
def _cpu():
    # imported at the first call: ``import jitloss`` plus a first softmax then skips this
    # family's kernel definitions (about 30 ms of numba dispatchers for cross_entropy)
    from .cpu import cross_entropy as backend

    return backend


def _cuda():
    from .cuda import cross_entropy as backend  # imported lazily

    return backend


class _Plan(NamedTuple):
    """Validated arguments, laid out for the kernels."""

    rows: Rows
    x3: np.ndarray
    compute: np.dtype
    result: np.dtype
    kind: str  # "index" or "prob"
    y2: np.ndarray | None  # (outer, inner) int64 labels
    t3: np.ndarray | None  # (outer, classes, inner) probabilities
    w: np.ndarray  # (classes,) weights in the compute dtype (ones when not given)
    wsum: float
    ignore: int
    eps: float
    z: float
    reduction: str
    denominator: float  # what "mean" divides by


@functools.lru_cache(maxsize=64)
def _ones(classes: int, dtype: np.dtype) -> np.ndarray:
    """Unit weights, shared between calls (read-only)."""
    w = np.ones(classes, dtype)
    w.flags.writeable = False
    return w


def _class_axis(axis, ndim: int) -> tuple:
    if isinstance(axis, (tuple, list)) or axis is None:
        raise TypeError(f"axis must be a single int (the class axis), got {axis!r}")
    return normalize_axes(axis, ndim)


def _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss):
    reduction = check_reduction(reduction)
    eps = check_unit_interval(label_smoothing, "label_smoothing")
    z = check_nonnegative(z_loss, "z_loss")
    if type(ignore_index) is not int and (
        isinstance(ignore_index, (bool, np.bool_))
        or not isinstance(ignore_index, numbers.Integral)
    ):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    ignore = int(ignore_index)
    (x,), compute, result = float_inputs((logits, "logits"))
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    rows = Rows.of(x, _class_axis(axis, x.ndim))
    classes = rows.classes
    x3 = rows.take3(x)

    if weight is None:
        w = _ones(classes, compute)
        wsum = float(classes)
    else:
        w = np.asarray(weight)
        _args.result_dtype(w.dtype, "weight")
        if w.shape != (classes,):
            raise ValueError(f"weight has shape {w.shape}; expected ({classes},), one per class")
        w = np.ascontiguousarray(w, dtype=compute).view()
        w.flags.writeable = False  # read-only like the default weights: one kernel signature
        wsum = float(w.sum(dtype=np.float64))

    t = np.asarray(target)
    y2 = t3 = None
    if t.dtype.kind in "iu":
        kind = "index"
        sample_shape = rows.reduced_shape(False)
        if t.shape != sample_shape:
            raise ValueError(
                f"target holds class indices of shape {t.shape}; expected logits' shape "
                f"without the class axis, {sample_shape}"
            )
        labels = t.astype(np.int64, copy=False)
        first, denominator = _labels.scan(labels.reshape(-1), classes, ignore, w)
        if first >= 0:
            raise _args.label_error(labels, first, classes, ignore)
        y2 = rows.take2(labels)
    elif t.dtype.kind == "f":
        kind = "prob"
        if t.shape != x.shape:
            raise TypeError(
                f"target is floating-point ({t.dtype}) of shape {t.shape}: floating-point "
                f"targets are class probabilities of logits' shape {x.shape}; class indices "
                f"must be integers"
            )
        if ignore >= 0:
            raise ValueError(
                f"ignore_index={ignore} is not supported with probability targets "
                f"(as in PyTorch)"
            )
        t3 = rows.take3(t.astype(compute, copy=False))
        denominator = float(rows.outer * rows.inner)
    else:
        raise TypeError(
            f"target must hold integer class indices or floating-point probabilities, "
            f"got dtype {t.dtype}"
        )
    return _Plan(rows, x3, compute, result, kind, y2, t3, w, wsum, ignore, eps, z, reduction,
                 denominator)


def _plain_options(logits, weight, reduction, label_smoothing, z_loss) -> bool:
    """The options both small-call paths take: no weights, smoothing or z-loss, "mean" or
    "sum", and a small input."""
    return (
        weight is None and (reduction == "mean" or reduction == "sum")
        and type(label_smoothing) in (float, int) and label_smoothing == 0
        and type(z_loss) in (float, int) and z_loss == 0
        and 0 < logits.size < _PARALLEL_MIN
    )


def _small(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
           z_loss) -> bool:
    """True for the commonest small call: (N, C) C-contiguous float32/float64 logits with
    int64 class indices along the last axis, no weights, smoothing or z-loss, "mean" or
    "sum".  It takes one compiled call (label scan, losses and their sum): 14 classes in
    3-5 us instead of 20."""
    return (
        _args.plain_index_rows(logits, target, axis)
        and type(ignore_index) is int and -(2**63) <= ignore_index < 2**63
        and _plain_options(logits, weight, reduction, label_smoothing, z_loss)
    )


def _small_prob(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                z_loss) -> bool:
    """True for a small call with probability targets: (N, C) C-contiguous float32/float64
    logits and a target of the same shape, dtype and layout, along the last axis, the
    options of _small, ignore_index negative (the default).  It takes one compiled call:
    64 x 30 in about 12 us instead of 30."""
    return (
        _args.plain_prob_rows(logits, target, axis)
        and type(ignore_index) is int and ignore_index < 0
        and _plain_options(logits, weight, reduction, label_smoothing, z_loss)
    )


def _reduce(plan: _Plan, loss2: np.ndarray):
    """The returned loss, from the (outer, inner) per-sample losses."""
    per = plan.rows.restore2(loss2, False) if plan.reduction == "none" else loss2
    return _args.reduce_losses(per, plan.reduction, plan.denominator, plan.result)


def _scale2(plan: _Plan, dloss) -> np.ndarray:
    """Per-sample gradient scale as an (outer, inner) float64 array."""
    k = _args.upstream_scale(dloss, plan.reduction, plan.denominator,
                             plan.rows.reduced_shape(False))
    if isinstance(k, float):
        return np.full((plan.rows.outer, plan.rows.inner), k)
    return np.ascontiguousarray(plan.rows.take2(k))


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: Optional[ArrayLike] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Any:
    r"""Softmax cross-entropy between ``logits`` and ``target`` (PyTorch's semantics).

    For a sample with logits :math:`x` (C classes), :math:`p = \mathrm{softmax}(x)` and
    :math:`\mathrm{lse} = \log\sum_c e^{x_c}`:

    .. math:: \ell = (1-\varepsilon)\, w_y (\mathrm{lse} - x_y)
              + \frac{\varepsilon}{C} \sum_c w_c (\mathrm{lse} - x_c)
              + s\, \mathrm{lse}^2

    for a class index :math:`y`, and :math:`\ell = \sum_c w_c t'_c (\mathrm{lse} - x_c)
    + s\,\mathrm{lse}^2` with :math:`t' = (1-\varepsilon) t + \varepsilon / C` for class
    probabilities :math:`t`.  :math:`\varepsilon` is ``label_smoothing``, :math:`s` is
    ``z_loss`` (PaLM's auxiliary loss), :math:`w` is ``weight``.

    Parameters
    ----------
    logits : array_like or CUDA array
        Unnormalised scores; the classes lie along ``axis``.
    target : array_like of int, or of float
        Class indices shaped like ``logits`` without ``axis``, or class probabilities
        shaped like ``logits``.
    axis : int, optional
        The class axis; -1 by default (PyTorch's ``(N, C, d1, ...)`` inputs are ``axis=1``).
    weight : array_like, optional
        One weight per class.
    ignore_index : int, optional
        Samples whose target is this class index contribute 0 and take no part in
        "mean"'s denominator.  Default -100.  Not allowed (>= 0) with probabilities.
    reduction : {"mean", "sum", "none"}, optional
        "mean" divides the sum by the sum of ``weight[target]`` over the samples not
        ignored (their count without ``weight``; the sample count for probabilities);
        all ignored gives NaN.
    label_smoothing : float, optional
        :math:`\varepsilon \in [0, 1]`.
    z_loss : float, optional
        :math:`s \ge 0`; adds :math:`s\,\mathrm{lse}^2` to each sample's loss (ignored
        samples excepted), before the reduction.

    Returns
    -------
    loss : scalar or ndarray
        A scalar of the logits' dtype for "mean" and "sum"; per-sample losses shaped like
        ``logits`` without ``axis`` for "none".

    See Also
    --------
    cross_entropy_with_grad : the same loss and its gradient in one pass.

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import cross_entropy
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    >>> float(cross_entropy(logits, [0, 2]))
    0.16811...
    >>> cross_entropy(logits, [0, -100], reduction="none")
    array([0.24131..., 0.        ])
    >>> float(cross_entropy(logits, [[1.0, 0, 0], [0, 0, 1.0]]))  # probabilities
    0.16811...
    """
    if _args.any_cuda_array(logits, target, weight):
        return _cuda().cross_entropy_public(
            logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss
        )
    if _small(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss):
        classes = logits.shape[1]
        first, den, total = _cpu().index_small(logits, target, ignore_index,
                                               _ones(classes, logits.dtype))
        if first >= 0:
            raise _args.label_error(target, first, classes, ignore_index)
        return _args.reduce_total(total, reduction, den, logits.dtype)
    if _small_prob(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                   z_loss):
        total = _cpu().prob_small(logits, target, _ones(logits.shape[1], logits.dtype))
        return _args.reduce_total(total, reduction, logits.shape[0], logits.dtype)
    plan = _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss)
    if plan.kind == "index":
        loss2 = _cpu().index_loss(plan.x3, plan.y2, plan.w, plan.wsum, plan.ignore, plan.eps,
                                  plan.z)
    else:
        loss2 = _cpu().prob_loss(plan.x3, plan.t3, plan.w, plan.eps, plan.z)
    return _reduce(plan, loss2)


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: Optional[ArrayLike] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    dloss: Optional[ArrayLike] = None,
    grad_out: Optional[np.ndarray] = None,
) -> Tuple[Any, np.ndarray]:
    r""":func:`cross_entropy` and its gradient with respect to ``logits``, in one pass.

    Per sample, with :math:`k` the upstream gradient ``dloss`` (divided by "mean"'s
    denominator):

    .. math:: \frac{\partial \ell}{\partial x_j} = k\Big[p_j\big((1-\varepsilon) w_y
              + \tfrac{\varepsilon}{C} W + 2 s\,\mathrm{lse}\big)
              - \tfrac{\varepsilon}{C} w_j - (1-\varepsilon) w_y [j = y]\Big]

    for class indices (:math:`W = \sum_c w_c`), and :math:`k\,[p_j (\sum_c w_c t'_c +
    2 s\,\mathrm{lse}) - w_j t'_j]` for probabilities.  Ignored samples get a zero
    gradient.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss
        As in :func:`cross_entropy`.
    dloss : float or array_like, optional
        Upstream gradient of the returned loss: a scalar for "mean"/"sum", per-sample
        values (broadcastable) for "none".  Default 1.
    grad_out : ndarray, optional
        Array of ``logits``' shape and dtype to receive the gradient.  ``grad_out=logits``
        overwrites the logits with their gradient and allocates nothing of their size.

    Returns
    -------
    loss : scalar or ndarray
        As :func:`cross_entropy` returns it.
    dlogits : ndarray
        Gradient of ``loss`` with respect to ``logits`` (``grad_out`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import cross_entropy_with_grad, softmax
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    >>> loss, g = cross_entropy_with_grad(logits, [0, 2])
    >>> np.allclose(g, (softmax(logits) - np.eye(3)[[0, 2]]) / 2)
    True
    >>> _ = cross_entropy_with_grad(logits, [0, 2], grad_out=logits)  # in place
    >>> np.allclose(logits, g)
    True
    """
    if _args.any_cuda_array(logits, target, weight, grad_out):
        return _cuda().cross_entropy_with_grad_public(
            logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss,
            dloss, grad_out,
        )
    if dloss is None and _small(logits, target, axis, weight, ignore_index, reduction,
                                label_smoothing, z_loss) and (
            grad_out is None or _args.plain_out(grad_out, logits)):
        classes = logits.shape[1]
        g2 = np.empty_like(logits) if grad_out is None else grad_out
        first, den, total = _cpu().index_grad_small(logits, target, ignore_index,
                                                    _ones(classes, logits.dtype),
                                                    reduction == "mean", g2)
        if first >= 0:
            raise _args.label_error(target, first, classes, ignore_index)
        return _args.reduce_total(total, reduction, den, logits.dtype), g2
    if dloss is None and _small_prob(logits, target, axis, weight, ignore_index, reduction,
                                     label_smoothing, z_loss) and (
            grad_out is None or _args.plain_out(grad_out, logits)):
        g2 = np.empty_like(logits) if grad_out is None else grad_out
        total = _cpu().prob_grad_small(logits, target, _ones(logits.shape[1], logits.dtype),
                                       reduction == "mean", g2)
        return _args.reduce_total(total, reduction, logits.shape[0], logits.dtype), g2
    plan = _plan(logits, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss)
    scale2 = _scale2(plan, dloss)
    rows = plan.rows
    g3 = None
    if grad_out is not None:
        check_out(grad_out, rows.shape, plan.result, "grad_out")
        if plan.result == plan.compute:
            g3 = rows.view3(grad_out)
            # the gradient may be written over the logits (each element read before it is
            # written), never over the target (the kernels read the target's row again
            # after writing exponentials into the gradient's), the weights or dloss
            if g3 is not None and not _args.writes_through(
                    g3, plan.x3, apart=(plan.y2, plan.t3, plan.w, scale2)):
                g3 = None
    if plan.kind == "index":
        loss2, g3_out = _cpu().index_loss_grad(plan.x3, plan.y2, plan.w, plan.wsum, plan.ignore,
                                               plan.eps, plan.z, scale2, g3)
    else:
        loss2, g3_out = _cpu().prob_loss_grad(plan.x3, plan.t3, plan.w, plan.eps, plan.z, scale2,
                                              g3)
    loss = _reduce(plan, loss2)
    if grad_out is not None:
        if g3 is None:
            np.copyto(grad_out, rows.restore(g3_out), casting="unsafe")
        return loss, grad_out
    grad = rows.restore(g3_out)
    return loss, grad if plan.result == plan.compute else grad.astype(plan.result)
