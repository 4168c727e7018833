"""The softmax family on CUDA arrays, compared with the CPU results (same cases)."""

from __future__ import annotations

import numpy as np
import pytest

import jitloss
from tests.cuda.helpers import dev, host, is_device

RTOL = {np.float32: 2e-6, np.float64: 1e-13}


def _rng(seed=0):
    return np.random.default_rng(seed)


# shapes that take the warp path (classes <= WARP_MAX_CLASSES) and the block path, rows
# spanning several blocks, and a strided class axis
CASES = [((5, 6), -1), ((3, 20), -1), ((4, 5, 3), 1), ((6, 7), 0), ((2, 3, 4), (1, 2))]


@pytest.mark.parametrize("shape, axis", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_matches_cpu(shape, axis, dtype):
    x = (_rng().standard_normal(shape) * 4).astype(dtype)
    d = dev(x)
    for fn in (jitloss.softmax, jitloss.log_softmax):
        got = fn(d, axis=axis, temperature=0.7)
        assert is_device(got) and host(got).dtype == dtype
        np.testing.assert_allclose(host(got), fn(x, axis=axis, temperature=0.7),
                                   rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-3)
    lse = jitloss.logsumexp(d, axis=axis)
    np.testing.assert_allclose(host(lse), jitloss.logsumexp(x, axis=axis), rtol=RTOL[dtype])


@pytest.mark.parametrize("shape, axis", CASES[:4])
def test_backward_matches_cpu(shape, axis):
    rng = _rng(1)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    y = jitloss.softmax(x, axis=axis)
    logp = jitloss.log_softmax(x, axis=axis)
    got = jitloss.softmax_backward(dev(y), dev(dy), axis=axis, temperature=2.0)
    np.testing.assert_allclose(host(got), jitloss.softmax_backward(y, dy, axis=axis,
                                                                   temperature=2.0),
                               rtol=1e-12, atol=1e-15)
    got = jitloss.log_softmax_backward(dev(logp), dev(dy), axis=axis)
    np.testing.assert_allclose(host(got), jitloss.log_softmax_backward(logp, dy, axis=axis),
                               rtol=1e-12, atol=1e-15)


def test_non_finite_rows():
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 0.0],
                  [-np.inf, -np.inf, -np.inf], [np.nan, -np.inf, -np.inf]])
    y = host(jitloss.softmax(dev(x)))
    assert np.isnan(y[[0, 2, 3, 4]]).all() and np.isfinite(y[1]).all()
    lse = host(jitloss.logsumexp(dev(x)))
    np.testing.assert_array_equal(np.isnan(lse), [True, False, False, False, True])
    assert lse[2] == np.inf and lse[3] == -np.inf


def test_keepdims_b_and_return_sign_match_cpu():
    rng = _rng(2)
    x = rng.standard_normal((3, 4))
    b = rng.standard_normal((3, 4))
    got = jitloss.logsumexp(dev(x), axis=0, keepdims=True)
    assert tuple(got.shape) == (1, 4)
    np.testing.assert_allclose(host(got), jitloss.logsumexp(x, axis=0, keepdims=True))
    r, s = jitloss.logsumexp(dev(x), axis=1, b=dev(b), return_sign=True)
    wr, ws = jitloss.logsumexp(x, axis=1, b=b, return_sign=True)
    np.testing.assert_allclose(host(r), wr, rtol=1e-13)
    np.testing.assert_array_equal(host(s), ws)
    full = jitloss.logsumexp(dev(x), axis=None)
    assert tuple(full.shape) == ()  # a 0-d device array
    assert host(full) == pytest.approx(jitloss.logsumexp(x, axis=None), rel=1e-14)


def test_float16_and_integer_inputs():
    x16 = _rng().standard_normal((3, 5)).astype(np.float16)
    y = jitloss.softmax(dev(x16))
    assert host(y).dtype == np.float16
    np.testing.assert_allclose(host(y).astype(float), jitloss.softmax(x16).astype(float),
                               rtol=1e-3)
    xi = np.arange(12).reshape(3, 4)
    got = jitloss.log_softmax(dev(xi))
    assert host(got).dtype == np.float64
    np.testing.assert_allclose(host(got), jitloss.log_softmax(xi), rtol=1e-14)


def test_out_and_in_place_on_the_device():
    x = _rng(3).standard_normal((4, 6)).astype(np.float32)
    d = dev(x)
    res = jitloss.softmax(d, out=d)
    assert res is d
    np.testing.assert_allclose(host(d), jitloss.softmax(x), rtol=2e-6)
    with pytest.raises(ValueError, match="out"):
        jitloss.softmax(dev(x), out=dev(np.zeros((6, 4), np.float32)))
    with pytest.raises(TypeError, match="out"):
        jitloss.softmax(dev(x), out=dev(np.zeros((4, 6))))


def test_errors_match_the_cpu():
    d = dev(np.zeros((2, 3)))
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        jitloss.softmax(d, axis=2)
    with pytest.raises(ValueError, match="temperature"):
        jitloss.softmax(d, temperature=0.0)
    with pytest.raises(TypeError, match="x"):
        jitloss.softmax(dev(np.zeros(3, np.complex64)))


@pytest.mark.parametrize("shared_bytes", [0, 1 << 20], ids=["online", "staged"])
def test_long_rows_read_online_or_staged_in_shared_memory(shared_bytes, monkeypatch):
    # rows longer than WARP_MAX_CLASSES take a block; they are staged in shared memory
    # when they fit (SHARED_ROW_BYTES) and read once with an online max/sum otherwise
    import jitloss.cuda as jc

    monkeypatch.setattr(jc, "SHARED_ROW_BYTES", shared_bytes)
    rng = _rng(4)
    x = (rng.standard_normal((3, 21)) * 6).astype(np.float32)
    x[1, 5] = np.nan
    x[2, :] = -np.inf
    x[2, 3] = np.inf
    for fn in (jitloss.softmax, jitloss.log_softmax, jitloss.logsumexp):
        got = host(fn(dev(x)))
        want = fn(x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
    y = np.array([0, 4, 20])
    loss, g = jitloss.cross_entropy_with_grad(dev(x[:1]), dev(y[:1]), label_smoothing=0.1)
    want = jitloss.cross_entropy_with_grad(x[:1], y[:1], label_smoothing=0.1)
    np.testing.assert_allclose(host(loss), want[0], rtol=2e-6)
    np.testing.assert_allclose(host(g), want[1], rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("classes", [4, 12])  # the warp path and the block path
def test_minus_inf_entries_give_exact_zeros(classes):
    x = np.zeros(classes)
    x[::2] = -np.inf
    y = host(jitloss.softmax(dev(x)))
    np.testing.assert_array_equal(y, jitloss.softmax(x))
    assert (y[::2] == 0).all()
    loss, g = jitloss.cross_entropy_with_grad(dev(x[None]), dev(np.array([1])))
    want = jitloss.cross_entropy_with_grad(x[None], np.array([1]))
    np.testing.assert_allclose(host(loss), want[0], rtol=1e-15)
    np.testing.assert_array_equal(host(g), want[1])
