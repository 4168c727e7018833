"""Cross-entropy on CUDA arrays, compared with the CPU results (the CPU tests' cases)."""

from __future__ import annotations

import numpy as np
import pytest

import jitloss
from tests.cuda.helpers import dev, host
from tests.test_cross_entropy import COMBOS, WEIGHT, _case, _ids

# every reduction, weight, ignore_index, smoothing and target kind, class axis -1 and 1
CUDA_COMBOS = [c for c in COMBOS if c[0] != "sum" or c[5] == -1]


@pytest.mark.parametrize("combo", CUDA_COMBOS, ids=[_ids(c) for c in CUDA_COMBOS])
def test_every_combination_matches_cpu(combo):
    red, weighted, ignore, eps, kind, axis = combo
    x, t = _case(kind, axis, ignore, dtype=np.float32)
    kw = dict(axis=axis, weight=WEIGHT if weighted else None, reduction=red,
              label_smoothing=eps, z_loss=0.01)
    loss, grad = jitloss.cross_entropy_with_grad(dev(x), dev(t), **kw)
    want_loss, want_grad = jitloss.cross_entropy_with_grad(x, t, **kw)
    np.testing.assert_allclose(host(loss), want_loss, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(host(grad), want_grad, rtol=2e-6, atol=1e-8)
    np.testing.assert_allclose(host(jitloss.cross_entropy(dev(x), dev(t), **kw)), want_loss,
                               rtol=2e-6, atol=1e-7)


def test_host_weight_and_target_beside_device_logits():
    x, t = _case("index", -1, ignore=True)
    loss, grad = jitloss.cross_entropy_with_grad(dev(x), t, weight=WEIGHT)
    want = jitloss.cross_entropy_with_grad(x, t, weight=WEIGHT)
    np.testing.assert_allclose(host(loss), want[0], rtol=1e-13)
    np.testing.assert_allclose(host(grad), want[1], rtol=1e-12, atol=1e-15)


def test_in_place_gradient_and_dloss():
    x, t = _case("index", -1, ignore=False, dtype=np.float32)
    d = dev(x)
    dloss = np.linspace(0.5, 1.5, 6)
    loss, g = jitloss.cross_entropy_with_grad(d, dev(t), reduction="none", dloss=dev(dloss),
                                              grad_out=d)
    assert g is d
    want = jitloss.cross_entropy_with_grad(x, t, reduction="none", dloss=dloss)
    np.testing.assert_allclose(host(d), want[1], rtol=2e-6, atol=1e-8)


def test_all_ignored():
    x = np.zeros((3, 5))
    loss, g = jitloss.cross_entropy_with_grad(dev(x), dev(np.full(3, -100)))
    assert np.isnan(host(loss))
    np.testing.assert_array_equal(host(g), 0.0)



@pytest.mark.parametrize("kind", ["index", "prob"])
def test_non_finite_rows_and_ignored_samples_match_cpu(kind):
    # rows with NaN, +inf or only -inf give NaN loss and gradient; ignored samples give 0
    x = np.random.default_rng(5).standard_normal((6, 5))
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    x[3] = -np.inf
    t = np.array([0, 1, 2, 3, -100, 4]) if kind == "index" else np.full((6, 5), 0.2)
    loss, grad = jitloss.cross_entropy_with_grad(dev(x), dev(t), reduction="none")
    want_loss, want_grad = jitloss.cross_entropy_with_grad(x, t, reduction="none")
    assert np.isnan(want_loss[1:4]).all() and np.isnan(want_grad[1:4]).all()
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-12)
    np.testing.assert_allclose(host(grad), want_grad, rtol=1e-12, atol=1e-15)

def test_bad_label_is_flagged_and_the_context_stays_usable():
    x = dev(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"label 7 at position \(2,\)"):
        jitloss.cross_entropy_with_grad(x, dev(np.array([0, 1, 7, -3])))
    loss = jitloss.cross_entropy(x, dev(np.array([0, 1, 2, 3])))
    assert host(loss) == pytest.approx(np.log(5), rel=1e-6)


def test_errors_match_the_cpu():
    x = dev(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="weight"):
        jitloss.cross_entropy(x, dev(np.zeros(4, np.int64)), weight=np.ones(3))
    with pytest.raises(TypeError, match="target"):
        jitloss.cross_entropy(x, dev(np.zeros(4)))
    with pytest.raises(ValueError, match="ignore_index"):
        jitloss.cross_entropy(x, dev(np.full((4, 5), 0.2)), ignore_index=1)


def test_fused_kernels_are_built_once_per_dtype():
    # a device helper inserted between ``kernels`` and its lru_cache took the cache: every
    # call rebuilt (and on a GPU recompiled) the kernels, and the helper became an
    # lru_cache wrapper that device code cannot call
    from jitloss.cuda import cross_entropy as cuda_ce

    assert cuda_ce.kernels(np.float32) is cuda_ce.kernels(np.float32)
    assert not hasattr(cuda_ce._fill_sample, "cache_info")
