"""The shared CPU helpers: exp accuracy against mpmath, and that the hot loops vectorise."""

from __future__ import annotations

import re

import ast
import pathlib

import mpmath
import numba
import numpy as np
import pytest
from numba import njit

from jitloss.cpu import _math
from jitloss.cpu._math import exp, exp_sub
from tests import reference as ref


@njit
def _vexp(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit
def _vexp_sub(x, m, s, out):
    for i in range(x.shape[0]):
        out[i] = exp_sub(x[i], m, s)


RANGES = {np.float32: (-110.0, 92.0), np.float64: (-750.0, 712.0)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_within_2_ulp_over_the_whole_range(dtype):
    lo, hi = RANGES[dtype]
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(lo, hi, 1500), rng.normal(0, 2, 500)]).astype(dtype)
    out = np.empty_like(x)
    _vexp(x, out)
    finite = np.abs(x.astype(np.float64)) < np.log(np.finfo(dtype).max)
    worst = max(ref.ulp_error(o, mpmath.exp(mpmath.mpf(float(v))), dtype)
                for o, v in zip(out[finite], x[finite]))
    assert worst <= 2, worst


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    lo, hi = RANGES[dtype]
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, lo, hi], dtype)
    out = np.empty_like(x)
    _vexp(x, out)
    assert out[0] == np.inf and out[1] == 0 and np.isnan(out[2])
    assert out[3] == 1 and out[4] == 1
    assert out[5] == 0  # underflows to zero
    assert out[6] == np.inf  # overflows to +inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0, 0.37])
def test_exp_sub_exact_difference_within_2_ulp(dtype, temperature):
    # x - m is taken exactly, and 1/T carried as a pair, however far x lies below m
    from jitloss._args import check_temperature

    lo = RANGES[dtype][0]
    rng = np.random.default_rng(1)
    m = dtype(37.25) if dtype == np.float32 else dtype(300.5)
    x = (m - np.abs(rng.uniform(0, -lo * temperature, 1500))).astype(dtype)
    x = np.concatenate([x, [m, -np.inf]]).astype(dtype)
    out = np.empty_like(x)
    _vexp_sub(x, m, check_temperature(temperature), out)
    t = mpmath.mpf(temperature)
    worst = max(ref.ulp_error(o, mpmath.exp((mpmath.mpf(float(v)) - mpmath.mpf(float(m))) / t),
                              dtype)
                for o, v in zip(out[:-1], x[:-1]))
    assert worst <= 2, worst
    assert out[-2] == 1.0 and out[-1] == 0.0


def test_exp_sub_with_huge_max_does_not_clamp_distant_values():
    # bug: clamping x at m + LO rounded to m for m = 1e300, so exp(-2e300) came out as 1
    x = np.array([1e300, -1e300])
    out = np.empty(2)
    _vexp_sub(x, 1e300, (1.0, 0.0), out)
    np.testing.assert_array_equal(out, [1.0, 0.0])


@njit
def _vexp_near(x, m, out):
    for i in range(x.shape[0]):
        out[i] = _math.exp_near(x[i], m)


def test_exp_near_within_one_ulp_and_its_rounding_of_the_difference():
    # float32, spread below NEAR32: the difference is rounded once (at most 2**-20)
    rng = np.random.default_rng(2)
    m = np.float32(3.7)
    x = (m - rng.uniform(0, _math.NEAR32, 2000)).astype(np.float32)
    out = np.empty_like(x)
    _vexp_near(x, m, out)
    exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)) - mpmath.mpf(float(m)))) for v in x])
    rel = np.abs(out - exact) / exact
    assert rel.max() <= 2.0**-20 + 2 * 2.0**-24


def test_near_path_only_for_float32_at_temperature_one():
    @njit
    def ok(m, low, s):
        return _math.near_ok(m, low, s)

    f32 = np.float32
    assert ok(f32(1.0), f32(-20.0), (1.0, 0.0))
    assert not ok(f32(1.0), f32(-40.0), (1.0, 0.0))  # spread too wide
    assert not ok(f32(1.0), f32(0.0), (0.5, 0.0))  # a temperature
    assert not ok(1.0, 0.0, (1.0, 0.0))  # float64 always exact


@njit
def _vlog1p(u, out):
    _math.wide_vectors()
    for i in range(u.shape[0]):
        out[i] = _math.log1p(u[i])


def test_log1p_within_one_ulp():
    # every binade from subnormal to huge, the reduction's boundaries (a = 1 + u near
    # sqrt(2) * 2**k), where 1 + u rounds to 1 (u below 2**-53: the correction term carries
    # all of it), and (-1, 0)
    rng = np.random.default_rng(0)
    bounds = np.sqrt(2.0) * 2.0 ** np.arange(-1, 60) - 1
    u = np.concatenate([
        10.0 ** rng.uniform(-320, 308, 1500),
        10.0 ** rng.uniform(-20, 2, 1500),
        rng.uniform(0, 3, 1000),
        (bounds[:, None] * (1 + rng.uniform(-1e-12, 1e-12, (1, 8)))).ravel(),
        [0.0, 5e-324, 2.0**-54, 2.0**-53, 2.0**-52, 1.0, 2.0, 1.7976931348623157e308],
        -rng.uniform(0, 1, 500),
        [-0.5, -0.9999999999999999, np.sqrt(0.5) - 1],
    ])
    out = np.empty_like(u)
    _vlog1p(u, out)
    worst = max(ref.ulp_error(o, mpmath.log1p(mpmath.mpf(float(v))), np.float64)
                for o, v in zip(out, u))
    assert worst <= 1, worst


def test_log1p_special_values():
    u = np.array([np.inf, np.nan, -1.0, -2.0, -np.inf, 0.0, -0.0])
    out = np.empty_like(u)
    _vlog1p(u, out)
    assert out[0] == np.inf and np.isnan(out[1]) and out[2] == -np.inf
    assert np.isnan(out[3]) and np.isnan(out[4]) and out[5] == 0 and out[6] == 0


def test_ln2_split_constants():
    assert float(_math._LN2_HI64) + float(_math._LN2_LO64) == pytest.approx(np.log(2), abs=1e-25)
    hi32 = mpmath.mpf(float(_math._LN2_HI32)) + mpmath.mpf(float(_math._LN2_LO32))
    assert abs(hi32 - mpmath.log(2)) < 1e-13
    # n * LN2_HI exact for |n| <= 150 (float32) and 1076 (float64)
    for n in range(-150, 151):
        assert float(np.float32(n) * _math._LN2_HI32) == n * float(_math._LN2_HI32)


def _widest(ir, elem):
    """The widest vector of ``elem`` (float, double) in LLVM IR, 0 if none."""
    return max((int(n) for n in re.findall(r"<(\d+) x " + elem + ">", ir)), default=0)


def _fresh_llvm(fn, *args):
    """LLVM IR of fn compiled now (cached kernels cannot be inspected)."""
    f = njit(fastmath=_math._REDUCE)(fn.py_func)
    f(*args)
    return next(iter(f.inspect_llvm().values()))


@pytest.mark.parametrize(
    "name, make_args",
    [
        ("row_range", lambda x: (x, 0)),
        ("row_exp_sum", lambda x: (x, 0, x.dtype.type(3), (1.0, 0.0), np.empty_like(x), 0, False)),
        ("row_exp_sum", lambda x: (x, 0, x.dtype.type(3), (1.0, 0.0), np.empty_like(x), 0, True)),
        ("row_sumexp", lambda x: (x, 0, x.dtype.type(3), (1.0, 0.0), False)),
        ("row_sumexp", lambda x: (x, 0, x.dtype.type(3), (1.0, 0.0), True)),
        ("row_lse_parts", lambda x: (np.ones((2, _math.ONLINE_ROW_BYTES // x.itemsize + 100),
                                             x.dtype), 0, (1.0, 0.0))),  # the online path
        ("row_sum", lambda x: (x, 0)),
        ("row_dot", lambda x: (x, x, 0)),
        ("lanes_exp", lambda x: (x.reshape(2, 10, 100), 0, np.uint64(0),
                                 np.zeros(100, x.dtype), (1.0, 0.0), np.empty((1, 10, 100),
                                                                             x.dtype),
                                 (_math.NEAR_ALL, np.ones(100, x.dtype)), False)),
        # in place: the copy on the stack must not cost the loop its vectors
        ("_lane_exp_aside", lambda x: (x.reshape(2, 10, 100), 0, 1, np.uint64(0),
                                       np.zeros(100, x.dtype), (1.0, 0.0),
                                       x.reshape(2, 10, 100), True)),
        # a block of lanes that mix exp_near and exp_sub: both, one selected
        ("_lane_exp_mixed", lambda x: (x.reshape(2, 10, 100), 0, 1, np.uint64(0),
                                       np.zeros(100, x.dtype), (1.0, 0.0),
                                       np.empty((2, 10, 100), x.dtype), np.ones(100, x.dtype),
                                       np.zeros(100, x.dtype))),
    ],
)
def test_hot_loops_vectorise(name, make_args):
    # pip's numba has no SVML: the row primitives must still become float32 vectors of at
    # least 8 / float64 of at least 4 (AVX2 and up; narrower machines get narrower vectors).
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx2", False):
        pytest.skip("needs an AVX2 machine to look for 256-bit vectors")
    fn = getattr(_math, name)
    ir32 = _fresh_llvm(fn, *make_args(np.ones((2, 1000), np.float32)))
    ir64 = _fresh_llvm(fn, *make_args(np.ones((2, 1000), np.float64)))
    # at least 256-bit vectors: <8 x float> on AVX2; 512-bit ones wherever the CPU has
    # AVX-512, Intel's included (wide_vectors), unless numba is told to target another CPU
    wide = features.get("avx512f", False) and numba.config.CPU_NAME is None
    assert _widest(ir32, "float") >= (16 if wide else 8)
    assert _widest(ir64, "double") >= (8 if wide else 4)
    assert "call double @exp" not in ir64 and "call float @expf" not in ir32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (5, 3), (7, 16), (16, 7), (8, 8),
                                        (16, 16)])
def test_transpose_block_writes_its_block_and_nothing_else(dtype, rows, cols):
    # a rows x cols block (at most 64 bytes a side) of a strided source, transposed into a
    # strided destination: the masked loads and stores must touch nothing past the block
    W = 64 // np.dtype(dtype).itemsize
    rows, cols = min(rows, W), min(cols, W)

    @njit
    def move(src, s0, s_step, dst, d0, d_step, r, c):
        _math.transpose_block(src, s0, s_step, dst, d0, d_step, r, c)

    src = _rng_values(dtype, 400)
    dst = np.full(500, -7.0, dtype)
    s0, s_step, d0, d_step = 13, 21, 29, 19
    move(src, s0, s_step, dst, d0, d_step, rows, cols)
    want = np.full(500, -7.0, dtype)
    for k in range(rows):
        for c in range(cols):
            want[d0 + c * d_step + k] = src[s0 + k * s_step + c]
    np.testing.assert_array_equal(dst, want)
    # the last elements of an array: a full-width load there would read past its end
    tail = _rng_values(dtype, 2 * W)
    out = np.zeros((W, 2), dtype)
    move(tail, 2 * W - 2, 1, out, 0, 2, 1, 2)
    np.testing.assert_array_equal(out[:2, 0], tail[-2:])


def _rng_values(dtype, n):
    return np.random.default_rng(n).standard_normal(n).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_tiles_transpose_with_vector_shuffles(dtype):
    # rows_to_lanes moves short rows into a tile with masked vector loads and stores and
    # shuffles; a loop of scalar copies took 5x the time
    x = np.ones((40, 10), dtype)
    ir = _fresh_llvm(_math.rows_to_lanes, x, 0, np.empty((1, 10, 40), dtype))
    assert "shufflevector" in ir and "llvm.masked.load" in ir and "llvm.masked.store" in ir


def test_lanes_log1p_vectorises():
    # the per-sample log of a lane block: a libm call per sample took most of a 21-class
    # cross-entropy along axis 1 (pip's numba has no SVML)
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx2", False):
        pytest.skip("needs an AVX2 machine to look for 256-bit vectors")
    ir = _fresh_llvm(_math.lanes_log1p, np.ones(100), np.ones(100))
    wide = features.get("avx512f", False) and numba.config.CPU_NAME is None
    assert _widest(ir, "double") >= (8 if wide else 4)
    assert "@log1p" not in ir


def _lane_row_cases():
    from jitloss.cpu import cross_entropy as ce
    from jitloss.cpu import softmax as sm

    f32 = np.float32
    x3 = np.ones((1, 4, 64), f32)
    v = np.ones(64, f32)
    u0 = np.uint64(0)
    s = (1.0, 0.0)
    return [
        (_math._lane_exp, (x3, 0, 1, u0, v, s, np.empty_like(x3), True)),
        (_math._lane_exp_aside, (x3, 0, 1, u0, v, s, np.empty_like(x3), False)),
        (_math._lane_exp_sum, (x3, 0, 1, u0, v, s, np.empty_like(x3), False, v.copy())),
        (_math._lane_exp_mixed, (x3, 0, 1, u0, v, s, np.empty_like(x3), v, v.copy())),
        (_math._lane_exp_sum_aside, (x3, 0, 1, u0, v, s, np.empty_like(x3), True, v.copy())),
        (_math._lane_terms_mixed, (x3, 0, 1, u0, v, s, v, v.copy(), v.copy())),
        (_math._dot_tile, (x3, x3, 0, 1, 3, u0, v.copy())),
        (_math.row_dot_block, (x3[0], x3[0], 1)),
        (_math.row_sum_block, (x3[0], 1)),
        (_math._sum_tile, (x3, 0, 0, 2, u0, v.copy())),
        (sm._log_softmax_backward_lane_tile, (x3, x3, np.empty_like(x3), 0, 1, 3, u0, v,
                                              f32(1.0))),
        (_math._range_tile, (x3, 0, 1, 2, u0, v.copy(), v.copy())),
        (_math._terms_tile, (x3, 0, 0, 3, u0, v, s, True, v.copy(), v.copy())),
        (_math._exp_store_tile, (x3, 0, 0, 4, u0, v, s, False, np.empty_like(x3), v.copy())),
        (_math._online_tile, (x3, 0, 0, 3, u0, v, True, s, v.copy(), 1, 2, v.copy(), v.copy())),
        (_math._online_tile_mixed, (x3, 0, 0, 3, u0, v, v, s, v.copy(), 1, 2, v.copy(),
                                    v.copy())),
        (_math._online_next, (x3, v.copy(), v.copy(), v.copy(), v.copy(), s, np.zeros(64),
                              v.copy(), v.copy())),
        (_math._exp_scale_tile, (x3, 0, 1, 3, u0, v, s, False, v, np.empty_like(x3))),
        (_math._scale_tile, (np.ones_like(x3), 0, 1, 3, u0, v)),
        (sm._log_softmax_lane_tile, (x3, np.empty_like(x3), 0, 0, 4, u0, v, f32(1.0), v)),
        (ce._lane_gap_row, (x3, 0, 1, u0, v, f32(1.0), np.zeros(64))),
        (ce._lane_target_row, (x3, x3, 0, 1, u0, v, f32(1.0), f32(1.0), f32(0.0), v.copy(),
                               v.copy())),
        (ce._index_grad_lane_row, (np.ones_like(x3), 0, 1, u0, v, v, f32(1.0),
                                   np.ones(64, np.bool_), f32(0.0))),
        (ce._prob_grad_lane_row, (np.ones_like(x3), x3, 0, 1, u0, v, f32(1.0), v, v)),
    ]


@pytest.mark.parametrize("fn, args", _lane_row_cases(),
                         ids=lambda v: v.py_func.__name__ if hasattr(v, "py_func") else "")
def test_lane_row_helpers_count_no_references(fn, args):
    # Bug: the lane helpers, called once per class row, each updated the reference counts of
    # their array arguments (atomics that two threads fought over), because a division by a
    # run-time value (_LINE // itemsize, _LO32 / s) was a path that could raise, and numba
    # only prunes the counts of a function that cannot.  Compiled afresh, a helper must hold
    # no NRT_incref of its own.
    f = njit(fastmath=_math._REDUCE)(fn.py_func)
    f(*args)
    ir = next(iter(f.inspect_llvm().values()))
    name = fn.py_func.__name__
    own = re.search(r"define [^\n]*" + str(len(name)) + name + r"B[^\n]*\{(.*?)\n\}", ir, re.S)
    assert own is not None
    assert "@NRT_incref" not in own.group(1)


@njit
def _double_through_view(a, s):
    v = _math.borrowed(a)
    k = _math.borrowed(s)  # not an array: passed through
    for j in range(v.shape[0]):
        v[j] *= k[0]


def test_borrowed_view_writes_through_and_keeps_counts():
    import sys

    a = np.arange(5.0)
    before = sys.getrefcount(a)
    for _ in range(1000):
        _double_through_view(a, (2.0, 0.0))
    assert sys.getrefcount(a) == before
    assert np.array_equal(a, np.arange(5.0) * 2.0**1000)


def test_serial_kernels_leave_reference_counts_alone():
    # The serial twins call their row functions with borrowed views of their arguments
    # (no count updates per row); the arrays a caller holds must end with the counts they
    # started with, whatever path ran (rows, groups, lanes, small calls).
    import sys

    import jitloss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 7)).astype(np.float32)
    x3 = rng.standard_normal((3, 7, 5)).astype(np.float32)
    y = rng.integers(0, 7, 40)
    p = jitloss.softmax(x)
    out = np.empty_like(x)
    held = (x, x3, y, p, out)
    before = [sys.getrefcount(a) for a in held]
    for _ in range(50):
        jitloss.softmax(x, out=out)
        jitloss.log_softmax(x)
        jitloss.logsumexp(x, axis=-1)
        jitloss.softmax(x3, axis=1)
        jitloss.softmax_backward(p, x, out=out)
        jitloss.cross_entropy_with_grad(x, y)
        jitloss.cross_entropy_with_grad(x, p)
        jitloss.cross_entropy(x3, y[:15].reshape(3, 5), axis=1)
        jitloss.multi_margin_loss_with_grad(x, y)
        jitloss.multiclass_hinge_loss_with_grad(x, y)
        jitloss.max_margin_loss_with_grad(x)
    assert [sys.getrefcount(a) for a in held] == before


def test_wide_vectors_marks_the_calling_function():
    # the hint is a function attribute (clang's -mprefer-vector-width=512); it must reach
    # the LLVM IR of the function that calls it, and not change what the function computes
    @njit
    def f(x):
        _math.wide_vectors()
        return x + 1.0

    assert f(1.0) == 2.0
    ir = next(iter(f.inspect_llvm().values()))
    assert _math.PREFER_VECTOR_WIDTH in ir


def _njit_functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if isinstance(target, ast.Name) and target.id == "njit":
                    yield node


def _calls_wide_vectors(stmts):
    body = stmts
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    first = body[0] if body else None
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
            and getattr(first.value.func, "id", None) == "wide_vectors")


def test_every_loop_asks_for_wide_vectors():
    # A loop is vectorised in the function whose source holds it, before any inlining, and
    # numba compiles a prange body as a function of its own: a function without the hint
    # gets 256-bit vectors on Intel's AVX-512 CPUs (10-25% slower kernels on emeraldrapids).
    cpu = pathlib.Path(_math.__file__).parent
    missing = []
    for path in sorted(cpu.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in _njit_functions(tree):
            loops = [n for n in ast.walk(fn) if isinstance(n, (ast.For, ast.While))]
            vectorisable = [n for n in loops if not any(
                isinstance(m, (ast.Return, ast.Break)) for m in ast.walk(n))]
            if vectorisable and not _calls_wide_vectors(fn.body):
                missing.append(f"{path.name}:{fn.name}")
            for n in loops:
                if (isinstance(n, ast.For) and isinstance(n.iter, ast.Call)
                        and getattr(n.iter.func, "id", None) == "prange"
                        and not _calls_wide_vectors(n.body)):
                    missing.append(f"{path.name}:{fn.name} (prange body)")
    assert not missing


def test_loss_sums_have_numpys_bits():
    # reduce_losses adds short per-sample loss arrays in pairwise_sum instead of
    # np.add.reduce (1 us less per small call): same order, so the same bits as NumPy,
    # across the eight-sum blocks (n >= 8), the halving (n > 128) and the stack of spans
    rng = np.random.default_rng(0)
    sizes = list(range(0, 300)) + [1000, 4096, 4097, 70001]
    for n in sizes:
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        assert _math.pairwise_sum(a) == np.add.reduce(a), n
    assert str(_math.pairwise_sum(np.array([-0.0]))) == "0.0"  # 0.0 + the sum, as NumPy


def test_mean_loss_of_many_samples_matches_numpy_sum():
    # above 4096 samples reduce_losses hands the sum back to NumPy: the same value either side
    import jitloss

    rng = np.random.default_rng(1)
    for n in (4096, 4097):
        x = rng.standard_normal((n, 3))
        y = rng.integers(0, 3, n)
        per = jitloss.cross_entropy(x, y, reduction="none")
        assert jitloss.cross_entropy(x, y, reduction="sum") == np.add.reduce(per)


def test_apart_agrees_with_numpy_on_contiguous_pieces_of_one_buffer():
    # the small-call kernels' overlap test: C-contiguous pieces of one buffer, of two
    # dtypes (labels under a float64 gradient), empty pieces included
    rng = np.random.default_rng(0)
    buf = np.zeros(64)
    for _ in range(300):
        a0, b0 = rng.integers(0, 40, 2)
        na, nb = rng.integers(0, 24, 2)
        a = buf[a0:a0 + na]
        b = buf[b0:b0 + nb].view(np.int64) if rng.random() < 0.5 else buf[b0:b0 + nb]
        assert _math.apart(a, b) == (not np.shares_memory(a, b)), (a0, na, b0, nb)
    assert _math.apart(np.zeros(3), np.zeros(3))


def test_short_row_intrinsics_take_c_contiguous_rows_only():
    # the short-row intrinsics address row i at i * classes: a strided array must fail to
    # type (the launchers pass C-contiguous rows), not read or write the wrong memory
    from numba import njit
    from numba.core.errors import TypingError

    from jitloss.cpu._math import short_chunks, short_exp_args, short_softmax_row

    @njit
    def row0(x2, out2):
        short_softmax_row(x2, out2, 0, short_exp_args((1.0, 0.0), x2),
                          short_chunks(x2.shape[1], x2.itemsize))

    x = np.float32([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    out = np.zeros_like(x)
    row0(x, out)
    e = np.exp(x[0].astype(np.float64) - 3.0)
    np.testing.assert_allclose(out[0], e / e.sum(), rtol=2e-6)
    assert (out[1] == 0).all()  # row 0 only
    with pytest.raises(TypingError):
        row0(x, np.zeros((2, 8), np.float32)[:, ::2])
