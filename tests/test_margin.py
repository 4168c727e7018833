"""Tests of the margin losses on the CPU against float64 references and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import jitloss
from tests import reference as ref

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

EXAMPLE = np.array([0.5, 0.2, -0.1, 1.0, -0.5, 0.3])  # B=2, N=2 (the worked example)
PAIRS = np.array([[0.7, 0.4], [0.0, 0.3]])


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- max-margin ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "matrix"])
def test_worked_example_all_reductions(layout):
    s = EXAMPLE if layout == "flat" else EXAMPLE.reshape(2, 3)
    kw = {"num_negatives": 2} if layout == "flat" else {}
    np.testing.assert_allclose(jitloss.max_margin_loss(s, reduction="none", **kw), PAIRS)
    assert jitloss.max_margin_loss(s, reduction="sum", **kw) == pytest.approx(1.4)
    assert jitloss.max_margin_loss(s, reduction="mean", **kw) == pytest.approx(1.4 / 4)
    loss, g = jitloss.max_margin_loss_with_grad(s, reduction="sum", **kw)
    assert loss == pytest.approx(1.4)
    assert g.shape == s.shape
    np.testing.assert_array_equal(g.reshape(-1), [-2, 1, 1, -1, 0, 1])


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_margin_random_against_reference(red, dtype):
    rng = _rng(1)
    s = rng.standard_normal((50, 8)).astype(dtype)
    margin = 0.5
    dloss = rng.standard_normal((50, 7)) if red == "none" else 0.7
    loss, g = jitloss.max_margin_loss_with_grad(s, margin=margin, reduction=red, dloss=dloss)
    pairs = ref.max_margin_pairs(s, margin=margin)
    want = {"none": pairs, "sum": pairs.sum(), "mean": pairs.mean()}[red]
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(jitloss.max_margin_loss(s, margin=margin, reduction=red), want,
                               rtol=rtol, atol=rtol)
    dp = dloss if red == "none" else (dloss / pairs.size if red == "mean" else dloss)
    np.testing.assert_allclose(g, ref.max_margin_grad(s, margin=margin, dpairs=dp), rtol=rtol,
                               atol=rtol)


@needs_torch
def test_max_margin_against_pytorch_autograd():
    rng = _rng(2)
    s = rng.standard_normal((64, 11))
    t = torch.tensor(s, requires_grad=True)
    tl = F.relu(0.3 - t[:, :1] + t[:, 1:]).mean()
    tl.backward()
    loss, g = jitloss.max_margin_loss_with_grad(s, margin=0.3)
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-13, atol=1e-16)


def test_max_margin_gradient_against_finite_differences():
    rng = _rng(3)
    s = rng.standard_normal((6, 5))
    _, g = jitloss.max_margin_loss_with_grad(s, reduction="sum")
    fd = ref.finite_difference(lambda v: ref.max_margin_pairs(v).sum(), s, 1.0)
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_max_margin_hinge_point_has_zero_subgradient():
    s = np.array([[1.0, 0.0, 0.5]])  # pair (0, 1): 1 - 1 + 0 = 0 exactly
    loss, g = jitloss.max_margin_loss_with_grad(s, reduction="sum")
    assert loss == pytest.approx(0.5)
    np.testing.assert_array_equal(g, [[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize("rows", [300, 1100])  # serial and parallel, several row chunks
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_max_margin_in_place_is_bitwise_the_allocated_one(rows, reduction):
    # in place each chunk of rows is read from a copy (a loop that reads what it writes runs
    # LLVM's scalar fallback); the pairs, losses and gradient keep their bits
    rng = _rng(4)
    s = rng.standard_normal(rows * 64).astype(np.float32)
    kw = dict(num_negatives=63, reduction=reduction)
    if reduction == "none":
        kw["dloss"] = rng.standard_normal((rows, 63)).astype(np.float32)
    loss, g = jitloss.max_margin_loss_with_grad(s, **kw)
    s2 = s.copy()
    loss2, g2 = jitloss.max_margin_loss_with_grad(s2, grad_out=s2, **kw)
    assert g2 is s2
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(g2, g)


def test_max_margin_nan_propagates():
    s = np.array([[np.nan, 0.0, 1.0], [1.0, 0.5, np.nan]])
    pairs = jitloss.max_margin_loss(s, reduction="none")
    assert np.isnan(pairs[0]).all() and np.isnan(pairs[1, 1]) and pairs[1, 0] == 0.5
    _, g = jitloss.max_margin_loss_with_grad(s, reduction="sum")
    assert np.isnan(g[0]).all() and np.isnan(g[1, 0]) and np.isnan(g[1, 2])


# --- multi-margin ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_multi_margin_against_reference(p, weighted, red, axis):
    rng = _rng(5)
    x = rng.standard_normal((9, 6)) if axis == -1 else rng.standard_normal((6, 9))
    y = rng.integers(0, 6, 9)
    w = rng.uniform(0.5, 2, 6) if weighted else None
    dloss = rng.standard_normal(9) if red == "none" else 1.3
    kw = dict(axis=axis, p=p, margin=0.8, weight=w, reduction=red)
    loss, g = jitloss.multi_margin_loss_with_grad(x, y, dloss=dloss, **kw)
    per = ref.multi_margin_per_sample(x, y, p, 0.8, w, axis)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[red]
    np.testing.assert_allclose(loss, want, rtol=1e-13)
    np.testing.assert_allclose(jitloss.multi_margin_loss(x, y, **kw), want, rtol=1e-13)
    ds = dloss if red == "none" else (dloss / 9 if red == "mean" else dloss)
    np.testing.assert_allclose(g, ref.multi_margin_grad(x, y, p, 0.8, w, axis, ds),
                               rtol=1e-13, atol=1e-16)


@needs_torch
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_multi_margin_against_pytorch(p, weighted, red):
    rng = _rng(6)
    x = rng.standard_normal((40, 7))
    y = rng.integers(0, 7, 40)
    w = rng.uniform(0.5, 2, 7) if weighted else None
    t = torch.tensor(x, requires_grad=True)
    tl = F.multi_margin_loss(t, torch.tensor(y), p=p, margin=0.7,
                             weight=None if w is None else torch.tensor(w), reduction=red)
    tl.sum().backward()
    loss, g = jitloss.multi_margin_loss_with_grad(x, y, p=p, margin=0.7, weight=w,
                                                  reduction=red)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_gradient_against_finite_differences(p):
    rng = _rng(7)
    x = rng.standard_normal((5, 6))
    y = rng.integers(0, 6, 5)
    _, g = jitloss.multi_margin_loss_with_grad(x, y, p=p, margin=0.5)
    fd = ref.finite_difference(
        lambda v: ref.multi_margin_per_sample(v, y, p, 0.5).mean(), x, 1.0)
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_multi_margin_hinge_point_has_zero_subgradient():
    x = np.array([[1.0, 0.0, 0.25]])  # z_1 = 1 - 1 + 0 = 0 exactly
    loss, g = jitloss.multi_margin_loss_with_grad(x, [0], reduction="sum")
    assert loss == pytest.approx(0.25 / 3)
    np.testing.assert_allclose(g, [[-1 / 3, 0.0, 1 / 3]])


@pytest.mark.parametrize("rows", [256, 700])  # serial and parallel kernels
def test_multi_margin_float32_in_place(rows):
    rng = _rng(8)
    x = rng.standard_normal((rows, 100)).astype(np.float32)
    y = rng.integers(0, 100, rows)
    loss, g = jitloss.multi_margin_loss_with_grad(x, y, p=2)
    x2 = x.copy()
    loss2, g2 = jitloss.multi_margin_loss_with_grad(x2, y, p=2, grad_out=x2)
    assert g2 is x2 and loss2 == loss
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_allclose(loss, ref.multi_margin_per_sample(x, y, 2).mean(), rtol=2e-6)


# --- Crammer-Singer --------------------------------------------------------------------------


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_hinge_against_reference(red, axis):
    rng = _rng(9)
    x = rng.standard_normal((12, 5)) if axis == -1 else rng.standard_normal((4, 5, 3))
    y = rng.integers(0, 5, 12) if axis == -1 else rng.integers(0, 5, (4, 3))
    loss = jitloss.multiclass_hinge_loss(x, y, axis=axis, margin=0.6, reduction=red)
    per = ref.hinge_per_sample(x, y, 0.6, axis)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[red]
    np.testing.assert_allclose(loss, want, rtol=1e-14)
    loss2, g = jitloss.multiclass_hinge_loss_with_grad(x, y, axis=axis, margin=0.6,
                                                       reduction=red)
    np.testing.assert_array_equal(loss2, loss)
    fd = ref.finite_difference(lambda v: ref.hinge_per_sample(v, y, 0.6, axis).sum(), x, 1.0)
    k = 1.0 / per.size if red == "mean" else 1.0
    np.testing.assert_allclose(g, fd * k, atol=1e-7)


@needs_torch
def test_hinge_against_pytorch_autograd():
    rng = _rng(10)
    x = rng.standard_normal((30, 6))
    y = rng.integers(0, 6, 30)
    t = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y)
    aug = t + 1.0 * (torch.arange(6) != ty[:, None])
    tl = (aug.max(dim=1).values - t.gather(1, ty[:, None])[:, 0]).mean()
    tl.backward()
    loss, g = jitloss.multiclass_hinge_loss_with_grad(x, y)
    assert loss == pytest.approx(tl.item(), rel=1e-14)
    np.testing.assert_allclose(g, t.grad.numpy(), atol=1e-16)


def test_hinge_gradient_picks_first_argmax_and_is_zero_at_the_hinge():
    x = np.array([[0.0, 2.0, 2.0, 1.0],    # tie between classes 1 and 2: the first, 1
                  [3.0, 2.0, 0.0, 1.0]])   # 2 + 1 == 3: exactly at the hinge
    loss, g = jitloss.multiclass_hinge_loss_with_grad(x, [3, 0], reduction="sum")
    assert loss == pytest.approx(2.0)
    np.testing.assert_array_equal(g, [[0, 1, 0, -1], [0, 0, 0, 0]])



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hinge_first_argmax_past_the_target_in_a_later_span(dtype):
    # the argmax search tests spans of 64 classes at once: the target's own x_y + margin
    # equals the maximum in the first span (and must not count), the maxima lie further on
    x = np.zeros((2, 200), dtype)
    x[:, 10] = 5.0  # the target: 5 + 1 == 6 == the maximum, but j == y is excluded
    x[:, 150] = 5.0  # the first j != y attaining it
    x[:, 190] = 5.0
    x[1, 63] = 5.0  # row 1: one at the very end of the first span
    loss, g = jitloss.multiclass_hinge_loss_with_grad(x, np.array([10, 10]), reduction="none")
    np.testing.assert_array_equal(loss, [1.0, 1.0])
    want = np.zeros((2, 200))
    want[0, 150] = want[1, 63] = 1.0
    want[:, 10] = -1.0
    np.testing.assert_array_equal(g, want)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [5, 40, 130, 300, 2100])
def test_hinge_gradient_ties_in_place_and_not_at_every_row_width(dtype, classes):
    # the paths of cpu/margin.py by row size: _augmented_max's one loop (up to 512 bytes)
    # or two; the gradient found and written in one pass (up to 8 KiB, in place up to 1 KiB
    # from a copy of the row) or searched first.  Scores on a coarse grid tie often: the
    # first j != y attaining the maximum takes the gradient, the target's own tie never
    rng = _rng(classes)
    x = (rng.integers(-6, 6, (24, classes)) * 0.25).astype(dtype)
    y = rng.integers(0, classes, 24)
    x[0, :] = 1.0  # every class ties, the target with them
    x[1, y[1]] = 9.0  # no loss: a zero row
    x[2, -1] = np.nan
    x[3, :] = -2.0
    x[3, [y[3], classes - 1]] = 1.0  # one j != y attains it, the last one
    k = rng.random(24) + 0.5
    want = ref.hinge_grad_rows(x, y, 0.75, k)
    assert (np.count_nonzero(want, axis=1) == 2).sum() >= 18  # most rows have a loss
    loss, g = jitloss.multiclass_hinge_loss_with_grad(x, y, margin=0.75, reduction="none",
                                                      dloss=k)
    np.testing.assert_array_equal(g, want.astype(dtype))
    per = ref.hinge_per_sample(x, y, 0.75)
    np.testing.assert_allclose(loss, per, rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_array_equal(loss, jitloss.multiclass_hinge_loss(x, y, margin=0.75,
                                                                      reduction="none"))
    x2 = x.copy()
    loss2, g2 = jitloss.multiclass_hinge_loss_with_grad(x2, y, margin=0.75, reduction="none",
                                                        dloss=k, grad_out=x2)
    assert g2 is x2
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(x2, g)


def test_hinge_single_class_and_nan():
    assert jitloss.multiclass_hinge_loss(np.array([[3.0]]), [0]) == 0.0
    loss, g = jitloss.multiclass_hinge_loss_with_grad(np.array([[np.nan, 1.0]]), [1],
                                                      reduction="none")
    assert np.isnan(loss[0]) and np.isnan(g).all()


# --- errors and inputs --------------------------------------------------------------------


def test_inputs_are_never_modified():
    rng = _rng(11)
    s = rng.standard_normal((20, 5))
    y = rng.integers(0, 5, 20)
    s.flags.writeable = False
    keep = s.copy()
    jitloss.max_margin_loss_with_grad(s)
    jitloss.multi_margin_loss_with_grad(s, y, p=2)
    jitloss.multiclass_hinge_loss_with_grad(s, y)
    np.testing.assert_array_equal(s, keep)


@pytest.mark.parametrize(
    "kwargs, scores, match",
    [
        ({"num_negatives": 2}, np.zeros(7), "num_negatives"),
        ({}, np.zeros(6), "num_negatives"),
        ({"num_negatives": 0}, np.zeros(6), "num_negatives"),
        ({}, np.zeros((4, 1)), "negatives"),
        ({"margin": -1.0}, np.zeros((4, 3)), "margin"),
        ({"margin": np.inf}, np.zeros((4, 3)), "margin"),
        ({"reduction": "max"}, np.zeros((4, 3)), "reduction"),
        ({"num_negatives": 3}, np.zeros((4, 3)), "num_negatives"),
    ],
)
def test_max_margin_errors(kwargs, scores, match):
    with pytest.raises(ValueError, match=match):
        jitloss.max_margin_loss(scores, **kwargs)
    with pytest.raises(ValueError, match=match):
        jitloss.max_margin_loss_with_grad(scores, **kwargs)


@pytest.mark.parametrize("fn", [jitloss.multi_margin_loss, jitloss.multiclass_hinge_loss])
def test_class_index_errors(fn):
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"label 3 at position \(1,\)"):
        fn(x, [0, 3, 1, 2])
    with pytest.raises(ValueError, match=r"label -1"):
        fn(x, [0, 1, -1, 2])
    with pytest.raises(ValueError, match="margin"):
        fn(x, [0, 1, 1, 2], margin=-0.5)
    with pytest.raises(ValueError, match="reduction"):
        fn(x, [0, 1, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="target"):
        fn(x, [0, 1])
    with pytest.raises(TypeError, match="target"):
        fn(x, [0.0, 1.0, 1.0, 2.0])


def test_multi_margin_p_and_weight_errors():
    x = np.zeros((4, 3))
    y = [0, 1, 1, 2]
    for p in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match="p"):
            jitloss.multi_margin_loss(x, y, p=p)
    with pytest.raises(ValueError, match="weight"):
        jitloss.multi_margin_loss(x, y, weight=np.ones(4))


def test_grad_out_errors():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="grad_out"):
        jitloss.multiclass_hinge_loss_with_grad(x, [0, 1, 1, 2], grad_out=np.zeros((3, 4)))
    with pytest.raises(TypeError, match="grad_out"):
        jitloss.max_margin_loss_with_grad(x, grad_out=np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_class_index_fast_plan_matches_the_general_one(dtype, red):
    # (N, C) C-contiguous scores with int64 labels skip the general argument layer; int32
    # labels take it: the same bits, the same errors
    x = (_rng(31).standard_normal((6, 9)) * 2).astype(dtype)
    y = _rng(32).integers(0, 9, 6)
    w = _rng(33).random(9) + 0.5
    calls = [
        (jitloss.multi_margin_loss, {}),
        (jitloss.multi_margin_loss, {"p": 2, "margin": 0.5, "weight": w}),
        (jitloss.multiclass_hinge_loss, {"margin": 2}),
    ]
    for fn, kw in calls:
        fast = fn(x, y, reduction=red, **kw)
        np.testing.assert_array_equal(fast, fn(x, y.astype(np.int32), reduction=red, **kw))
        assert np.shape(fast) == ((6,) if red == "none" else ())
        assert np.asarray(fast).dtype == dtype
    grads = [
        (jitloss.multi_margin_loss_with_grad, {"p": 2, "weight": w}),
        (jitloss.multiclass_hinge_loss_with_grad, {}),
    ]
    for fn, kw in grads:
        loss, g = fn(x, y, reduction=red, **kw)
        loss_b, g_b = fn(x, y.astype(np.int32), reduction=red, **kw)
        np.testing.assert_array_equal(loss, loss_b)
        np.testing.assert_array_equal(g, g_b)
        x2 = x.copy()
        assert fn(x2, y, reduction=red, grad_out=x2, **kw)[1] is x2
        np.testing.assert_array_equal(x2, g)
        g3 = np.full_like(x, np.nan)
        assert fn(x, y, reduction=red, grad_out=g3, **kw)[1] is g3
        np.testing.assert_array_equal(g3, g)
        buf = np.concatenate([x.ravel(), np.zeros(9, dtype)])
        shifted = buf[9:].reshape(x.shape)  # overlaps the scores, one row along
        fn(buf[:-9].reshape(x.shape), y, reduction=red, grad_out=shifted, **kw)
        np.testing.assert_array_equal(shifted, g)
    per = ref.multi_margin_per_sample(x, y, 1, 1.0, None, -1)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[red]
    np.testing.assert_allclose(jitloss.multi_margin_loss(x, y, reduction=red), want,
                               rtol=1e-6 if dtype == np.float32 else 1e-13)
    bad = y.copy()
    bad[4] = 9
    for fn in (jitloss.multi_margin_loss, jitloss.multiclass_hinge_loss_with_grad):
        with pytest.raises(ValueError, match=r"label 9 at position \(4,\), outside \[0, 9\)"):
            fn(x, bad)
    with pytest.raises(ValueError, match="margin"):
        jitloss.multi_margin_loss(x, y, margin=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        jitloss.multiclass_hinge_loss(x, y, reduction="avg")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 2), (3, 14), (700, 30)])
@pytest.mark.parametrize("red", ["mean", "sum"])
def test_small_call_shortcuts_give_the_general_paths_bits(dtype, shape, red):
    # unweighted (N, C) rows with int64 labels, "mean"/"sum" and dloss=1 take one compiled
    # call (cpu/margin.py's *_small); int32 labels, or num_negatives for max-margin, take the
    # general path: the same bits, losses and gradients, in place or not
    x = (_rng(41).standard_normal(shape) * 2).astype(dtype)
    y = _rng(42).integers(0, shape[1], shape[0])
    y32 = y.astype(np.int32)
    for fn, kw in [(jitloss.multi_margin_loss, {}), (jitloss.multi_margin_loss, {"p": 2}),
                   (jitloss.multiclass_hinge_loss, {"margin": 0.5})]:
        fast = fn(x, y, reduction=red, **kw)
        assert type(fast) is dtype
        np.testing.assert_array_equal(fast, fn(x, y32, reduction=red, **kw))
    per = ref.multi_margin_per_sample(x, y, 1, 1.0, None, -1)
    np.testing.assert_allclose(jitloss.multi_margin_loss(x, y, reduction=red),
                               per.sum() if red == "sum" else per.mean(),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    grads = [(jitloss.multi_margin_loss_with_grad, {"p": 2}, (y, y32)),
             (jitloss.multiclass_hinge_loss_with_grad, {}, (y, y32)),
             (jitloss.max_margin_loss_with_grad, {}, None)]
    for fn, kw, labels in grads:
        fast_args = (x,) if labels is None else (x, labels[0])
        slow_args = (x,) if labels is None else (x, labels[1])
        slow_kw = dict(kw, num_negatives=shape[1] - 1) if labels is None else kw
        loss, g = fn(*fast_args, reduction=red, **kw)
        loss_b, g_b = fn(*slow_args, reduction=red, **slow_kw)
        assert type(loss) is dtype
        np.testing.assert_array_equal(loss, loss_b)
        np.testing.assert_array_equal(g, g_b)
        x2 = x.copy()
        args2 = (x2,) if labels is None else (x2, labels[0])
        assert fn(*args2, reduction=red, grad_out=x2, **kw)[1] is x2
        np.testing.assert_array_equal(x2, g)
    fast = jitloss.max_margin_loss(x, reduction=red)
    assert type(fast) is dtype
    np.testing.assert_array_equal(
        fast, jitloss.max_margin_loss(x, num_negatives=shape[1] - 1, reduction=red))


def test_small_call_shortcut_bad_label_writes_nothing():
    x = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 3, 2])
    for fn in (jitloss.multi_margin_loss_with_grad, jitloss.multiclass_hinge_loss_with_grad):
        x2 = x.copy()
        with pytest.raises(ValueError, match=r"label 3 at position \(2,\)"):
            fn(x2, y, grad_out=x2)
        np.testing.assert_array_equal(x2, x)
    for fn in (jitloss.multi_margin_loss, jitloss.multiclass_hinge_loss):
        with pytest.raises(ValueError, match=r"label 3 at position \(2,\)"):
            fn(x, y, reduction="sum")
    assert np.isnan(jitloss.max_margin_loss(np.zeros((0, 3))))
    loss, g = jitloss.max_margin_loss_with_grad(np.zeros((0, 3)))
    assert np.isnan(loss) and g.shape == (0, 3)
