"""Numerically stable softmax, log-softmax, logsumexp and their backward functions.

Public layer: arguments are normalised and checked here (``jitloss._args``), the data is
seen as ``(outer, classes, inner)`` and handed to the launchers of ``jitloss.cpu.softmax``
(or ``jitloss.cuda.softmax`` for CUDA arrays), and the result comes back in the caller's
shape.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _args
from ._args import Rows, check_out, check_temperature, float_inputs, normalize_axes
from .cpu import PARALLEL_MIN_ELEMENTS as _PARALLEL_MIN
from .cpu import softmax as _cpu

Axis = Union[int, Tuple[int, ...], None]

__all__ = [
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "softmax",
    "softmax_backward",
]


def _cuda():
    from .cuda import softmax as backend  # imported lazily: numba.cuda is slow to import

    return backend


def _same_layout(arrays, x) -> bool:
    # dtype by ==, not identity: arrays that numba allocates (every kernel's output) carry
    # dtype objects of their own, and would otherwise miss the fast path (5 -> 20 us)
    return all(
        type(a) is np.ndarray and a.dtype == x.dtype and a.shape == x.shape
        and a.flags.c_contiguous for a in arrays[1:]
    )


def _small_rows(kernel, x, axis, temperature, out, *more):
    """``kernel(rows of x, rows of each of more)`` in x's shape for the commonest small call
    (C-contiguous float32 or float64 ndarrays of one shape and dtype, the last axis,
    temperature 1, no ``out``), else None.

    One compiled call allocates and fills the result: about 1.3 us less than the general
    path, which matters for rows of a few classes (a 14-element softmax takes ~2 us).
    1-D and 2-D arrays go to the kernel as they are (it takes their rows itself).
    It runs before anything else on purpose: the same test inside ``_map_rows``'s fast
    path, after ``check_temperature`` and the argument lists, measured 0.5-0.7 us slower.
    """
    if type(x) is np.ndarray and out is None and axis == -1 and type(temperature) is float:
        shape = x.shape
        if (
            temperature == 1.0
            and shape
            and 0 < x.size < _PARALLEL_MIN
            and x.dtype in _args.NATIVE
            and x.flags.c_contiguous
            and (not more or _same_layout((x,) + more, x))
        ):
            if len(shape) <= 2:
                return kernel(x, *more)
            c = shape[-1]
            return kernel(x.reshape(-1, c), *[a.reshape(-1, c) for a in more]).reshape(shape)
    return None


def _map_rows(launcher, arrays, names, axis, out, *params):
    """Run an elementwise-shaped launcher (output shaped like the first input) on the CPU."""
    x = arrays[0]
    if type(x) is np.ndarray and type(axis) is int:
        # the common case (C-contiguous float32/float64 rows along the last axis, out= of
        # the same layout or none), without the general machinery: it saves about 2 us of
        # a small call, more with out= (a 16 x 14 softmax: 6.4-7.2 us against 11.7-17.5)
        shape = x.shape
        if (
            shape
            and shape[-1]
            and (axis == -1 or axis == len(shape) - 1)
            and x.dtype in _args.NATIVE
            and x.flags.c_contiguous
            and (len(arrays) == 1 or _same_layout(arrays, x))
        ):
            classes = shape[-1]
            rows = [a.reshape(-1, classes) for a in arrays]
            if out is None:
                return launcher(*rows, *params).reshape(shape)
            if (
                type(out) is np.ndarray
                and _same_layout((x, out), x)
                and out.flags.writeable
                and _args.writes_through(out, *arrays)
            ):
                launcher(*rows, *params, out3=out.reshape(-1, classes))
                return out
    arrays, compute, result = float_inputs(*zip(arrays, names))
    if any(a.shape != arrays[0].shape for a in arrays[1:]):
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"{' and '.join(names)} must have the same shape, got {shapes}")
    rows = Rows.of(arrays[0], normalize_axes(axis, arrays[0].ndim))
    in3 = [rows.take3(a) for a in arrays]
    out3 = None
    if out is not None:
        check_out(out, rows.shape, result)
        if result == compute:
            out3 = rows.view3(out)
            if out3 is not None and not _args.writes_through(out3, *in3):
                out3 = None
    r3 = launcher(*in3, *params, out3=out3)
    if out is None:
        res = rows.restore(r3)
        return res if result == compute else res.astype(result)
    if out3 is None:
        np.copyto(out, rows.restore(r3), casting="unsafe")
    return out


def softmax(x: ArrayLike, axis: Axis = -1, *, temperature: float = 1.0,
            out: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Softmax of ``x / temperature`` along ``axis``.

    .. math:: y_j = \frac{\exp((x_j - m) / T)}{\sum_k \exp((x_k - m) / T)},
              \quad m = \max_k x_k

    Parameters
    ----------
    x : array_like or CUDA array
        Input of any shape.  float32/float64 compute natively, float16 in float32
        (returned as float16), integers and bools as float64.
    axis : int, tuple of ints or None, optional
        Axis or axes the probabilities sum to 1 over (None: all).  Default -1.
    temperature : float, optional
        T > 0; the logits are divided by it.  Default 1.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into; may be ``x`` itself.

    Returns
    -------
    ndarray
        Same shape as ``x``.  A row holding NaN or +inf, or only -inf, gives NaN.

    See Also
    --------
    log_softmax, softmax_backward, scipy.special.softmax

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import softmax
    >>> softmax([2345, 3456, 6543, -6789, -9234])
    array([0., 0., 1., 0., 0.])
    >>> softmax(np.log([1.0, 3.0]))
    array([0.25, 0.75])
    >>> p = softmax(np.arange(6.0).reshape(2, 3), axis=0)
    >>> p.sum(axis=0)
    array([1., 1., 1.])
    """
    y = _small_rows(_cpu.softmax_small, x, axis, temperature, out)
    if y is not None:
        return y
    s = check_temperature(temperature)
    if _args.is_cuda_array(x):
        return _cuda().softmax_public(x, axis, s, out)
    return _map_rows(_cpu.softmax, [x], ["x"], axis, out, s)


def log_softmax(x: ArrayLike, axis: Axis = -1, *, temperature: float = 1.0,
                out: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Logarithm of :func:`softmax`, computed without forming the softmax.

    .. math:: y_j = \frac{x_j - m}{T} - \log\Big(1 + \sum_{k \ne k^*}
              \exp\frac{x_k - m}{T}\Big), \quad m = x_{k^*} = \max_k x_k

    The log of the sum is taken as ``log1p`` of the terms other than the maximum, so a
    probability close to 1 keeps its tiny logarithm: ``log_softmax([0, -40])[0]`` is
    about -4.25e-18, not 0.

    Parameters
    ----------
    x : array_like or CUDA array
        Input of any shape (dtype policy as in :func:`softmax`).
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over.  Default -1.
    temperature : float, optional
        T > 0.  Default 1.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into; may be ``x`` itself.

    Returns
    -------
    ndarray
        Same shape as ``x``; NaN for rows holding NaN or +inf, or only -inf.

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import log_softmax
    >>> log_softmax([1000.0, 1.0])
    array([   0., -999.])
    >>> float(log_softmax([0.0, -40.0])[0])
    -4.248354255291589e-18
    >>> np.exp(log_softmax([[1.0, 2.0], [3.0, 3.0]])).round(4)
    array([[0.2689, 0.7311],
           [0.5   , 0.5   ]])
    """
    y = _small_rows(_cpu.log_softmax_small, x, axis, temperature, out)
    if y is not None:
        return y
    s = check_temperature(temperature)
    if _args.is_cuda_array(x):
        return _cuda().log_softmax_public(x, axis, s, out)
    return _map_rows(_cpu.log_softmax, [x], ["x"], axis, out, s)


def logsumexp(x: ArrayLike, axis: Axis = -1, *, b: Optional[ArrayLike] = None,
              keepdims: bool = False, return_sign: bool = False,
              out: Optional[np.ndarray] = None) -> Any:
    r"""``log(sum(b * exp(x)))`` along ``axis``, without overflow (SciPy's semantics).

    .. math:: \mathrm{lse}(x) = m + \log\Big(1 + \sum_{k \ne k^*} e^{x_k - m}\Big),
              \quad m = x_{k^*} = \max_k x_k

    Parameters
    ----------
    x : array_like or CUDA array
        Input of any shape (dtype policy as in :func:`softmax`).
    axis : int, tuple of ints or None, optional
        Axis or axes to reduce.  Default -1 (SciPy's default is None).
    b : array_like, optional
        Weights broadcastable to ``x``; may be negative.  Terms with ``b == 0`` are left
        out even where ``x`` is infinite or NaN.
    keepdims : bool, optional
        Keep the reduced axes with length 1.
    return_sign : bool, optional
        Also return the sign of the sum (+1, 0, -1); otherwise a negative sum gives NaN.
    out : ndarray, optional
        Array for the (log-magnitude) result.

    Returns
    -------
    res : ndarray or scalar
        ``x``'s shape without ``axis``.  All -inf (or empty) gives -inf, any +inf gives
        +inf, any NaN gives NaN.  A NumPy scalar when every axis is reduced.
    sign : ndarray or scalar
        Only with ``return_sign=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import logsumexp
    >>> float(logsumexp(np.arange(10.0)))
    9.45862974442671
    >>> logsumexp([[0.0, 0.0], [10.0, 10.0]])
    array([ 0.69314718, 10.69314718])
    >>> float(logsumexp([1000.0, 1000.0]))  # no overflow
    1000.6931471805599
    >>> logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    if (b is None and not return_sign and type(x) is np.ndarray and x.ndim
            and type(axis) is int and (axis == -1 or axis == x.ndim - 1)
            and x.dtype in _args.NATIVE and x.flags.c_contiguous):
        # C-contiguous float32/float64 rows along the last axis, without the general
        # machinery below (the same kernels, the same bits).  The test is _small_rows'
        # written out: shared through a predicate function (and with _map_rows' fast path)
        # it measured 0.2-0.4 us slower per small call.
        if out is None and 0 < x.size < _PARALLEL_MIN:
            # the commonest small call in one compiled call, as for softmax (_small_rows):
            # 14 elements in about 2.5 us instead of 9 us
            r = _cpu.logsumexp_small(x if x.ndim <= 2 else x.reshape(-1, x.shape[-1]))
            if x.ndim == 1:
                return r if keepdims else r[0]
            if x.ndim == 2 and not keepdims:
                return r
            return r.reshape(x.shape[:-1] + ((1,) if keepdims else ()))
        if (type(out) is np.ndarray and x.size and out.dtype == x.dtype
                and out.flags.c_contiguous and out.flags.writeable
                and out.shape == x.shape[:-1] + ((1,) if keepdims else ())
                and _args.writes_through(out, apart=(x,))):
            # out= in C order: 16 x 14 in 5.5-6.0 us instead of 10
            _cpu.logsumexp(x.reshape(-1, x.shape[-1], 1), out2=out.reshape(-1, 1))
            return out
    if _args.is_cuda_array(x) or _args.is_cuda_array(b):
        return _cuda().logsumexp_public(x, axis, b, keepdims, return_sign, out)
    cpu = _cpu
    pairs = [(x, "x")] if b is None else [(x, "x"), (b, "b")]
    arrays, compute, result = float_inputs(*pairs)
    a = arrays[0]
    rows = Rows.of(a, normalize_axes(axis, a.ndim))
    x3 = rows.take3(a)
    b3 = None
    if b is not None:
        try:
            bb = np.broadcast_to(arrays[1], a.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {np.shape(arrays[1])} does not broadcast to x's shape {a.shape}"
            ) from None
        b3 = rows.take3(bb)
    shape_r = rows.reduced_shape(keepdims)
    out2 = None
    if out is not None:
        check_out(out, shape_r, result)
        if result == compute:
            out2 = rows.view2(out, keepdims)
            if out2 is not None and not _args.writes_through(out2, apart=(x3, b3)):
                out2 = None
    sign2 = None
    if b is None:
        r2 = cpu.logsumexp(x3, out2=out2)
        if return_sign:
            sign2 = np.where(np.isnan(r2), np.nan, np.where(r2 == -np.inf, 0.0, 1.0))
            sign2 = sign2.astype(compute)
    else:
        r2, sign2 = cpu.logsumexp_b(x3, b3, return_sign, out2=out2)
    res = _deliver_reduced(rows, r2, keepdims, out, out2, result)
    if not return_sign:
        return res
    return res, _deliver_reduced(rows, sign2, keepdims, None, None, result)


def _deliver_reduced(rows, r2, keepdims, out, out2, result):
    if out is not None:
        if out2 is None:
            np.copyto(out, rows.restore2(r2, keepdims), casting="unsafe")
        return out
    res = rows.restore2(r2, keepdims)
    if res.dtype != result:
        res = res.astype(result)
    return res[()] if res.ndim == 0 else res


def softmax_backward(y: ArrayLike, dy: ArrayLike, axis: Axis = -1, *,
                     temperature: float = 1.0,
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`softmax`: the gradient with respect to ``x``.

    With ``y = softmax(x, axis, temperature=T)`` and ``dy`` the gradient of a loss with
    respect to ``y``:

    .. math:: \frac{\partial L}{\partial x_j} = \frac{y_j \big(dy_j - \sum_k dy_k\, y_k\big)}{T}

    Parameters
    ----------
    y : array_like or CUDA array
        The softmax output.
    dy : array_like or CUDA array
        Upstream gradient, same shape as ``y``.
    axis : int, tuple of ints or None, optional
        The axis ``y`` was normalised over.  Default -1.
    temperature : float, optional
        The temperature ``y`` was computed with.  Default 1.
    out : ndarray, optional
        Array of ``y``'s shape for the result; may be ``y`` or ``dy``.

    Returns
    -------
    ndarray
        Same shape as ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import softmax, softmax_backward
    >>> y = softmax([1.0, 2.0, 3.0])
    >>> g = softmax_backward(y, [0.0, 0.0, 1.0])   # d y[2] / dx
    >>> np.allclose(g, y[2] * (np.eye(3)[2] - y))
    True
    """
    g = _small_rows(_cpu.softmax_backward_small, y, axis, temperature, out, dy)
    if g is not None:
        return g
    s = check_temperature(temperature)
    if _args.is_cuda_array(y) or _args.is_cuda_array(dy):
        return _cuda().softmax_backward_public(y, dy, axis, s, out)
    return _map_rows(_cpu.softmax_backward, [y, dy], ["y", "dy"], axis, out, s)


def log_softmax_backward(logp: ArrayLike, dy: ArrayLike, axis: Axis = -1, *,
                         temperature: float = 1.0,
                         out: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`log_softmax`: the gradient with respect to ``x``.

    With ``logp = log_softmax(x, axis, temperature=T)`` and ``dy`` the gradient of a loss
    with respect to ``logp``:

    .. math:: \frac{\partial L}{\partial x_j} = \frac{dy_j - e^{logp_j} \sum_k dy_k}{T}

    Parameters
    ----------
    logp : array_like or CUDA array
        The log-softmax output.
    dy : array_like or CUDA array
        Upstream gradient, same shape as ``logp``.
    axis : int, tuple of ints or None, optional
        The axis ``logp`` was normalised over.  Default -1.
    temperature : float, optional
        The temperature ``logp`` was computed with.  Default 1.
    out : ndarray, optional
        Array of ``logp``'s shape for the result; may be ``logp`` or ``dy``.

    Returns
    -------
    ndarray
        Same shape as ``logp``.

    Examples
    --------
    >>> import numpy as np
    >>> from jitloss import log_softmax, log_softmax_backward
    >>> logp = log_softmax([1.0, 2.0, 3.0])
    >>> g = log_softmax_backward(logp, [-1.0, 0.0, 0.0])  # NLL of class 0
    >>> np.allclose(g, np.exp(logp) - np.eye(3)[0])
    True
    """
    g = _small_rows(_cpu.log_softmax_backward_small, logp, axis, temperature, out, dy)
    if g is not None:
        return g
    s = check_temperature(temperature)
    if _args.is_cuda_array(logp) or _args.is_cuda_array(dy):
        return _cuda().log_softmax_backward_public(logp, dy, axis, s, out)
    return _map_rows(_cpu.log_softmax_backward, [logp, dy], ["logp", "dy"], axis, out, s)
