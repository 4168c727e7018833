"""Tests of the fused cross-entropy on the CPU against float64 references and PyTorch."""

from __future__ import annotations

import itertools

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

C = 5


def _rng(seed=0):
    return np.random.default_rng(seed)


def _case(kind, axis, ignore, seed=0, dtype=np.float64):
    """logits and targets: (6, C) with axis -1, or (3, C, 2, 2) with the class axis 1."""
    rng = _rng(seed)
    shape = (6, C) if axis == -1 else (3, C, 2, 2)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    sample_shape = shape[:-1] if axis == -1 else (3, 2, 2)
    if kind == "index":
        t = rng.integers(0, C, sample_shape)
        if ignore:
            t.reshape(-1)[[1, 4]] = -100
    else:
        p = rng.dirichlet(np.ones(C), sample_shape)
        t = np.moveaxis(p, -1, axis).astype(dtype)
    return x, t


WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 1.5])
COMBOS = [
    (red, weighted, ignore, eps, kind, axis)
    for red, weighted, ignore, eps, kind, axis in itertools.product(
        ["mean", "sum", "none"], [False, True], [False, True], [0.0, 0.1], ["index", "prob"],
        [-1, 1],
    )
    if not (kind == "prob" and ignore)
]


def _ids(c):
    red, weighted, ignore, eps, kind, axis = c
    return f"{red}-{'w' if weighted else 'nw'}-{'ign' if ignore else 'all'}-e{eps}-{kind}-ax{axis}"


@pytest.mark.parametrize("combo", COMBOS, ids=[_ids(c) for c in COMBOS])
def test_every_combination_against_float64_reference(combo):
    red, weighted, ignore, eps, kind, axis = combo
    x, t = _case(kind, axis, ignore)
    kw = dict(axis=axis, weight=WEIGHT if weighted else None, reduction=red,
              label_smoothing=eps)
    loss = jitloss.cross_entropy(x, t, **kw)
    loss2, grad = jitloss.cross_entropy_with_grad(x, t, **kw)
    want = ref.cross_entropy(x, t, **kw)
    np.testing.assert_allclose(loss, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(x, t, **kw), rtol=1e-12,
                               atol=1e-15)


@needs_torch
@pytest.mark.parametrize("combo", COMBOS, ids=[_ids(c) for c in COMBOS])
def test_every_combination_against_pytorch(combo):
    red, weighted, ignore, eps, kind, axis = combo
    x, t = _case(kind, axis, ignore, seed=1)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(WEIGHT) if weighted else None
    tl = F.cross_entropy(tx, torch.tensor(t), weight=tw, reduction=red, label_smoothing=eps)
    tl.sum().backward()
    loss, grad = jitloss.cross_entropy_with_grad(
        x, t, axis=axis, weight=WEIGHT if weighted else None, reduction=red,
        label_smoothing=eps,
    )
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("eps, z", [(0.0, 0.0), (0.2, 0.0), (0.0, 0.1), (0.3, 0.05)])
def test_gradient_against_finite_differences(kind, axis, eps, z):
    x, t = _case(kind, axis, ignore=False, seed=2)
    kw = dict(axis=axis, weight=WEIGHT, label_smoothing=eps, z_loss=z, reduction="mean")
    _, grad = jitloss.cross_entropy_with_grad(x, t, **kw)
    fd = ref.finite_difference(lambda v: ref.cross_entropy(v, t, **kw), x, 1.0)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_z_loss(kind, axis):
    x, t = _case(kind, axis, ignore=False, seed=3)
    z = 1e-2
    base = jitloss.cross_entropy(x, t, axis=axis, reduction="none")
    with_z = jitloss.cross_entropy(x, t, axis=axis, reduction="none", z_loss=z)
    lse = ref.logsumexp(x, axis=axis)
    np.testing.assert_allclose(with_z - base, z * lse**2, rtol=1e-12)
    np.testing.assert_allclose(with_z, ref.cross_entropy(x, t, axis=axis, reduction="none",
                                                         z_loss=z), rtol=1e-13)
    _, g = jitloss.cross_entropy_with_grad(x, t, axis=axis, z_loss=z)
    np.testing.assert_allclose(g, ref.cross_entropy_grad(x, t, axis=axis, z_loss=z),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_dloss_scales_the_gradient(red):
    x, t = _case("index", -1, ignore=True, seed=4)
    dloss = _rng(5).standard_normal(6) if red == "none" else 0.7
    _, g = jitloss.cross_entropy_with_grad(x, t, weight=WEIGHT, reduction=red, dloss=dloss)
    want = ref.cross_entropy_grad(x, t, weight=WEIGHT, reduction=red, dloss=dloss)
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


def test_all_ignored_gives_nan_loss_and_zero_gradient():
    x = _rng().standard_normal((3, C))
    t = np.full(3, -100)
    loss, g = jitloss.cross_entropy_with_grad(x, t)
    assert np.isnan(loss)
    np.testing.assert_array_equal(g, 0.0)
    assert jitloss.cross_entropy(x, t, reduction="sum") == 0.0


def test_ignore_index_inside_the_class_range():
    x = _rng().standard_normal((4, C))
    t = np.array([0, 1, 2, 1])
    got = jitloss.cross_entropy(x, t, ignore_index=1)
    np.testing.assert_allclose(got, ref.cross_entropy(x, t, ignore_index=1), rtol=1e-13)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [12, 300, 4500])  # short rows, stack copies, heap copies
def test_in_place_gradient_is_bitwise_the_allocated_one(kind, axis, dtype, classes):
    # In place, each row's exponentials are taken from a copy of the row (aside_row), on the
    # stack up to 16 KiB: reading the memory it writes, a vectorised loop runs its scalar
    # version (slower, and a sum in another order)
    rng = _rng(6)
    shape = (40, classes) if axis == -1 else (8, classes, 5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    ax = axis % len(shape)
    sample_shape = tuple(n for i, n in enumerate(shape) if i != ax)
    if kind == "index":
        t = rng.integers(0, shape[ax], sample_shape)
    else:
        t = np.moveaxis(rng.dirichlet(np.ones(shape[ax]), sample_shape), -1, ax).astype(dtype)
    kw = dict(axis=axis, label_smoothing=0.1, z_loss=1e-3, weight=np.linspace(0.5, 2, shape[ax]))
    loss, g = jitloss.cross_entropy_with_grad(x, t, **kw)
    x_in_place = x.copy()
    loss2, g2 = jitloss.cross_entropy_with_grad(x_in_place, t, grad_out=x_in_place, **kw)
    assert g2 is x_in_place
    np.testing.assert_array_equal(g2, g)
    assert loss2 == loss


def test_grad_out_of_another_layout():
    x, t = _case("index", -1, ignore=False, seed=7)
    out = np.empty(x.shape, order="F")
    loss, g = jitloss.cross_entropy_with_grad(x, t, grad_out=out)
    assert g is out
    np.testing.assert_allclose(out, ref.cross_entropy_grad(x, t), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_float32_large_vocabulary_within_2e6_of_float64(kind):
    rng = _rng(8)
    x = (rng.standard_normal((32, 128256)) * 4).astype(np.float32)
    if kind == "index":
        t = rng.integers(0, 128256, 32)
        x[np.arange(0, 32, 2), t[::2]] += 30  # some confident, correct rows (tiny losses)
    else:
        t = rng.dirichlet(np.full(128256, 0.01), 32).astype(np.float32)
    loss, g = jitloss.cross_entropy_with_grad(x, t, reduction="none")
    want = ref.cross_entropy(x, t, reduction="none")  # float64 on the same float32 inputs
    np.testing.assert_allclose(loss, want, rtol=2e-6)
    gw = ref.cross_entropy_grad(x, t, reduction="none")
    if kind == "index":  # elementwise, the target entries 1 - p_y ~ 1e-6 included
        tiny = 2.0**-148
        assert np.all(np.abs(g - gw) <= 2e-6 * np.abs(gw) + tiny)
    else:
        # p_j - t_j cancels where a prediction matches its target; a float32 p_j holds 7
        # digits, so there the error is relative to the row's scale, not to the difference
        scale = np.abs(gw).max(axis=1, keepdims=True)
        assert np.all(np.abs(g - gw) <= 2e-6 * scale)
    mean = jitloss.cross_entropy(x, t)
    assert abs(mean - want.mean()) <= 2e-6 * abs(want.mean())


def test_confident_prediction_keeps_its_tiny_loss():
    # loss = log1p(e^-40) = 4.248e-18: a log of the whole sum gives 0
    x = np.array([[40.0, 0.0]])
    got = jitloss.cross_entropy(x, [0])
    assert got == pytest.approx(4.248354255291589e-18, rel=1e-15)
    got32 = jitloss.cross_entropy(x.astype(np.float32), [0])
    assert got32 == pytest.approx(4.248354255291589e-18, rel=1e-6)


def test_non_finite_logits():
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 0.0]])
    loss, g = jitloss.cross_entropy_with_grad(x, [0, 1, 2], reduction="none")
    assert np.isnan(loss[0]) and np.isnan(loss[2]) and np.isfinite(loss[1])
    assert np.isnan(g[0]).all() and np.isnan(g[2]).all() and np.isfinite(g[1]).all()
    # an ignored row's logits do not matter
    loss, g = jitloss.cross_entropy_with_grad(x, [-100, 1, -100], reduction="sum")
    assert np.isfinite(loss)
    np.testing.assert_array_equal(g[0], 0.0)


def test_float16_and_integer_logits():
    x = _rng().standard_normal((4, C)).astype(np.float16)
    t = np.array([0, 1, 2, 3])
    loss, g = jitloss.cross_entropy_with_grad(x, t)
    assert loss.dtype == np.float16 and g.dtype == np.float16
    np.testing.assert_allclose(float(loss), ref.cross_entropy(x, t), rtol=2e-3)
    xi = np.arange(10).reshape(2, 5)
    assert jitloss.cross_entropy(xi, [4, 0]).dtype == np.float64


def test_single_sample_and_scalar_target():
    x = np.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(jitloss.cross_entropy(x, 1), ref.cross_entropy(x, np.array(1)))


def test_inputs_are_never_modified():
    x, t = _case("prob", 1, ignore=False, seed=9)
    x.flags.writeable = False
    t.flags.writeable = False
    keep = x.copy(), t.copy()
    jitloss.cross_entropy_with_grad(x, t, axis=1, weight=WEIGHT, label_smoothing=0.1)
    y = np.array([0, 1, 2, 3, 4, 0])
    y.flags.writeable = False
    x2 = np.ascontiguousarray(_rng().standard_normal((6, C)))
    x2.flags.writeable = False
    jitloss.cross_entropy(x2, y)
    np.testing.assert_array_equal(x, keep[0])
    np.testing.assert_array_equal(t, keep[1])


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_go_through_in_tiles_and_groups(kind, dtype, monkeypatch):
    # Rows of up to TILE_ROW_BYTES run a tile at a time as lanes (cpu/cross_entropy.py,
    # "row tiles"), or, with class indices, from SHORT_CE_GRAD_MIN_BYTES (with the
    # gradient) or SHORT_CE_LOSS_MIN_BYTES (without) up to SHORT_ROW_BYTES as vectors ("short
    # rows as vectors"), longer ones up to GROUP_ROW_BYTES G at a time ("row groups"): every
    # row position of a group and a partial last tile or group, ignored (class indices),
    # non-finite and confident rows, weights, smoothing and z-loss, against the float64
    # reference; the serial and parallel twins and the in-place gradient bitwise the same
    import jitloss.cpu

    rng = _rng(21)
    itemsize = np.dtype(dtype).itemsize
    short = jitloss.cpu.SHORT_ROW_BYTES // itemsize
    for C in (1, 7, 18, 96 // itemsize, jitloss.cpu.TILE_ROW_BYTES // itemsize, short,
              short + 1,
              jitloss.cpu.GROUP_ROW_BYTES // itemsize):
        G = jitloss.cpu.group_rows(1000, C, itemsize)
        N = 3 * G + 5
        x = (rng.standard_normal((N, C)) * 4).astype(dtype)
        y = rng.integers(0, C, N)
        x[2] = -np.inf
        x[G + 3, 0] = np.nan
        x[2 * G - 1, -1] = np.inf
        x[2 * G, :] = -30.0
        x[2 * G, y[2 * G]] = 30.0  # loss about (C - 1) e**-60: kept, not 0
        if kind == "index":
            y[::11] = -100
            t = y
        else:
            t = rng.dirichlet(np.ones(C), N).astype(dtype)
            t[2 * G] = np.eye(C, dtype=dtype)[y[2 * G]]
        kw = dict(weight=np.linspace(0.5, 2, C), label_smoothing=0.05, z_loss=1e-4,
                  reduction="none")
        runs = []
        for parallel_min in (1 << 40, 1):
            monkeypatch.setattr(jitloss.cpu, "PARALLEL_MIN_ELEMENTS", parallel_min)
            x_in_place = x.copy()
            loss_ip, _ = jitloss.cross_entropy_with_grad(x_in_place, t, grad_out=x_in_place,
                                                         **kw)
            runs.append((jitloss.cross_entropy(x, t, **kw),
                         *jitloss.cross_entropy_with_grad(x, t, **kw), loss_ip, x_in_place))
        for got in runs[1:]:
            for a, b in zip(runs[0], got):
                np.testing.assert_array_equal(a, b)
        loss, loss2, grad, loss_ip, grad_ip = runs[0]
        np.testing.assert_array_equal(loss_ip, loss2)
        np.testing.assert_array_equal(grad_ip, grad)
        live = (y != -100) if kind == "index" else np.ones(N, bool)
        bad = ~np.isfinite(x).all(axis=1) & live
        assert np.isnan(loss[bad]).all() and np.isnan(grad[bad]).all()
        assert (loss[~live] == 0).all() and (grad[~live] == 0).all()
        ok = ~bad
        x64, t64 = x[ok].astype(np.float64), t[ok]
        if kind == "prob":
            t64 = t64.astype(np.float64)
        rtol = 2e-6 if dtype == np.float32 else 1e-12
        for got in (loss, loss2):  # the forward sums exp(x - m), the gradient its stored
            # exponentials: from 64 classes on they may differ in the last bit
            np.testing.assert_allclose(got[ok], ref.cross_entropy(x64, t64, **kw), rtol=rtol,
                                       atol=0)
        kw_g = dict(kw, reduction="sum")
        np.testing.assert_allclose(grad[ok], ref.cross_entropy_grad(x64, t64, **kw_g),
                                   rtol=rtol * 10, atol=1e-7 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_as_vectors_do_not_depend_on_the_rows_around_them(kind, dtype):
    # short rows as vectors (from SHORT_CE_GRAD_MIN_BYTES with the gradient,
    # SHORT_CE_LOSS_MIN_BYTES without): a row's loss and gradient have the bits it gets
    # alone, wherever it falls in its group of SHORT_GROUP rows (a row alone takes the same
    # kernel), with a spread beyond NEAR32 (exp_sub) beside narrow rows (exp_near)
    import jitloss.cpu

    rng = _rng(24)
    itemsize = np.dtype(dtype).itemsize
    for C in (jitloss.cpu.SHORT_CE_LOSS_MIN_BYTES // itemsize + 3,
              jitloss.cpu.SHORT_ROW_BYTES // itemsize):
        N = 70
        x = (rng.standard_normal((N, C)) * 3).astype(dtype)
        x[3, 1] = -50.0
        x[8, 0] = np.inf
        if kind == "index":
            t = rng.integers(0, C, N)
            t[5] = -100
        else:
            t = rng.dirichlet(np.ones(C), N).astype(dtype)
        kw = dict(weight=np.linspace(0.5, 2, C), label_smoothing=0.05, z_loss=1e-4,
                  reduction="none")
        loss, grad = jitloss.cross_entropy_with_grad(x, t, dloss=np.linspace(1.0, 2.0, N),
                                                     **kw)
        loss_only = jitloss.cross_entropy(x, t, **kw)
        for i in (0, 3, 5, 8, 40, 63, 64, 69):
            one = slice(i, i + 1)
            l1, g1 = jitloss.cross_entropy_with_grad(x[one], t[one],
                                                     dloss=np.linspace(1.0, 2.0, N)[one], **kw)
            np.testing.assert_array_equal(l1, loss[one])
            np.testing.assert_array_equal(g1, grad[one])
            np.testing.assert_array_equal(jitloss.cross_entropy(x[one], t[one], **kw),
                                          loss_only[one])


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_in_tiles_have_the_bits_of_their_lanes(kind, dtype, monkeypatch):
    # the rows of a tile are the lanes of the lane kernels: the same bits as the samples
    # taken along axis 1 of the (1, C, N) array, in tiles of 128 rows and a partial one
    # (rows tile up to SHORT_CE_GRAD_MIN_BYTES with the gradient, up to
    # SHORT_CE_LOSS_MIN_BYTES without, and take longer rows as vectors)
    import jitloss.cpu

    monkeypatch.setattr(jitloss.cpu, "tile_width_for", lambda x2: 128)
    rng = _rng(22)
    itemsize = np.dtype(dtype).itemsize
    for most in (jitloss.cpu.SHORT_CE_GRAD_MIN_BYTES, jitloss.cpu.SHORT_CE_LOSS_MIN_BYTES):
        C = most // itemsize - 3
        N = 2 * 128 + 9
        x = rng.standard_normal((N, C)).astype(dtype)
        y = rng.integers(0, C, N)
        y[::13] = -100
        if kind == "index":
            t, t_lanes = y, y[None]
        else:
            t = rng.dirichlet(np.ones(C), N).astype(dtype)
            t_lanes = np.ascontiguousarray(t.T)[None]
        x_lanes = np.ascontiguousarray(x.T)[None]
        kw = dict(weight=np.linspace(0.5, 2, C), label_smoothing=0.05, z_loss=1e-4,
                  reduction="none")
        if most == jitloss.cpu.SHORT_CE_GRAD_MIN_BYTES:
            loss, grad = jitloss.cross_entropy_with_grad(x, t, **kw)
            loss_l, grad_l = jitloss.cross_entropy_with_grad(x_lanes, t_lanes, axis=1, **kw)
            np.testing.assert_array_equal(loss, loss_l[0])
            np.testing.assert_array_equal(grad, grad_l[0].T)
        np.testing.assert_array_equal(jitloss.cross_entropy(x, t, **kw),
                                      jitloss.cross_entropy(x_lanes, t_lanes, axis=1, **kw)[0])


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_lane_results_do_not_depend_on_the_lane_width(kind, monkeypatch):
    # Bug: a float32 block of lanes took the cheaper exp_near only if all its lanes could, so
    # a sample's bits depended on the samples that shared its block, and so on the block
    # width, which now follows the thread count.  Samples of spread 70 among narrow ones,
    # and non-finite ones, at widths 64, 128, 512 and the whole row: the same bits
    rng = _rng(23)
    x = (rng.standard_normal((2, 30, 700)) * 3).astype(np.float32)
    x[:, 0, 100:600:3] = 70.0
    x[1, :, 5] = -np.inf
    x[0, 3, 400], x[0, 4, 401] = np.nan, np.inf
    if kind == "index":
        t = rng.integers(0, 30, (2, 700))
        t[:, ::11] = -100
    else:
        t = rng.dirichlet(np.ones(30), (2, 700)).transpose(0, 2, 1).astype(np.float32)
    kw = dict(axis=1, label_smoothing=0.05, z_loss=1e-4, reduction="none")
    got = []
    for width in (64, 128, 512, 700):
        monkeypatch.setattr(jitloss.cpu.cross_entropy, "lane_width_for", lambda a3, w=width: w)
        got.append([*jitloss.cross_entropy_with_grad(x, t, **kw),
                    jitloss.cross_entropy(x, t, **kw)])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)
    fine = np.isfinite(x).all(axis=1)
    want = ref.cross_entropy_per_sample(x, t, axis=1, label_smoothing=0.05, z_loss=1e-4)[0]
    np.testing.assert_allclose(got[0][0][fine], want[fine], rtol=2e-5)
    assert np.isnan(got[0][0][~fine & (t != -100 if kind == "index" else True)]).all()


def test_bitwise_identical_across_thread_counts():
    import numba

    rng = _rng(10)
    x = rng.standard_normal((200, 1000)).astype(np.float32)
    t = rng.integers(0, 1000, 200)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = jitloss.cross_entropy_with_grad(x, t, label_smoothing=0.1)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = jitloss.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    finally:
        numba.set_num_threads(before)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, pos", [(5, (2,)), (-1, (2,)), (7, (2,))])
def test_out_of_range_label_is_named_with_its_position(bad, pos):
    x = np.zeros((4, C))
    t = np.array([0, 1, bad, 3])
    with pytest.raises(ValueError, match=rf"label {bad}.*position {pos}".replace("(", r"\(")
                       .replace(")", r"\)")):
        jitloss.cross_entropy(x, t)
    with pytest.raises(ValueError, match="target"):
        jitloss.cross_entropy_with_grad(x, t)


def test_float_targets_of_the_index_shape():
    with pytest.raises(TypeError, match="target"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4))


def test_index_targets_of_the_wrong_shape():
    with pytest.raises(ValueError, match="target"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(3, np.int64))


def test_weight_of_the_wrong_length():
    with pytest.raises(ValueError, match="weight"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), weight=np.ones(C + 1))


@pytest.mark.parametrize("eps", [-0.1, 1.5, np.nan])
def test_label_smoothing_outside_unit_interval(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), label_smoothing=eps)


def test_negative_z_loss():
    with pytest.raises(ValueError, match="z_loss"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), z_loss=-1.0)


def test_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), reduction="avg")


def test_probabilities_with_explicit_ignore_index():
    with pytest.raises(ValueError, match="ignore_index"):
        jitloss.cross_entropy(np.zeros((4, C)), np.full((4, C), 0.2), ignore_index=0)


def test_grad_out_of_wrong_shape_or_dtype():
    x = np.zeros((4, C))
    t = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="grad_out"):
        jitloss.cross_entropy_with_grad(x, t, grad_out=np.empty((C, 4)))
    with pytest.raises(TypeError, match="grad_out"):
        jitloss.cross_entropy_with_grad(x, t, grad_out=np.empty((4, C), np.float32))


def test_dloss_of_wrong_shape():
    x = np.zeros((4, C))
    t = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="dloss"):
        jitloss.cross_entropy_with_grad(x, t, dloss=np.ones(4))
    with pytest.raises(ValueError, match="dloss"):
        jitloss.cross_entropy_with_grad(x, t, reduction="none", dloss=np.ones(3))


def test_class_axis_must_be_one_int():
    with pytest.raises(TypeError, match="axis"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), axis=(0, 1))
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        jitloss.cross_entropy(np.zeros((4, C)), np.zeros(4, np.int64), axis=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 14), (700, 30)])
@pytest.mark.parametrize("red", ["mean", "sum"])
def test_small_call_shortcut_matches_reference_and_general_path(dtype, shape, red):
    # (N, C) C-contiguous logits with int64 labels, no weight, smoothing or z-loss take one
    # compiled call; int32 labels take the general path, whose bits it must give
    x = _rng(7).standard_normal(shape).astype(dtype)
    y = _rng(8).integers(0, shape[1], shape[0])
    y[-1] = -100
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    loss = jitloss.cross_entropy(x, y, reduction=red)
    assert type(loss) is dtype
    if shape[0] > 1:
        np.testing.assert_allclose(loss, ref.cross_entropy(x, y, reduction=red), rtol=rtol)
    np.testing.assert_array_equal(loss, jitloss.cross_entropy(x, y.astype(np.int32),
                                                              reduction=red))
    loss_g, g = jitloss.cross_entropy_with_grad(x, y, reduction=red)
    np.testing.assert_array_equal(loss_g, loss)
    assert g.dtype == dtype and g.shape == shape
    np.testing.assert_allclose(g, ref.cross_entropy_grad(x, y, reduction=red), rtol=rtol,
                               atol=rtol * 1e-2)
    loss_b, g_b = jitloss.cross_entropy_with_grad(x, y.astype(np.int32), reduction=red)
    np.testing.assert_array_equal(loss_b, loss)
    np.testing.assert_array_equal(g, g_b)
    x2 = x.copy()
    _, g2 = jitloss.cross_entropy_with_grad(x2, y, reduction=red, grad_out=x2)
    assert g2 is x2
    np.testing.assert_array_equal(x2, g)
    g3 = np.full_like(x, np.nan)
    _, g3_ret = jitloss.cross_entropy_with_grad(x, y, reduction=red, grad_out=g3)
    assert g3_ret is g3
    np.testing.assert_array_equal(g3, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 14), (700, 30), (40, 300)])
@pytest.mark.parametrize("red", ["mean", "sum"])
def test_small_probability_call_matches_reference_and_general_path(dtype, shape, red):
    # (N, C) C-contiguous logits with probability targets of their dtype take one compiled
    # call; an F-ordered target takes the general path, whose bits it must give
    rng = _rng(11)
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
    general = dict(reduction=red)
    tf = np.asfortranarray(t)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    loss = jitloss.cross_entropy(x, t, reduction=red)
    assert type(loss) is dtype
    np.testing.assert_allclose(loss, ref.cross_entropy(x, t, reduction=red), rtol=rtol)
    np.testing.assert_array_equal(loss, jitloss.cross_entropy(x, tf, **general))
    loss_g, g = jitloss.cross_entropy_with_grad(x, t, reduction=red)
    np.testing.assert_array_equal(loss_g, loss)
    assert g.dtype == dtype and g.shape == shape
    loss_b, g_b = jitloss.cross_entropy_with_grad(x, tf, **general)
    np.testing.assert_array_equal(loss_b, loss)
    np.testing.assert_array_equal(g, g_b)
    np.testing.assert_allclose(g, ref.cross_entropy_grad(x, t, reduction=red), rtol=rtol,
                               atol=rtol * 1e-2)
    x2 = x.copy()
    _, g2 = jitloss.cross_entropy_with_grad(x2, t, reduction=red, grad_out=x2)
    assert g2 is x2
    np.testing.assert_array_equal(x2, g)
    t2 = t.copy()  # grad_out into the target: the general path, which reads a copy
    _, g3 = jitloss.cross_entropy_with_grad(x, t2, reduction=red, grad_out=t2)
    assert g3 is t2
    np.testing.assert_array_equal(t2, g)
    with pytest.raises(ValueError, match="ignore_index=0"):
        jitloss.cross_entropy(x, t, ignore_index=0)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("classes", [14, 300])
def test_gradient_written_over_probability_target_is_right(axis, classes):
    # Bug: grad_out=target (the probabilities) was written through, and the kernels read
    # the target again after writing exponentials over it: wrong gradients (0.02-0.33 off)
    rng = _rng(12)
    x = rng.standard_normal((40, classes))
    t = rng.dirichlet(np.ones(classes), 40)
    if axis == 0:
        x, t = x.T.copy(), t.T.copy()
    kw = dict(axis=axis, label_smoothing=0.1)
    loss, want = jitloss.cross_entropy_with_grad(x, t, **kw)
    t2 = t.copy()
    loss2, g = jitloss.cross_entropy_with_grad(x, t2, grad_out=t2, **kw)
    assert g is t2 and loss2 == loss
    np.testing.assert_array_equal(t2, want)


def test_small_call_shortcut_errors_and_edge_cases():
    x = _rng(9).standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"label 5 at position \(1,\), outside \[0, 5\)"):
        jitloss.cross_entropy(x, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"label -1 at position \(2,\)"):
        jitloss.cross_entropy_with_grad(x, np.array([0, 1, -1]))
    ignored = np.full(3, -100)
    assert np.isnan(jitloss.cross_entropy(x, ignored))
    loss, g = jitloss.cross_entropy_with_grad(x, ignored)
    assert np.isnan(loss) and not g.any()
    assert jitloss.cross_entropy(x, ignored, reduction="sum") == 0.0
    buf = np.concatenate([x.ravel(), np.zeros(5)])
    logits = buf[:15].reshape(3, 5)
    grad_out = buf[5:].reshape(3, 5)  # overlaps the logits shifted by a row
    want = jitloss.cross_entropy_with_grad(logits.copy(), np.array([0, 1, 2]))[1]
    jitloss.cross_entropy_with_grad(logits, np.array([0, 1, 2]), grad_out=grad_out)
    np.testing.assert_array_equal(grad_out, want)
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out"):
        jitloss.cross_entropy_with_grad(frozen, np.array([0, 1, 2]), grad_out=frozen)


def test_non_finite_lanes_beside_near_lanes_float32():
    # classes along axis 1 of (N, C, d): float32 lanes take exp_near, which has no clamp;
    # the lanes with +inf, -inf everywhere or NaN must be NaN and the others exact
    x = np.zeros((2, 3, 40), np.float32)
    x[0, 0, 2] = np.inf
    x[1, :, 5] = -np.inf
    x[0, 1, 7] = np.nan
    bad = np.zeros((2, 40), bool)
    bad[0, 2] = bad[1, 5] = bad[0, 7] = True
    y = np.zeros((2, 40), np.int64)
    for target in (y, np.full_like(x, 1 / 3)):
        loss, g = jitloss.cross_entropy_with_grad(x, target, axis=1, reduction="none")
        np.testing.assert_array_equal(np.isnan(loss), bad)
        np.testing.assert_array_equal(np.isnan(g).all(axis=1), bad)
        assert np.isfinite(g.transpose(0, 2, 1)[~bad]).all()
        np.testing.assert_allclose(loss[~bad], np.log(3), rtol=1e-6)
    np.testing.assert_array_equal(
        np.isnan(jitloss.cross_entropy(x, y, axis=1, reduction="none")), bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [511, 512, 1000])
def test_fused_gradient_rows_sums_either_side_of_two(dtype, classes):
    # rows of >= FUSE_CLASSES classes sum their exponentials as they store them and take
    # (S - 1, 1) for a sum S >= 2; below 2 they sum the stored row again.  Rows on both
    # sides (confident ones, ties at the maximum, the target at the maximum or not), serial
    # (8 rows) and parallel (80 rows), in place bitwise equal to allocated, against float64
    rng = _rng(classes)
    for n in (8, 80):
        x = rng.standard_normal((n, classes))
        x[: n // 2] *= 12.0  # mostly S < 2
        x[1, :3] = x[1].max() + 1.0  # three ties at the maximum
        x = x.astype(dtype)
        y = rng.integers(0, classes, n)
        y[0] = int(np.argmax(x[0]))  # the target holds the maximum: 1 - p_y keeps its digits
        y[1] = 0
        loss, g = jitloss.cross_entropy_with_grad(x, y, reduction="sum")
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, ref.cross_entropy(x, y, reduction="sum"), rtol=rtol)
        want = ref.cross_entropy_grad(x, y, reduction="sum")
        np.testing.assert_allclose(g, want, rtol=rtol, atol=rtol * 1e-3)
        x2 = x.copy()
        loss2, g2 = jitloss.cross_entropy_with_grad(x2, y, reduction="sum", grad_out=x2)
        assert g2 is x2
        np.testing.assert_array_equal(g2, g)
        np.testing.assert_array_equal(loss2, loss)
        t = rng.dirichlet(np.full(classes, 0.1), n).astype(dtype)  # probability targets
        loss, g = jitloss.cross_entropy_with_grad(x, t, reduction="sum")
        np.testing.assert_allclose(loss, ref.cross_entropy(x, t, reduction="sum"), rtol=rtol)
        np.testing.assert_allclose(g, ref.cross_entropy_grad(x, t, reduction="sum"),
                                   rtol=rtol, atol=rtol * 1e-3)
        x2 = x.copy()
        np.testing.assert_array_equal(
            jitloss.cross_entropy_with_grad(x2, t, reduction="sum", grad_out=x2)[1], g)
