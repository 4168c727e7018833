"""Device ``out=`` / ``grad_out=`` arrays that share memory with an input other than the
one they may replace: the twins of tests/test_overlap.py, on views of one device buffer.

Before the fix the launchers wrote such outputs directly: a softmax written one row
ahead of its input read rows already overwritten, and a gradient written over the labels
turned them into arbitrary indices.  References are the CPU results on host copies.
"""

from __future__ import annotations

import numpy as np
import pytest

import jitloss
from tests.cuda.helpers import dev, host

N, C = 6, 5


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fn", [jitloss.softmax, jitloss.log_softmax])
def test_out_one_row_ahead_of_x(fn):
    x = _rng(1).standard_normal((N, C))
    buf = dev(np.concatenate([x.reshape(-1), np.zeros(C)]))
    d = buf[: N * C].reshape(N, C)
    out = buf[C:].reshape(N, C)  # row i of the result lies over row i + 1 of x
    fn(d, out=out)
    np.testing.assert_allclose(host(out), fn(x), rtol=1e-13)


def test_backward_out_over_part_of_dy():
    y = jitloss.softmax(_rng(2).standard_normal((N, C)))
    dy = _rng(3).standard_normal((N, C))
    buf = dev(np.concatenate([dy.reshape(-1), np.zeros(C)]))
    out = buf[C:].reshape(N, C)
    jitloss.softmax_backward(dev(y), buf[: N * C].reshape(N, C), out=out)
    np.testing.assert_allclose(host(out), jitloss.softmax_backward(y, dy), rtol=1e-12,
                               atol=1e-15)


GRAD_FNS = {
    "cross_entropy": jitloss.cross_entropy_with_grad,
    "multi_margin": jitloss.multi_margin_loss_with_grad,
    "hinge": jitloss.multiclass_hinge_loss_with_grad,
}


@pytest.mark.parametrize("name", sorted(GRAD_FNS))
def test_grad_out_over_the_labels_of_the_same_call(name):
    fn = GRAD_FNS[name]
    x = _rng(4).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    want_loss, want_grad = fn(x, y, reduction="sum")
    host_buf = np.zeros(N * C)
    host_buf.view(np.int64)[:N] = y
    buf = dev(host_buf)
    labels = buf.view(np.int64)[:N]
    g = buf.reshape(N, C)
    loss, got = fn(dev(x), labels, reduction="sum", grad_out=g)
    assert got is g
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-13)
    np.testing.assert_allclose(host(got), want_grad, rtol=1e-12, atol=1e-15)


def test_grad_out_that_is_the_probability_target():
    x = _rng(5).standard_normal((N, C))
    t = jitloss.softmax(_rng(6).standard_normal((N, C)))
    want_loss, want_grad = jitloss.cross_entropy_with_grad(x, t)
    dt = dev(t)
    loss, got = jitloss.cross_entropy_with_grad(dev(x), dt, grad_out=dt)
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-13)
    np.testing.assert_allclose(host(got), want_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["cross_entropy", "multi_margin"])
def test_grad_out_over_the_class_weights(name):
    fn = GRAD_FNS[name]
    x = _rng(7).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    want_loss, want_grad = fn(x, y, weight=w)
    host_buf = np.zeros(N * C)
    host_buf[:C] = w
    buf = dev(host_buf)
    loss, got = fn(dev(x), dev(y), weight=buf[:C], grad_out=buf.reshape(N, C))
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-13)
    np.testing.assert_allclose(host(got), want_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(GRAD_FNS) + ["max_margin"])
def test_grad_out_over_dloss(name):
    x = _rng(8).standard_normal((N, C))
    y = np.array([4, 0, 3, 1, 2, 4])
    if name == "max_margin":
        fn, args, shape = jitloss.max_margin_loss_with_grad, (), (N, C - 1)
    else:
        fn, args, shape = GRAD_FNS[name], (y,), (N,)
    n = int(np.prod(shape))
    d = _rng(9).uniform(0.5, 2.0, shape)
    want_loss, want_grad = fn(x, *args, reduction="none", dloss=d)
    host_buf = np.zeros(N * C)
    host_buf[:n] = d.reshape(-1)
    buf = dev(host_buf)
    loss, got = fn(dev(x), *[dev(a) for a in args], reduction="none",
                   dloss=buf[:n].reshape(shape), grad_out=buf.reshape(N, C))
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-13)
    np.testing.assert_allclose(host(got), want_grad, rtol=1e-12, atol=1e-15)


def test_in_place_over_x_is_still_written_directly():
    # the exact input may be the output: no copy (the result lands in x's own memory)
    x = _rng(10).standard_normal((N, C))
    d = dev(x)
    assert jitloss.softmax(d, out=d) is d
    np.testing.assert_allclose(host(d), jitloss.softmax(x), rtol=1e-13)
