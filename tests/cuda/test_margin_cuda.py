"""Margin losses on CUDA arrays, compared with the CPU results."""

from __future__ import annotations

import numpy as np
import pytest

import jitloss
from tests.cuda.helpers import dev, host
from tests.test_margin import EXAMPLE, PAIRS


def test_worked_example():
    s = dev(EXAMPLE)
    np.testing.assert_allclose(
        host(jitloss.max_margin_loss(s, num_negatives=2, reduction="none")), PAIRS)
    loss, g = jitloss.max_margin_loss_with_grad(s, num_negatives=2, reduction="sum")
    assert host(loss) == pytest.approx(1.4)
    np.testing.assert_array_equal(host(g), [-2, 1, 1, -1, 0, 1])


@pytest.mark.parametrize("red", ["mean", "none"])
def test_max_margin_matches_cpu(red):
    rng = np.random.default_rng(1)
    s = rng.standard_normal((7, 12)).astype(np.float32)  # 11 negatives: the block path
    dloss = rng.standard_normal((7, 11)) if red == "none" else 0.5
    loss, g = jitloss.max_margin_loss_with_grad(dev(s), margin=0.4, reduction=red,
                                                dloss=dloss)
    want = jitloss.max_margin_loss_with_grad(s, margin=0.4, reduction=red, dloss=dloss)
    # the device forms margin - s_0 + s_j in float64 and rounds once; the CPU in float32
    np.testing.assert_allclose(host(loss), want[0], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(host(g), want[1], rtol=2e-6)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape, axis", [((6, 5), -1), ((5, 10), 0)])
def test_multi_margin_matches_cpu(p, shape, axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    classes = shape[axis]
    y = rng.integers(0, classes, shape[1 - axis % 2])
    w = np.linspace(0.5, 2, classes)
    loss, g = jitloss.multi_margin_loss_with_grad(dev(x), dev(y), axis=axis, p=p, weight=w)
    want = jitloss.multi_margin_loss_with_grad(x, y, axis=axis, p=p, weight=w)
    np.testing.assert_allclose(host(loss), want[0], rtol=1e-13)
    np.testing.assert_allclose(host(g), want[1], rtol=1e-12, atol=1e-16)


def test_hinge_matches_cpu_with_ties_and_the_hinge_point():
    x = np.array([[0.0, 2.0, 2.0, 1.0], [3.0, 2.0, 0.0, 1.0], [1.0, 0.5, 0.2, 3.0]])
    y = np.array([3, 0, 1])
    loss, g = jitloss.multiclass_hinge_loss_with_grad(dev(x), dev(y), reduction="none")
    want = jitloss.multiclass_hinge_loss_with_grad(x, y, reduction="none")
    np.testing.assert_array_equal(host(loss), want[0])
    np.testing.assert_array_equal(host(g), want[1])


def test_label_errors():
    with pytest.raises(ValueError, match=r"label 4 at position \(1,\)"):
        jitloss.multiclass_hinge_loss(dev(np.zeros((3, 4))), dev(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match="num_negatives"):
        jitloss.max_margin_loss(dev(np.zeros(7)), num_negatives=2)
