"""An ``out=`` / ``grad_out=`` array that shares memory with an input other than the one it
may replace: the result is still right, and no kernel reads out of bounds.

A kernel may write its output over the logits or scores it reads (each element is read
before it is written), never over labels, weights, targets, ``b`` or ``dloss``: those are
read again after rows of the output are written.  Before the fix a gradient written over
the int64 labels of its own call turned later labels into arbitrary integers, and the
small-call cross-entropy kernel crashed the process indexing with them.  Each case
computes the reference from private copies first, then the call with the overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitloss

N, C = 6, 5  # N <= C: a 1-D per-sample array fits in one gradient row


def _rng(seed=0):
    return np.random.default_rng(seed)


def _labels_in(buf, y):
    """y as int64 labels stored in the first bytes of the float64 buffer ``buf``."""
    t = buf.view(np.int64)[: y.size]
    t[:] = y
    return t


GRAD_FNS = {
    "cross_entropy": jitloss.cross_entropy_with_grad,
    "multi_margin": jitloss.multi_margin_loss_with_grad,
    "hinge": jitloss.multiclass_hinge_loss_with_grad,
}


@pytest.mark.parametrize("name", sorted(GRAD_FNS))
@pytest.mark.parametrize("path", ["small", "general"])
def test_grad_out_over_the_labels_of_the_same_call(name, path):
    fn = GRAD_FNS[name]
    x = _rng(1).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    # the general path: an explicit dloss (every family takes it) leaves the small call
    kw = {"reduction": "sum"} if path == "small" else {"reduction": "sum", "dloss": 1.5}
    ref_loss, ref_grad = fn(x.copy(), y.copy(), **kw)
    buf = np.zeros(N * C)
    g = buf.reshape(N, C)
    loss, got = fn(x, _labels_in(buf, y), grad_out=g, **kw)
    assert got is g
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(got, ref_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["cross_entropy", "multi_margin"])
def test_grad_out_over_the_class_weights(name):
    fn = GRAD_FNS[name]
    x = _rng(2).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    ref_loss, ref_grad = fn(x.copy(), y, weight=w.copy())
    buf = np.zeros(N * C)
    buf[:C] = w  # the weights are the gradient's first row
    loss, got = fn(x, y, weight=buf[:C], grad_out=buf.reshape(N, C))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(got, ref_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", sorted(GRAD_FNS) + ["max_margin"])
def test_grad_out_over_dloss(name):
    x = _rng(3).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    if name == "max_margin":
        fn, args, shape = jitloss.max_margin_loss_with_grad, (), (N, C - 1)  # one per pair
    else:
        fn, args, shape = GRAD_FNS[name], (y,), (N,)
    n = int(np.prod(shape))
    d = _rng(4).uniform(0.5, 2.0, shape)
    ref_loss, ref_grad = fn(x.copy(), *args, reduction="none", dloss=d.copy())
    buf = np.zeros(N * C + n)
    buf[:n] = d.reshape(-1)  # dloss lies over the gradient's first rows
    loss, got = fn(x, *args, reduction="none", dloss=buf[:n].reshape(shape),
                   grad_out=buf[:N * C].reshape(N, C))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(got, ref_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("path", ["small", "general"])
def test_grad_out_that_is_the_probability_target(path):
    x = _rng(5).standard_normal((N, C))
    t = jitloss.softmax(_rng(6).standard_normal((N, C)))
    kw = {} if path == "small" else {"label_smoothing": 0.1}
    ref_loss, ref_grad = jitloss.cross_entropy_with_grad(x.copy(), t.copy(), **kw)
    loss, got = jitloss.cross_entropy_with_grad(x, t, grad_out=t, **kw)
    assert got is t
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(got, ref_grad, rtol=1e-13, atol=1e-15)


def test_logsumexp_out_over_b():
    x = _rng(7).standard_normal((N, C))
    b = _rng(8).uniform(0.5, 2.0, (N, C))
    ref = jitloss.logsumexp(x, axis=1, b=b.copy())
    out = b.reshape(-1)[-N:]  # the last row of b, read after the first results are written
    got = jitloss.logsumexp(x, axis=1, b=b, out=out)
    assert got is out
    np.testing.assert_allclose(got, ref, rtol=1e-13)


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(sorted(GRAD_FNS)),
    rows=st.integers(1, 6),
    classes=st.integers(1, 6),
    offsets=st.tuples(*[st.integers(0, 48)] * 3),
    labels_in_buffer=st.booleans(),
    axis0=st.booleans(),
)
def test_any_placement_in_one_buffer(which, rows, classes, offsets, labels_in_buffer, axis0):
    # logits, labels (as int64) and the gradient anywhere in one float64 buffer, overlapping
    # or not, along either axis: the result is that of private copies
    fn = GRAD_FNS[which]
    rng = np.random.default_rng(offsets[0] * 7 + offsets[1])
    x = rng.standard_normal((rows, classes))
    y = rng.integers(0, classes, rows)
    buf = np.zeros(48 + 2 * rows * classes)
    xs = buf[offsets[0]:offsets[0] + x.size].reshape(x.shape)
    xs[...] = x
    ys = y
    if labels_in_buffer:
        ys = buf[offsets[1]:offsets[1] + rows].view(np.int64)
        ys[...] = y
    g = buf[offsets[2]:offsets[2] + x.size].reshape(x.shape)
    xv, yv = xs.copy(), ys.copy()  # the values the call sees, after every placement
    if not ((yv >= 0) & (yv < classes)).all():
        with pytest.raises(ValueError, match="target"):
            fn(xs, ys, grad_out=g, reduction="sum")
        return
    want_loss, want_grad = fn(xv, yv, reduction="sum")
    if axis0:
        loss, got = fn(xs.T, ys, axis=0, grad_out=g.T, reduction="sum")
        got = got.T
    else:
        loss, got = fn(xs, ys, grad_out=g, reduction="sum")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(got, want_grad, rtol=1e-12, atol=1e-15)
