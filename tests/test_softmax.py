"""Tests of the softmax family on the CPU against independent float64 references."""

from __future__ import annotations

import threading

import hypothesis.extra.numpy as hnp
import mpmath
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitloss
import jitloss.cpu
from tests import reference as ref

FORWARD = {
    "softmax": (jitloss.softmax, ref.softmax),
    "log_softmax": (jitloss.log_softmax, ref.log_softmax),
}
DTYPES = [np.float16, np.float32, np.float64]
RTOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-13}


def _rng(seed=0):
    return np.random.default_rng(seed)


def assert_close(got, want, dtype, atol=0.0):
    want = np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(
        got.astype(np.float64), want, rtol=RTOL[np.dtype(dtype).type], atol=atol
    )


# --- the seeds' cases (docstring examples) ---------------------------------------------


def test_seed_huge_magnitudes_softmax_is_one_hot():
    y = jitloss.softmax([2345, 3456, 6543, -6789, -9234])
    np.testing.assert_array_equal(y, [0, 0, 1, 0, 0])
    assert y.dtype == np.float64


def test_seed_log_softmax_of_distant_values_is_finite():
    y = jitloss.log_softmax([1000.0, 1.0])
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [0.0, -999.0], atol=1e-12)


def test_seed_softmax_axis0_columns_sum_to_one():
    x = _rng().standard_normal((5, 7))
    np.testing.assert_allclose(jitloss.softmax(x, axis=0).sum(axis=0), 1.0, rtol=1e-14)


def test_log_softmax_keeps_tiny_log_of_probability_near_one():
    # log(1 / (1 + e^-40)) = -log1p(e^-40) = -4.248354255291589e-18; a log of the whole sum
    # rounds 1 + e^-40 to 1 and returns 0.
    exact = -mpmath.log1p(mpmath.exp(-40))
    got = jitloss.log_softmax([0.0, -40.0])
    assert ref.ulp_error(got[0], exact, np.float64) <= 1
    assert got[0] != 0.0
    lse = jitloss.logsumexp([0.0, -40.0])
    assert lse == pytest.approx(float(mpmath.log1p(mpmath.exp(-40))), rel=1e-15)


# --- agreement with SciPy ---------------------------------------------------------------

AXES_3D = [0, 1, 2, -1, -2, -3, (0, 1), (1, 2), (0, 2), (0, 1, 2), (2, 0), None, ()]


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("axis", AXES_3D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_scipy_every_axis(name, axis, dtype):
    fn, reference = FORWARD[name]
    x = (_rng().standard_normal((3, 4, 5)) * 3).astype(dtype)
    got = fn(x, axis=axis)
    assert got.dtype == dtype
    want = reference(x, axis=axis)
    assert_close(got, want, dtype, atol=1e-7 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("axis", AXES_3D)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_scipy_every_axis(axis, keepdims):
    x = _rng(1).standard_normal((3, 4, 5)) * 5
    got = jitloss.logsumexp(x, axis=axis, keepdims=keepdims)
    want = ref.logsumexp(x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert np.shape(got) == np.shape(want)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_inputs_compute_in_float64(dtype):
    x = _rng().integers(0, 2 if dtype == np.bool_ else 50, size=(4, 6)).astype(dtype)
    for name, (fn, reference) in FORWARD.items():
        got = fn(x)
        assert got.dtype == np.float64, name
        np.testing.assert_allclose(got, reference(x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(jitloss.logsumexp(x), ref.logsumexp(x), rtol=1e-14)


def test_lists_and_scalars_are_accepted():
    np.testing.assert_allclose(jitloss.softmax([[1, 2], [3, 5]]), ref.softmax([[1, 2], [3, 5]]))
    assert jitloss.softmax(3.0, axis=None) == 1.0
    assert jitloss.logsumexp(3.0, axis=None) == 3.0


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: np.asfortranarray(a), id="fortran"),
        pytest.param(lambda a: a[:, ::2, :], id="sliced"),
        pytest.param(lambda a: a[::-1], id="reversed"),
        pytest.param(lambda a: a.transpose(2, 0, 1), id="transposed"),
        pytest.param(lambda a: np.swapaxes(a, 0, 1), id="swapped"),
    ],
)
@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), None])
def test_non_contiguous_layouts(make, axis):
    x = make(_rng(2).standard_normal((6, 8, 10)))
    for name, (fn, reference) in FORWARD.items():
        got = fn(x, axis=axis)
        np.testing.assert_allclose(got, reference(x, axis=axis), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        jitloss.logsumexp(x, axis=axis), ref.logsumexp(x, axis=axis), rtol=1e-13
    )


def test_output_keeps_input_memory_layout():
    x = np.asfortranarray(_rng().standard_normal((7, 9)))
    y = jitloss.softmax(x, axis=0)
    assert y.flags.f_contiguous
    np.testing.assert_allclose(y, ref.softmax(x, axis=0), rtol=1e-14)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (2, 0, 3)])
def test_empty_arrays(shape):
    x = np.zeros(shape)
    assert jitloss.softmax(x).shape == shape
    assert jitloss.log_softmax(x, axis=0).shape == shape
    got = jitloss.logsumexp(x, axis=-1)
    want = ref.logsumexp(x, axis=-1) if x.size or shape[-1] == 0 else np.zeros(shape[:-1])
    np.testing.assert_array_equal(got, want)


def test_logsumexp_of_empty_row_is_minus_inf():
    assert jitloss.logsumexp(np.zeros(0)) == -np.inf


# --- non-finite values (DESIGN.md) -------------------------------------------------------


def test_all_minus_inf_row():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0]])
    assert np.isnan(jitloss.softmax(x)[0]).all()
    assert np.isnan(jitloss.log_softmax(x)[0]).all()
    assert jitloss.logsumexp(x)[0] == -np.inf
    np.testing.assert_allclose(jitloss.softmax(x)[1], ref.softmax(x[1]))


def test_plus_inf_row():
    x = np.array([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]])
    assert np.isnan(jitloss.softmax(x)[0]).all()
    assert np.isnan(jitloss.log_softmax(x)[0]).all()
    assert jitloss.logsumexp(x)[0] == np.inf
    np.testing.assert_allclose(jitloss.log_softmax(x)[1], ref.log_softmax(x[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_row_gives_nan_and_leaves_others_alone(dtype):
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0], [np.inf, np.nan, 1.0]], dtype)
    for fn in (jitloss.softmax, jitloss.log_softmax):
        y = fn(x)
        assert np.isnan(y[0]).all() and np.isnan(y[2]).all()
        assert np.isfinite(y[1]).all()
    lse = jitloss.logsumexp(x)
    assert np.isnan(lse[0]) and np.isnan(lse[2]) and np.isfinite(lse[1])


def test_minus_inf_entries_give_exact_zeros():
    y = jitloss.softmax([-np.inf, 0.0, -np.inf, 0.0])
    np.testing.assert_array_equal(y, [0.0, 0.5, 0.0, 0.5])
    assert jitloss.log_softmax([-np.inf, 0.0])[0] == -np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_along_axis0_lanes(dtype):
    # float32: the other lanes take exp_near, which has no clamp for x - m < -104 and so
    # gives NaN for a finite x below an infinite maximum; those lanes must still be NaN
    x = np.zeros((3, 40), dtype)
    x[:, 1] = -np.inf
    x[0, 2] = np.inf
    x[1, 3] = np.nan
    y = jitloss.softmax(x, axis=0)
    assert np.isnan(y[:, 1:4]).all()
    np.testing.assert_allclose(y[:, 0], 1 / 3, rtol=1e-6)
    logp = jitloss.log_softmax(x, axis=0)
    assert np.isnan(logp[:, 1:4]).all()
    np.testing.assert_allclose(logp[:, 4:], np.log(1 / 3), rtol=1e-6)
    lse = jitloss.logsumexp(x, axis=0)
    assert lse[1] == -np.inf and lse[2] == np.inf and np.isnan(lse[3])
    np.testing.assert_allclose(lse[4:], np.log(3), rtol=1e-6)


# --- accuracy ---------------------------------------------------------------------------

CLASS_COUNTS = [1, 2, 3, 7, 100, 255, 256, 257, 1000, 4097, 65536, 1_000_000]


@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_float32_within_2e6_of_exact_for_any_number_of_classes(classes):
    # "exact" = the float64 softmax of the same float32 input (error ~1e-15 << 2e-6)
    rng = _rng(classes)
    rows = 1 if classes > 10_000 else 3
    x = (rng.standard_normal((rows, classes)) * rng.choice([1.0, 8.0, 30.0])).astype(np.float32)
    x[0, 0] = x[0].max() + 20  # one dominant class, the others far below it
    y = jitloss.softmax(x).astype(np.float64)
    want = ref.softmax(x)
    tiny = 2.0**-148  # subnormal float32 results carry only absolute accuracy
    assert np.all(np.abs(y - want) <= 2e-6 * want + tiny)
    logp = jitloss.log_softmax(x).astype(np.float64)
    wantlog = ref.log_softmax(x)
    assert np.all(np.abs(logp - wantlog) <= 2e-6 * np.abs(wantlog) + 1e-30)
    lse = jitloss.logsumexp(x).astype(np.float64)
    np.testing.assert_allclose(lse, ref.logsumexp(x), rtol=2e-7)




@pytest.mark.parametrize("classes, seed", [(300, 2), (1000, 2), (4097, 0)])
def test_float32_lanes_within_2e6_of_exact(classes, seed):
    # along axis 0 each lane sums its terms one after another (no vector accumulators):
    # 256 such float32 additions before going to float64 gave 2.1e-6 for these inputs
    x = (np.random.default_rng(seed).standard_normal((classes, 256)) * 3).astype(np.float32)
    tiny = 2.0**-148
    want = ref.softmax(x, axis=0)
    y = jitloss.softmax(x, axis=0).astype(np.float64)
    assert np.all(np.abs(y - want) <= 2e-6 * want + tiny)
    wantlog = ref.log_softmax(x, axis=0)
    logp = jitloss.log_softmax(x, axis=0).astype(np.float64)
    assert np.all(np.abs(logp - wantlog) <= 2e-6 * np.abs(wantlog) + 1e-30)
    np.testing.assert_allclose(jitloss.logsumexp(x, axis=0), ref.logsumexp(x, axis=0),
                               rtol=2e-7)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_rows_longer_than_half_of_l2(dtype):
    # rows over ONLINE_ROW_BYTES, which logsumexp reads once (online), are stored and summed
    # by log_softmax as shorter rows are: the same accuracy, including log-probabilities
    # close to 0, and in place
    from jitloss.cpu import _math

    classes = _math.ONLINE_ROW_BYTES // np.dtype(dtype).itemsize + 5
    x = _rng(17).standard_normal((2, classes)).astype(dtype)
    x[1] = -60.0
    x[1, 3] = 0.0  # log p = -log1p((C - 1) e**-60), about -5.7e-22 (float32) / -1.1e-21
    want = ref.log_softmax(x)
    got = jitloss.log_softmax(x)
    assert_close(got, want, dtype, atol=1e-30)
    assert got[1, 3] < 0 and abs(got[1, 3] / want[1, 3] - 1) < RTOL[dtype]
    y = x.copy()
    jitloss.log_softmax(y, out=y)
    np.testing.assert_array_equal(y, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_read_once_online(dtype):
    # rows over ONLINE_ROW_BYTES are read once for their maximum and sums, chunk by chunk,
    # the sums so far rescaled whenever a chunk raises the maximum (logsumexp and
    # cross-entropy; log_softmax stores its exponentials and must agree with them)
    from jitloss.cpu import _math

    C = _math.ONLINE_ROW_BYTES // np.dtype(dtype).itemsize + 3 * _math.ONLINE_CHUNK + 7
    x = _rng(23).standard_normal((9, C)).astype(dtype) * 4
    x[0] = np.linspace(-30, 30, C)  # the maximum grows in every chunk
    x[1] = np.linspace(30, -30, C)  # ... in none after the first
    x[2, -1] = 80.0  # one dominant class, in the last (partial) chunk: log p near 0
    x[3, : 2 * _math.ONLINE_CHUNK] = -np.inf  # chunks that add nothing, then finite ones
    x[4, C // 2] = 9.0
    x[4, C // 2 + 1] = 9.0  # two tied maxima
    x[5, -3] = np.nan  # NaN late in the row, after the maximum
    x[6, 5] = np.inf
    x[6, -2] = np.nan  # +inf, then NaN: NaN
    x[7] = -np.inf
    x[8, 10] = np.inf  # +inf alone
    want_lse = ref.logsumexp(x)
    got_lse = jitloss.logsumexp(x)
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(got_lse[fin], want_lse[fin], rtol=RTOL[dtype])
    np.testing.assert_array_equal(got_lse[~fin], want_lse[~fin])
    got = jitloss.log_softmax(x)
    assert_close(got[:5], ref.log_softmax(x[:5]), dtype, atol=1e-30)
    assert np.isnan(got[5:]).all()
    p_max = ref.log_softmax(x[2:3])[0, -1]
    assert got[2, -1] < 0 and abs(got[2, -1] / p_max - 1) < RTOL[dtype]
    rows, labels = [0, 1, 2, 4], np.array([0, 1, C - 1, C // 2])  # (the reference makes
    # 0 * inf = NaN of row 3's -inf logits)
    np.testing.assert_allclose(
        jitloss.cross_entropy(x[rows], labels, reduction="none"),
        ref.cross_entropy(x[rows], labels, reduction="none"), rtol=RTOL[dtype] * 10)


def _extreme_rows(rng):
    rows = [rng.standard_normal(n) * s for n, s in [(5, 1), (17, 10), (64, 3), (33, 100)]]
    rows.append(np.array([0.0, -40.0]))
    rows.append(np.array([700.0, 0.0, -30.0, 699.5]))  # spread near the float64 range
    rows.append(np.array([1e300, 1e300 - 2e284, -1e300]))
    rows.append(np.array([-745.0, 0.0, -708.0, -1.0]))  # subnormal results
    rows.append(np.array([1e-300, -1e-300, 0.0]))
    rows.append(np.array([3.0, 3.0, 3.0, 2.0]))  # ties at the maximum
    # sums of exponentials on either side of 2, where log_softmax switches from summing the
    # terms below the maximum again (row_rest) to log1p(sum - 1)
    rows.append(np.array([0.0, -1e-9]))
    rows.append(np.array([0.0, 0.0, -50.0]))
    rows.append(np.array([0.0, -1e-9, -1e-9, -60.0]))
    return rows


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_float64_within_4_ulp_of_mpmath(temperature):
    rng = _rng(7)
    worst = 0.0
    for row in _extreme_rows(rng):
        sm, lsm = ref.mp_softmax_row(row, temperature)
        y = jitloss.softmax(row, temperature=temperature)
        ly = jitloss.log_softmax(row, temperature=temperature)
        for j in range(len(row)):
            worst = max(worst, ref.ulp_error(y[j], sm[j], np.float64))
            if mpmath.isfinite(lsm[j]) and float(lsm[j]) != 0:
                worst = max(worst, ref.ulp_error(ly[j], lsm[j], np.float64))
    assert worst <= 4, worst


def test_float64_logsumexp_within_2_ulp_of_mpmath():
    rng = _rng(8)
    for row in _extreme_rows(rng):
        xs = [mpmath.mpf(float(v)) for v in row]
        exact = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
        assert ref.ulp_error(jitloss.logsumexp(row), exact, np.float64) <= 2


def test_float16_computes_in_float32():
    x = (_rng().standard_normal((4, 300)) * 4).astype(np.float16)
    y = jitloss.softmax(x)
    assert y.dtype == np.float16
    want = ref.softmax(x).astype(np.float16)  # correctly rounded float16 of the exact value
    np.testing.assert_allclose(y.astype(np.float64), want.astype(np.float64), rtol=1e-3,
                               atol=6e-8)


# --- temperature --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.25, 0.7, 2.0, 13.0])
@pytest.mark.parametrize("axis", [-1, 0])
def test_temperature(temperature, axis):
    x = _rng(3).standard_normal((6, 9)) * 4
    for name, (fn, reference) in FORWARD.items():
        got = fn(x, axis=axis, temperature=temperature)
        want = reference(x, axis=axis, temperature=temperature)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


# --- out= and in-place --------------------------------------------------------------------


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("order", ["C", "F"])
def test_out_argument(name, order):
    fn, reference = FORWARD[name]
    x = np.asarray(_rng().standard_normal((5, 6)), order=order)
    out = np.empty((5, 6), order="F" if order == "C" else "C")  # a different layout
    res = fn(x, axis=0, out=out)
    assert res is out
    np.testing.assert_allclose(out, reference(x, axis=0), rtol=1e-14)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("shape", [(70, 600), (5, 300), (40, 12), (8, 4500), (3300, 10)])
def test_in_place(name, dtype, axis, shape):  # parallel and serial kernels; short rows (the
    # row tiles, serial and parallel, along axis -1); heap row copies
    # softmax's rows store and sum their exponentials in one loop, which LLVM runs scalar
    # (another order of the sum) when it reads what it writes: in place it reads a copy of
    # the row, and must give the bits of an allocated result
    fn, reference = FORWARD[name]
    x = _rng().standard_normal(shape).astype(dtype)
    want = fn(x.copy(), axis=axis)
    res = fn(x, axis=axis, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 1), (300, 5), (129, 16), (70, 17), (3300, 10),
                                   (200, 33), (130, 63), (65, 64)])
def test_short_rows_as_vectors_match_reference_whatever_rows_come_with_them(name, dtype,
                                                                          shape):
    # rows of at most SHORT_ROW_BYTES go through the short-row kernels, each row as 1 to 4
    # vectors with the lanes past it masked (serial, and at 3300 x 10 parallel; 64 float32
    # classes fill four vectors, 32 float64): the reference's values at temperature 1
    # (exp_near where the spread allows) and 0.7 and on rows of a wide spread (exp_sub),
    # and the bits of each row computed alone (the small-call path), in place and along
    # axis 0 of a 3-D array whose inner size is 1
    fn, reference = FORWARD[name]
    cpu, itemsize = jitloss.cpu, np.dtype(dtype).itemsize
    rows, classes = shape[0], min(shape[1], cpu.SHORT_ROW_BYTES // itemsize)
    assert cpu.short_rows(classes, itemsize)
    x = (_rng(5).standard_normal((rows, classes)) * 3).astype(dtype)
    x[1::4, 0] -= 40.0  # a spread beyond NEAR32 (results stay normal numbers)
    got = fn(x)
    assert_close(got, reference(x.astype(np.float64), axis=-1), dtype)
    for q in {0, 1, rows // 2, rows - 1}:
        np.testing.assert_array_equal(got[q], fn(x[q:q + 1])[0])
        np.testing.assert_array_equal(got[q], fn(x[q]))
    np.testing.assert_array_equal(got, fn(x, temperature=1))  # the small-call shortcut
    np.testing.assert_array_equal(got, fn(x[:, :, None], axis=1)[:, :, 0])
    y = x.copy()
    assert fn(y, out=y) is y
    np.testing.assert_array_equal(y, got)
    assert_close(fn(x, temperature=0.7), reference(x.astype(np.float64) / 0.7, axis=-1),
                 dtype)


def test_which_rows_are_short():
    # at most four vectors of 64 bytes: 64 float32 or 32 float64 classes, however few rows
    from jitloss.cpu import short_rows
    assert short_rows(64, 4) and short_rows(32, 8) and short_rows(1, 4)
    assert not short_rows(65, 4) and not short_rows(33, 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 1), (300, 5), (70, 16), (3300, 10), (130, 64)])
def test_logsumexp_of_short_rows(dtype, shape):
    # logsumexp's short rows go through the short-row kernels as well (groups of
    # SHORT_GROUP rows and a partial one): the reference's values, the bits of each row
    # computed alone and along axis 1 of (N, C, 1), into out= as into a new array
    shape = (shape[0], min(shape[1], jitloss.cpu.SHORT_ROW_BYTES // np.dtype(dtype).itemsize))
    x = _rng(8).standard_normal(shape).astype(dtype)
    x[5] = -np.inf
    x[7, 0] = np.inf
    x[9, 0] = np.nan
    x[11, -1] = np.inf
    x[11, 0] = np.nan  # with +inf, if there are two classes
    got = jitloss.logsumexp(x)
    want = ref.logsumexp(x.astype(np.float64), axis=-1)
    assert np.isnan(got[9]) and np.isnan(got[11]) and got[7] == np.inf and got[5] == -np.inf
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL[np.dtype(dtype).type])
    for q in {0, 5, 7, 9, shape[0] // 2, shape[0] - 1}:
        np.testing.assert_array_equal(got[q], jitloss.logsumexp(x[q]))
    np.testing.assert_array_equal(got, jitloss.logsumexp(x[:, :, None], axis=1)[:, 0])
    out = np.empty((shape[0], 1), dtype)
    assert jitloss.logsumexp(x, keepdims=True, out=out) is out
    np.testing.assert_array_equal(out[:, 0], got)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [12, 31])
def test_short_rows_keep_non_finite_rows_to_themselves(name, dtype, classes):
    # a NaN, +inf or all -inf row among short rows gives NaN in its own row only, allocated
    # and in place; -inf entries under a finite maximum (a mask) give 0 (log: -inf)
    fn, reference = FORWARD[name]
    x = _rng(6).standard_normal((40, classes)).astype(dtype)
    x[3, 4] = np.nan
    x[17, :] = -np.inf
    x[20, 2] = np.inf
    x[22, [0, classes - 1]] = [np.nan, np.inf]
    x[25, 1::2] = -np.inf
    got = fn(x)
    y = x.copy()
    fn(y, out=y)
    np.testing.assert_array_equal(y, got)
    bad = [3, 17, 20, 22]
    assert np.isnan(got[bad]).all()
    good = np.setdiff1d(np.arange(40), bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = reference(x[good].astype(np.float64), axis=-1)
    np.testing.assert_array_equal(np.isfinite(got[good]), np.isfinite(want))
    ok = np.isfinite(want)
    assert_close(got[good][ok], want[ok], dtype)


def test_which_rows_take_tiles():
    # rows shorter than 256 bytes take tiles (their loops would run scalar in the row
    # kernels), from 16 rows up to 128 bytes a row and from TILE_LONG_MIN_ROWS beyond
    from jitloss.cpu import TILE_LONG_MIN_ROWS as LONG, tile_rows

    assert tile_rows(16, 32, 4) and tile_rows(16, 16, 8) and not tile_rows(15, 32, 4)
    assert tile_rows(LONG, 63, 4) and tile_rows(LONG, 31, 8)
    assert not tile_rows(LONG - 1, 33, 4) and not tile_rows(LONG - 1, 17, 8)
    assert not tile_rows(10**6, 64, 4) and not tile_rows(10**6, 32, 8)
    assert tile_rows(16, 24, 4, 96) and not tile_rows(10**6, 25, 4, 96)  # a family's bound


@pytest.mark.parametrize("itemsize", [4, 8])
def test_tile_widths(itemsize):
    # a tile holds about TILE_BYTES (at most a cache line's rows more), each class row at
    # most TILE_MAX_LINES cache lines and LANE_WIDE_BYTES (the lane blocks' longest piece),
    # in an odd number of whole cache lines (a power of two puts a block's class rows in
    # one L1 set); on several
    # threads the tiles share the rows out evenly (the busiest thread takes at most two
    # cache lines' rows per tile more than its share), none narrower than it must be
    cpu = jitloss.cpu
    line = 64 // itemsize
    for classes in range(1, cpu.TILE_ROW_BYTES // itemsize + 1):
        top = cpu.tile_top(classes, itemsize)
        assert top % line == 0 and (top // line) % 2 == 1
        assert top * itemsize <= cpu.LANE_WIDE_BYTES and top // line <= cpu.TILE_MAX_LINES
        assert (top - line) * classes * itemsize <= cpu.TILE_BYTES
        assert (top + 2 * line) * classes * itemsize > cpu.TILE_BYTES or (
            top // line + 2 > min(cpu.TILE_MAX_LINES, cpu.LANE_WIDE_BYTES // 64))
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    if threads < 2:
        pytest.skip("one numba thread")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        for rows, classes in [(1100, 32), (1500, 32), (3300, 10), (5000, 48), (65536, 32),
                              (9000, 63), (100000, 10)]:
            x2 = np.empty((rows, classes), np.float32 if itemsize == 4 else np.float64)
            if x2.size < cpu.PARALLEL_MIN_ELEMENTS:
                continue
            R, top = cpu.tile_width_for(x2), cpu.tile_top(classes, itemsize)
            tiles = -(-rows // R)
            per_thread = -(-tiles // threads)
            assert R % line == 0 and (R // line) % 2 == 1 and R <= top
            assert per_thread * R <= -(-rows // threads) + per_thread * 2 * line
            assert per_thread <= -(-rows // (threads * top))  # no narrower than need be
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_results_do_not_depend_on_the_tile_width(monkeypatch, dtype):
    # Rows go through the lane kernels R at a time (tile_width_for): at R = 24, 72, 128 and
    # the widest, serial and parallel, the same bits, with a partial last tile and rows of
    # -inf, NaN and +inf among them; every family that takes tiles
    cpu = jitloss.cpu
    rng = _rng(43)
    N, C = 1000, 36 if dtype == np.float32 else 18
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    x[5], x[77, 3], x[500, 0] = -np.inf, np.nan, np.inf
    labels = rng.integers(0, C, N)
    probs = rng.dirichlet(np.ones(C), N).astype(dtype)
    kw = dict(weight=np.linspace(0.5, 2, C), label_smoothing=0.05, reduction="none")

    def results():
        return [jitloss.softmax(x, temperature=0.7), jitloss.log_softmax(x),
                jitloss.logsumexp(x), jitloss.cross_entropy(x, labels, **kw),
                *jitloss.cross_entropy_with_grad(x, labels, **kw),
                jitloss.cross_entropy(x, probs, **kw),
                *jitloss.cross_entropy_with_grad(x, probs, **kw)]

    want = results()
    assert cpu.tile_rows(N, C, x.itemsize)
    for parallel_min in (1 << 40, 1):
        monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", parallel_min)
        for R in (24, 72, 128):
            monkeypatch.setattr(cpu, "tile_width_for", lambda x2, R=R: R)
            for a, b in zip(want, results()):
                np.testing.assert_array_equal(a, b)
    fine = np.isfinite(x).all(axis=1)
    assert np.isnan(want[0][~fine]).all() and np.isnan(want[3][~fine]).all()
    assert_close(want[0][fine], ref.softmax(x[fine].astype(np.float64), temperature=0.7),
                 dtype, atol=np.finfo(dtype).tiny)


def test_short_rows_in_tiles_same_bits_with_one_and_two_threads():
    x = _rng(7).standard_normal((3300, 10)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [jitloss.softmax(x), jitloss.log_softmax(x)]
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = [jitloss.softmax(x), jitloss.log_softmax(x)]
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (14,), (3, 14), (2, 3, 5)])
def test_small_call_shortcut_matches_reference_and_general_path(name, dtype, shape):
    # small C-contiguous calls along the last axis at temperature 1 take one compiled call
    # that allocates its result; axis=(-1,) and temperature=1 (an int) take the general path
    fn, reference = FORWARD[name]
    x = _rng(3).standard_normal(shape).astype(dtype)
    x[..., 0] = 30.0  # a row far from uniform
    got = fn(x)
    assert got.dtype == dtype and got.shape == shape
    assert_close(got, reference(x.astype(np.float64), axis=-1), dtype)
    np.testing.assert_array_equal(got, fn(x, axis=(-1,)))
    np.testing.assert_array_equal(got, fn(x, temperature=1))
    x.flags.writeable = False
    np.testing.assert_array_equal(got, fn(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (14,), (3, 14), (2, 3, 5)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_small_logsumexp_shortcut_matches_reference_and_general_path(dtype, shape, keepdims):
    x = _rng(4).standard_normal(shape).astype(dtype)
    x[..., 0] = 30.0
    if len(shape) > 1:
        x[0, ..., 1] = np.inf  # non-finite rows take the same rules as the general path
    got = jitloss.logsumexp(x, keepdims=keepdims)
    want_shape = shape[:-1] + ((1,) if keepdims else ())
    assert np.shape(got) == want_shape and got.dtype == dtype
    assert isinstance(got, np.ndarray) or (isinstance(got, np.generic) and want_shape == ())
    np.testing.assert_allclose(got, ref.logsumexp(x.astype(np.float64), axis=-1,
                                                  keepdims=keepdims), rtol=RTOL[dtype])
    general = jitloss.logsumexp(x, axis=(-1,), keepdims=keepdims)  # the general path
    np.testing.assert_array_equal(got, general)
    assert type(got) is type(general)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (14,), (3, 14), (2, 3, 5)])
def test_small_backward_shortcut_matches_reference_and_general_path(dtype, shape):
    x = _rng(12).standard_normal(shape).astype(dtype)
    dy = _rng(13).standard_normal(shape).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    y, logp = jitloss.softmax(x), jitloss.log_softmax(x)
    cases = [(jitloss.softmax_backward, y, ref.softmax_backward),
             (jitloss.log_softmax_backward, logp, ref.log_softmax_backward)]
    for fn, out, reference in cases:
        got = fn(out, dy)
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_allclose(got, reference(out, dy, axis=-1), rtol=rtol,
                                   atol=rtol * 1e-2)
        np.testing.assert_array_equal(got, fn(out, dy, axis=(-1,)))  # the general path
        np.testing.assert_array_equal(got, fn(out, dy, temperature=1))
        buf = np.empty_like(got)
        np.testing.assert_array_equal(got, fn(out, dy, out=buf))

def test_kernel_outputs_take_the_fast_path(monkeypatch):
    # arrays allocated by numba carry dtype objects of their own; a dtype compared by
    # identity sent softmax(x) into the general path of softmax_backward (5 -> 20 us)
    import sys

    module = sys.modules["jitloss.softmax"]
    x = _rng(5).standard_normal((3, 14)).astype(np.float32)
    y = jitloss.softmax(x)
    dy = _rng(6).standard_normal((3, 14)).astype(np.float32)

    def general_path(*args):
        raise AssertionError("general path taken")

    monkeypatch.setattr(module, "float_inputs", general_path)
    got = jitloss.softmax_backward(y, dy)
    np.testing.assert_allclose(got, ref.softmax_backward(y, dy, axis=-1), rtol=1e-5, atol=1e-7)
    jitloss.log_softmax_backward(jitloss.log_softmax(x), dy)

def test_out_in_c_order_takes_the_fast_path(monkeypatch):
    # out= of x's shape, dtype and C order skipped the general path's argument machinery
    # only without out= (softmax(x, out=o) of 16 x 14 took 11.7 us against 2.5 without)
    import sys

    module = sys.modules["jitloss.softmax"]
    rng = _rng(15)
    x = rng.standard_normal((16, 14)).astype(np.float32)
    dy = rng.standard_normal((16, 14)).astype(np.float32)
    x64 = x.astype(np.float64)
    want = [ref.softmax(x64, axis=-1), ref.log_softmax(x64, axis=-1),
            ref.softmax_backward(x64, dy, axis=-1), ref.logsumexp(x64, axis=-1)]

    def general_path(*args):
        raise AssertionError("general path taken")

    monkeypatch.setattr(module, "float_inputs", general_path)
    o, lse = np.empty_like(x), np.empty(16, np.float32)
    assert jitloss.softmax(x, out=o) is o
    assert_close(o, want[0], np.float32)
    inplace = x.copy()
    assert jitloss.log_softmax(inplace, out=inplace) is inplace
    assert_close(inplace, want[1], np.float32, atol=1e-6)
    assert jitloss.softmax_backward(x, dy, out=o) is o
    np.testing.assert_allclose(o, want[2], rtol=1e-5, atol=1e-6)
    assert jitloss.logsumexp(x, out=lse) is lse
    assert_close(lse, want[3], np.float32)
    lse2 = np.empty((16, 1), np.float32)
    assert jitloss.logsumexp(x, keepdims=True, out=lse2) is lse2
    np.testing.assert_array_equal(lse2[:, 0], lse)


def test_logsumexp_out_over_x_is_computed_through_a_copy():
    # out= over the first rows of x: the results of a private copy, by either path
    for keepdims in (False, True):
        buf = _rng(16).standard_normal((6, 5))
        want = ref.logsumexp(buf.copy(), axis=-1, keepdims=keepdims)
        out = buf.reshape(-1)[:6].reshape(want.shape)
        assert jitloss.logsumexp(buf, keepdims=keepdims, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-14)


def test_overlapping_out_is_computed_through_a_copy():
    buf = _rng().standard_normal(12)
    x = buf[:10]
    want = ref.softmax(x)
    jitloss.softmax(x, out=buf[2:])  # out overlaps x shifted by two
    np.testing.assert_allclose(buf[2:], want, rtol=1e-14)


def test_float16_out():
    x = np.float16([1.0, 2.0, 3.0])
    out = np.empty(3, np.float16)
    jitloss.softmax(x, out=out)
    np.testing.assert_allclose(out, ref.softmax(x), rtol=1e-3)


def test_logsumexp_out_and_sign():
    x = _rng().standard_normal((4, 5))
    out = np.empty(4)
    res = jitloss.logsumexp(x, out=out)
    assert res is out
    np.testing.assert_allclose(out, ref.logsumexp(x), rtol=1e-14)
    out2 = np.empty((4, 1))
    jitloss.logsumexp(x, axis=1, keepdims=True, out=out2)
    np.testing.assert_allclose(out2[:, 0], ref.logsumexp(x), rtol=1e-14)


# --- logsumexp with b and return_sign (SciPy's rules) --------------------------------------


@pytest.mark.parametrize(
    "x, b",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0], [1.0, -1.0]),
        ([1.0, 2.0, 3.0], [1.0, -1.0, 0.5]),
        ([1.0, 1.0], [1.0, -1.0]),  # cancels to 0
        ([np.inf, 1.0], [1.0, 2.0]),
        ([np.inf, np.inf], [1.0, -1.0]),  # inf - inf
        ([np.nan, 1.0], [0.0, 1.0]),  # zero weight hides the NaN
        ([np.inf, 1.0], [0.0, 1.0]),
        ([-np.inf, -np.inf], [1.0, 1.0]),
        ([3.0, 3.0, 1.0], [2.0, -2.0, 1.0]),  # maximal terms cancel
        ([0.0, -40.0], [1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_b_matches_scipy(x, b, return_sign):
    got = jitloss.logsumexp(x, b=b, return_sign=return_sign)
    with np.errstate(all="ignore"):
        want = ref.logsumexp(x, b=b, return_sign=return_sign)
    if return_sign:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-14)
        np.testing.assert_array_equal(got[1], want[1])
    else:
        np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("axis", [0, 1, None, (0, 1)])
def test_logsumexp_b_broadcasts(axis):
    rng = _rng(4)
    x = rng.standard_normal((3, 4))
    b = rng.standard_normal(4)
    got, sign = jitloss.logsumexp(x, axis=axis, b=b, return_sign=True)
    want, wsign = ref.logsumexp(x, axis=axis, b=b, return_sign=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(sign, wsign)


def test_logsumexp_return_sign_without_b():
    x = np.array([[0.0, 1.0], [-np.inf, -np.inf], [np.nan, 0.0]])
    got, sign = jitloss.logsumexp(x, return_sign=True)
    want, wsign = ref.logsumexp(x, axis=-1, return_sign=True)
    np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(sign, wsign)


# --- backward functions -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_backward_against_finite_differences(temperature, axis):
    rng = _rng(5)
    x = rng.standard_normal((4, 5))
    dy = rng.standard_normal((4, 5))
    y = jitloss.softmax(x, axis=axis, temperature=temperature)
    got = jitloss.softmax_backward(y, dy, axis=axis, temperature=temperature)
    fd = ref.finite_difference(lambda v: ref.softmax(v, axis, temperature), x, dy)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        got, ref.softmax_backward(y, dy, axis, temperature), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_backward_against_finite_differences(temperature, axis):
    rng = _rng(6)
    x = rng.standard_normal((4, 5))
    dy = rng.standard_normal((4, 5))
    logp = jitloss.log_softmax(x, axis=axis, temperature=temperature)
    got = jitloss.log_softmax_backward(logp, dy, axis=axis, temperature=temperature)
    fd = ref.finite_difference(lambda v: ref.log_softmax(v, axis, temperature), x, dy)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        got, ref.log_softmax_backward(logp, dy, axis, temperature), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 1, (1, 2)])
def test_backward_float32_and_lanes(dtype, axis):
    rng = _rng(9)
    x = rng.standard_normal((3, 40, 50)).astype(dtype)
    dy = rng.standard_normal((3, 40, 50)).astype(dtype)
    y = jitloss.softmax(x, axis=axis)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    want = _backward_formula(y, dy, axis)
    np.testing.assert_allclose(jitloss.softmax_backward(y, dy, axis=axis), want, rtol=rtol,
                               atol=rtol * 1e-2)
    logp = jitloss.log_softmax(x, axis=axis)
    want = dy - np.exp(logp.astype(np.float64)) * dy.astype(np.float64).sum(axis, keepdims=True)
    np.testing.assert_allclose(jitloss.log_softmax_backward(logp, dy, axis=axis), want,
                               rtol=rtol, atol=rtol)


def _backward_formula(y, dy, axis):
    y = y.astype(np.float64)
    dy = dy.astype(np.float64)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape", [(8, 9), (300, 130)])  # serial and parallel kernels
@pytest.mark.parametrize("into", ["dy", "y"])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])  # rows and lanes
def test_backward_in_place(shape, into, log, axis):
    # in place the inputs are read from copies (a loop reading what it writes runs scalar)
    rng = _rng(10)
    forward, backward = ((jitloss.log_softmax, jitloss.log_softmax_backward) if log
                         else (jitloss.softmax, jitloss.softmax_backward))
    y = forward(rng.standard_normal(shape), axis=axis)
    dy = rng.standard_normal(shape)
    want = backward(y, dy, axis=axis)
    target = dy if into == "dy" else y
    res = backward(y, dy, axis=axis, out=target)
    assert res is target
    np.testing.assert_array_equal(target, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [1, 3, 7, 12, 17, 40, 64])
@pytest.mark.parametrize("rows", [5, 3000])  # serial and parallel kernels
def test_backward_of_short_rows_as_vectors(dtype, classes, rows):
    # rows of at most SHORT_ROW_BYTES take the backward functions' short-row kernels (a
    # narrow vector or 1-4 of 64 bytes, the lanes past the row masked): the float64
    # formulas (NaN and -inf log-probabilities, a large one), the bits of each row alone,
    # in place into either input, at a temperature
    classes = min(classes, jitloss.cpu.SHORT_ROW_BYTES // np.dtype(dtype).itemsize)
    rng = _rng(12)
    x = rng.standard_normal((rows, classes)).astype(dtype)
    dy = rng.standard_normal((rows, classes)).astype(dtype)
    y = jitloss.softmax(x)
    logp = jitloss.log_softmax(x)
    logp[1, 0], logp[2, -1], logp[3, 0] = -np.inf, np.nan, 30.0
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for T in (1.0, 0.7):
        got = jitloss.softmax_backward(y, dy, temperature=T)
        np.testing.assert_allclose(got, _backward_formula(y, dy, -1) / T, rtol=rtol,
                                   atol=rtol * 1e-2)
        got_l = jitloss.log_softmax_backward(logp, dy, temperature=T)
        d64 = dy.astype(np.float64)
        want = (d64 - np.exp(logp.astype(np.float64)) * d64.sum(-1, keepdims=True)) / T
        np.testing.assert_array_equal(np.isnan(got_l), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got_l[ok], want[ok], rtol=rtol,
                                   atol=rtol * np.abs(want[ok]).max() * 1e-2)
        for q in (0, 1, 2, 3, rows - 1):
            np.testing.assert_array_equal(
                got[q], jitloss.softmax_backward(y[q], dy[q], temperature=T))
            np.testing.assert_array_equal(
                got_l[q], jitloss.log_softmax_backward(logp[q], dy[q], temperature=T))
        for fn, a, want_bits in ((jitloss.softmax_backward, y, got),
                                 (jitloss.log_softmax_backward, logp, got_l)):
            for into in ("a", "dy"):
                a2, dy2 = a.copy(), dy.copy()
                target = a2 if into == "a" else dy2
                assert fn(a2, dy2, temperature=T, out=target) is target
                np.testing.assert_array_equal(target, want_bits)


def test_backward_mixed_dtypes_promote():
    y = jitloss.softmax(np.float32([1, 2, 3]))
    g = jitloss.softmax_backward(y, np.float64([1, 0, 0]))
    assert g.dtype == np.float64


# --- properties (hypothesis) --------------------------------------------------------------

_rows = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(-1e3, 1e3, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(_rows, st.floats(-500, 500))
def test_shift_invariance(x, c):
    np.testing.assert_allclose(jitloss.softmax(x + c), jitloss.softmax(x), rtol=1e-9,
                               atol=1e-300)


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_rows_sum_to_one(x):
    y = jitloss.softmax(x, axis=0)
    np.testing.assert_allclose(y.sum(axis=0), 1.0, rtol=1e-13)
    assert (y >= 0).all() and (y <= 1).all()


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_log_softmax_is_x_minus_logsumexp(x):
    want = x - jitloss.logsumexp(x, axis=-1, keepdims=True)
    np.testing.assert_allclose(jitloss.log_softmax(x), want, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(_rows.filter(lambda a: a.ndim >= 2), st.sampled_from([0, -1, None]))
def test_hypothesis_matches_scipy(x, axis):
    np.testing.assert_allclose(jitloss.softmax(x, axis=axis), ref.softmax(x, axis=axis),
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(jitloss.logsumexp(x, axis=axis), ref.logsumexp(x, axis=axis),
                               rtol=1e-12)



def test_lane_width_counts_each_tasks_cost():
    # Bug: lane_width counted lanes only, and took pieces of 64 lanes for 8 x 3000 lanes
    # and 96 for 9000 on two threads (a lane block costs calls per class row: those took
    # 1.6-2.3x the time of pieces of 512 at 8 x 100 x 3000 float32 along axis 1)
    from jitloss.cpu import LANE_MIN, lane_width

    for outer, inner in [(8, 3000), (2, 3000), (1, 9000), (1, 100000), (8, 1000)]:
        for threads in (2, 4):
            w = lane_width(outer, inner, 4, threads)
            tasks = outer * -(-inner // w)
            assert w >= 256, (outer, inner, threads, w)
            # and the busiest thread still has at most a task more than its share
            assert -(-tasks // threads) <= tasks / threads + 1
    assert lane_width(1, 1000, 4, 2) == 512 and lane_width(1, 256, 4, 2) == 128  # halves
    assert lane_width(5, 700, 8, 1) == max(LANE_MIN, 2048 // 8)  # one thread: the widest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axis0_spanning_several_lane_blocks_and_a_partial_one(dtype):
    # inner = 1100 lanes: two whole blocks or more and a partial one, whatever the thread
    # count; one column with a wide spread takes its lanes off the cheap exp path
    for threads in (1, 2, numba.get_num_threads()):
        lanes = jitloss.cpu.lane_width(1, 1100, np.dtype(dtype).itemsize, threads)
        assert 1100 > 2 * lanes and 1100 % lanes
    rng = _rng(21)
    x = rng.standard_normal((30, 1100)).astype(dtype)
    x[0, 700] = 60.0
    dy = rng.standard_normal((30, 1100)).astype(dtype)
    assert_close(jitloss.softmax(x, axis=0), ref.softmax(x, axis=0), dtype)
    assert_close(jitloss.log_softmax(x, axis=0), ref.log_softmax(x, axis=0), dtype, atol=1e-6)
    np.testing.assert_allclose(jitloss.logsumexp(x, axis=0), ref.logsumexp(x, axis=0),
                               rtol=RTOL[dtype])
    y = jitloss.softmax(x, axis=0)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(jitloss.softmax_backward(y, dy, axis=0),
                               ref.softmax_backward(y, dy, axis=0), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_long_columns_along_axis0(dtype, temperature):
    # Columns of 5000 classes: maxima that grow slowly or fast down the column, -inf or NaN
    # only at the start, +inf only at the end, and one maximal element after 4999 at -40
    # (log_softmax near probability 1); each column also reversed
    C = 5000
    j = np.arange(C, dtype=np.float64)
    cols = [j * 1e-3, j * 0.05, np.sin(j) * 3, np.full(C, -40.0), np.full(C, 2.0),
            np.sin(j), np.sin(j), np.r_[np.full(C - 1, -40.0), 0.0]]
    cols[4][:128] = -np.inf
    cols[5][3] = np.nan
    cols[6][-1] = np.inf
    cols[3][C // 2] = 0.0
    x = np.stack(cols, axis=1).astype(dtype)
    x = np.concatenate([x, x[:, ::-1]], axis=1)  # and each column reversed
    x64 = x.astype(np.float64)
    for fn, reference in [(jitloss.softmax, ref.softmax), (jitloss.log_softmax, ref.log_softmax)]:
        got = fn(x, axis=0, temperature=temperature)
        want = reference(x64, axis=0, temperature=temperature)
        bad = ~np.isfinite(x64).all(axis=0) & (np.isnan(x64).any(axis=0)
                                               | (x64 == np.inf).any(axis=0))
        assert np.isnan(got[:, bad]).all()
        assert_close(got[:, ~bad], want[:, ~bad], dtype,
                     atol=np.finfo(dtype).tiny if fn is jitloss.softmax else 0.0)
    lse = jitloss.logsumexp(x, axis=0)
    want = ref.logsumexp(x64, axis=0)
    np.testing.assert_array_equal(np.isnan(lse), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(lse[ok], want[ok], rtol=RTOL[np.dtype(dtype).type])
    assert np.array_equal(lse[~ok], want[~ok], equal_nan=True)
    # the column with one maximal element: log_softmax there is about -4999 e**-40, not 0
    near_one = jitloss.log_softmax(x, axis=0)[-1, 7]
    assert near_one == pytest.approx(-(C - 1) * np.exp(-40.0), rel=RTOL[np.dtype(dtype).type])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_lane_pieces_give_the_bits_of_narrow_ones(monkeypatch, dtype):
    # Columns whose block would fill half of L2 take pieces of LANE_WIDE_BYTES without
    # prefetch hints (lane_width_for); here every block does (L2 taken as 4 KiB), serial and
    # parallel (at 1 thread a piece of the whole LANE_WIDE_BYTES), in place too (the piece
    # goes to a stack buffer of LANE_WIDE_BYTES): the bits of the 2 KiB pieces
    cpu = jitloss.cpu
    rng = _rng(41)
    x = (rng.standard_normal((70, 2100)) * 3).astype(dtype)
    x[5, 7], x[6, 2080] = np.nan, np.inf
    dy = rng.standard_normal(x.shape).astype(dtype)
    labels = rng.integers(0, 70, 2100)

    def results():
        y = jitloss.softmax(x, axis=0)
        lp = jitloss.log_softmax(x, axis=0, temperature=0.7)
        got = [y, lp, jitloss.logsumexp(x, axis=0), jitloss.softmax_backward(y, dy, axis=0),
               jitloss.log_softmax_backward(lp, dy, axis=0),
               *jitloss.cross_entropy_with_grad(x, labels, axis=0, reduction="none")]
        for fn in (jitloss.softmax, jitloss.log_softmax):
            inplace = x.copy()
            got.append(fn(inplace, axis=0, out=inplace))
        g = x.copy()
        got.append(jitloss.cross_entropy_with_grad(g, labels, axis=0, grad_out=g)[1])
        return got

    narrow = results()
    monkeypatch.setattr(cpu, "l2_bytes", lambda: 4096)
    wide = cpu.lane_width(1, 2100, np.dtype(dtype).itemsize, 1, cpu.LANE_WIDE_BYTES)
    assert wide * np.dtype(dtype).itemsize == cpu.LANE_WIDE_BYTES
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            for a, b in zip(narrow, results()):
                np.testing.assert_array_equal(a, b)
    finally:
        numba.set_num_threads(before)


def _online(monkeypatch, online):
    # Float32 softmax along a lane axis takes the online sums (cpu.online_lanes) on arrays
    # too large for a test: force the choice either way
    monkeypatch.setattr(jitloss.cpu.softmax, "online_lanes",
                        lambda a3: a3.itemsize == 4 and online)


@pytest.mark.parametrize("dtype, online",
                         [(np.float32, False), (np.float32, True), (np.float64, False)])
def test_lane_tiles_give_the_bits_of_rows_at_a_time(monkeypatch, dtype, online):
    # Wide lane pieces take their class rows LANE_TILE at a time, a short last tile
    # repeating its last row (_math.tile_row); in place, and in narrow pieces, the output
    # passes take one row at a time (softmax_backward's always does; its sums take tiles).
    # Online, float32 softmax takes its exponentials twice (summed, then scaled into the
    # output) where in place it stores them and scales them.  For every remainder of the
    # tiles and of LANE_BLOCK, with non-finite columns and a temperature: the same bits
    # either way, and the reference's values
    rng = _rng(43)
    widest = jitloss.cpu.LANE_WIDE_BYTES // np.dtype(dtype).itemsize  # lane_width's most
    monkeypatch.setattr(jitloss.cpu.softmax, "lane_width_for", lambda a3: widest)
    _online(monkeypatch, online)
    for C in (1, 2, 3, 4, 5, 7, 17, 35, 70):
        x = (rng.standard_normal((C, 1100)) * 3).astype(dtype)
        x[:, 9] = -np.inf
        x[C - 1, 10], x[0, 11] = np.nan, np.inf
        fine = np.isfinite(x).all(axis=0)
        for fn, reference in ((jitloss.softmax, ref.softmax),
                              (jitloss.log_softmax, ref.log_softmax)):
            for temperature in (1.0, 0.7):
                tiled = fn(x, axis=0, temperature=temperature)
                inplace = x.copy()
                fn(inplace, axis=0, temperature=temperature, out=inplace)
                np.testing.assert_array_equal(tiled, inplace)
                assert_close(tiled[:, fine], reference(x[:, fine], axis=0,
                                                       temperature=temperature),
                             dtype, atol=1e-6)
                assert np.isnan(tiled[:, ~fine]).all()
        dy = rng.standard_normal(x.shape).astype(dtype)
        for fn, reference, forward in (
                (jitloss.softmax_backward, ref.softmax_backward, jitloss.softmax),
                (jitloss.log_softmax_backward, ref.log_softmax_backward, jitloss.log_softmax)):
            y = forward(x[:, fine], axis=0)
            tiled = fn(y, dy[:, fine], axis=0, temperature=0.7)
            inplace = dy[:, fine].copy()
            fn(y, inplace, axis=0, temperature=0.7, out=inplace)
            np.testing.assert_array_equal(tiled, inplace)
            want = reference(y.astype(np.float64), dy[:, fine].astype(np.float64), axis=0,
                             temperature=0.7)
            np.testing.assert_allclose(tiled, want, rtol=RTOL[np.dtype(dtype).type],
                                       atol=8 * np.finfo(dtype).eps * np.abs(want).max())
        lse = jitloss.logsumexp(x, axis=0)
        np.testing.assert_allclose(lse[fine], ref.logsumexp(x[:, fine], axis=0),
                                   rtol=RTOL[np.dtype(dtype).type],
                                   atol=4 * np.finfo(dtype).eps * np.abs(x[:, fine]).max())


@pytest.mark.parametrize("dtype, temperature, online",
                         [(np.float32, 1.0, False), (np.float32, 0.7, False),
                          (np.float32, 1.0, True), (np.float32, 0.7, True),
                          (np.float64, 1.0, False)])
def test_lane_results_do_not_depend_on_the_lane_width(monkeypatch, dtype, temperature, online):
    # Bug: a float32 block of lanes took the cheaper exp_near only if all its lanes could, so
    # a column's bits depended on the columns that shared its block, and so on the block
    # width, which now follows the thread count.  Columns of spread 70 among narrow ones,
    # and non-finite ones, at widths 64, 128, 512 and the whole row: the same bits
    rng = _rng(31)
    _online(monkeypatch, online)
    x = (rng.standard_normal((70, 1100)) * 3).astype(dtype)
    x[0, 100:700:3] = 70.0
    x[40, 101:700:3] = 70.0  # online: a block whose maximum jumps past ONLINE_LAG
    x[:, 5] = -np.inf
    x[3, 900], x[4, 901] = np.nan, np.inf
    got = []
    for width in (64, 128, 512, 1100):
        monkeypatch.setattr(jitloss.cpu.softmax, "lane_width_for", lambda a3, w=width: w)
        got.append([jitloss.softmax(x, axis=0, temperature=temperature),
                    jitloss.log_softmax(x, axis=0, temperature=temperature),
                    jitloss.logsumexp(x, axis=0)])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)
    fine = np.isfinite(x).all(axis=0)
    tiny = np.finfo(dtype).tiny  # the spread-70 columns' subnormal probabilities
    assert_close(got[0][0][:, fine], ref.softmax(x[:, fine], axis=0, temperature=temperature),
                 dtype, atol=tiny)
    assert_close(got[0][1][:, fine],
                 ref.log_softmax(x[:, fine], axis=0, temperature=temperature), dtype, atol=1e-6)
    assert np.isnan(got[0][0][:, ~fine]).all() and np.isnan(got[0][1][:, ~fine]).all()


def test_online_lanes_is_a_choice_by_the_array_and_the_machine(monkeypatch):
    # The online sums change the last bits, so the choice may depend on the array and the
    # machine, never on the threads (lane_width follows them).  On a 32 MiB L3 shared by two
    # CPUs: 1000 x 4096 float32 along axis 0 streams from memory; float64, class rows of
    # 2 KiB, arrays of 8 MB and blocks of 256 classes do not take it
    cpu = jitloss.cpu
    monkeypatch.setattr(cpu, "l3_bytes", lambda: 32 << 20)
    monkeypatch.setattr(cpu, "l3_sharing", lambda: 2)

    def online(shape, dtype=np.float32):
        return cpu.online_lanes(np.empty(shape, dtype))

    assert online((1, 1000, 4096)) and online((1, 4000, 1024)) and online((8, 1000, 2048))
    assert not online((1, 1000, 4096), np.float64)
    assert not online((16, 4000, 512)) and not online((1, 1000, 2048))
    assert not online((1, 256, 8192))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert online((1, 1000, 4096))
    finally:
        numba.set_num_threads(threads)


def test_cache_sizes_and_sharing_parse_sysfs(monkeypatch):
    # online_lanes and the lane widths read the caches from Linux sysfs; what cannot be
    # read or parsed gives the default
    cpu = jitloss.cpu
    for info, size, sharing in (
        ({"size": "32768K", "shared_cpu_list": "0-1"}, 32 << 20, 2),
        ({"size": "1M", "shared_cpu_list": "0-7,64-71"}, 1 << 20, 16),
        ({"size": "512K", "shared_cpu_list": "3"}, 512 << 10, 1),
        ({"size": "big", "shared_cpu_list": "0-x"}, -1, -1),
        ({}, -1, -1),
    ):
        monkeypatch.setattr(cpu, "_cache_info", lambda level, i=info: i)
        assert cpu.cache_bytes(3, -1) == size
        assert cpu.l3_sharing.__wrapped__(-1) == sharing


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.05])
def test_online_lane_sums_match_the_reference(monkeypatch, temperature):
    # The online sums (float32 softmax along a lane axis of a large array) take each block
    # of ONLINE_LANE_ROWS classes against a reference that follows the maximum with a lag,
    # rescaling the float64 total where it moves.  Columns built to move it: increasing and
    # decreasing ramps, a jump in the last block, -inf before the first finite value, spreads
    # beyond NEAR32 (exp_sub) beside narrow ones; NaN, +inf and all -inf columns are NaN
    from jitloss.cpu import _math

    rng = _rng(47)
    C = 3 * _math.ONLINE_LANE_ROWS + 5
    x = (rng.standard_normal((C, 300)) * 3).astype(np.float32)
    x[:, 0] = np.linspace(-60.0, 60.0, C)
    x[:, 1] = np.linspace(60.0, -60.0, C)
    x[C - 2, 2] = 40.0
    x[:C - 7, 3] = -np.inf
    x[:_math.ONLINE_LANE_ROWS + 1, 4] = -np.inf
    x[:, 5:9] *= 30.0
    x[7, 9], x[:, 10], x[C - 1, 11] = np.nan, -np.inf, np.inf
    fine = np.isfinite(x.max(axis=0)) & ~np.isnan(x).any(axis=0)
    _online(monkeypatch, True)
    for width in (64, 300):
        monkeypatch.setattr(jitloss.cpu.softmax, "lane_width_for", lambda a3, w=width: w)
        got = jitloss.softmax(x, axis=0, temperature=temperature)
        inplace = x.copy()
        jitloss.softmax(inplace, axis=0, temperature=temperature, out=inplace)
        np.testing.assert_array_equal(got, inplace)
        want = ref.softmax(x[:, fine].astype(np.float64), axis=0, temperature=temperature)
        assert_close(got[:, fine], want, np.float32, atol=np.finfo(np.float32).tiny)
        assert np.isnan(got[:, ~fine]).all()
    _online(monkeypatch, False)
    np.testing.assert_allclose(got, jitloss.softmax(x, axis=0, temperature=temperature),
                               rtol=4e-6, atol=np.finfo(np.float32).tiny)


# --- inputs, threads, determinism ---------------------------------------------------------


def test_inputs_are_never_modified_and_read_only_inputs_work():
    rng = _rng(11)
    x = rng.standard_normal((50, 700)).astype(np.float32)
    dy = rng.standard_normal((50, 700)).astype(np.float32)
    keep_x, keep_dy = x.copy(), dy.copy()
    x.flags.writeable = False
    dy.flags.writeable = False
    for axis in (-1, 0):
        y = jitloss.softmax(x, axis=axis)
        jitloss.log_softmax(x, axis=axis)
        jitloss.logsumexp(x, axis=axis, b=dy)
        y.flags.writeable = False
        jitloss.softmax_backward(y, dy, axis=axis)
        jitloss.log_softmax_backward(y, dy, axis=axis)
    np.testing.assert_array_equal(x, keep_x)
    np.testing.assert_array_equal(dy, keep_dy)


def _all_ops(x, dy, axis):
    y = jitloss.softmax(x, axis=axis, temperature=0.7)
    return [
        y,
        jitloss.log_softmax(x, axis=axis),
        jitloss.logsumexp(x, axis=axis),
        jitloss.softmax_backward(y, dy, axis=axis),
        jitloss.log_softmax_backward(y, dy, axis=axis),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
def test_bitwise_identical_with_1_and_2_threads(dtype, axis):
    rng = _rng(12)
    x = (rng.standard_normal((300, 333)) * 5).astype(dtype)  # > PARALLEL_MIN_ELEMENTS
    dy = rng.standard_normal((300, 333)).astype(dtype)
    assert x.size >= jitloss.cpu.PARALLEL_MIN_ELEMENTS
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _all_ops(x, dy, axis)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _all_ops(x, dy, axis)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_go_through_in_groups(dtype, monkeypatch):
    # Rows of up to GROUP_ROW_BYTES run G at a time, step by step, their logs in one
    # vectorised loop (cpu/softmax.py, "row groups"): every row position of a group and a
    # partial last group, the non-finite and the confident rows, against the float64
    # reference; in place and allocated, serial and parallel twins, bitwise the same.
    rng = _rng(21)
    itemsize = np.dtype(dtype).itemsize
    for C in (1, 7, jitloss.cpu.GROUP_ROW_BYTES // itemsize):
        G = jitloss.cpu.group_rows(1000, C, itemsize)
        assert G >= 8
        x = (rng.standard_normal((3 * G + 5, C)) * 4).astype(dtype)
        x[1] = -np.inf
        x[G + 2, 0] = np.nan
        x[2 * G - 1, -1] = np.inf
        x[2 * G, 0] = 60.0  # log p of the maximum about -(C - 1) e**-60: kept, not 0
        runs = []
        for parallel_min in (1 << 40, 1):
            monkeypatch.setattr(jitloss.cpu, "PARALLEL_MIN_ELEMENTS", parallel_min)
            in_place = x.copy()
            jitloss.log_softmax(in_place, out=in_place)
            runs.append((jitloss.log_softmax(x), in_place, jitloss.logsumexp(x, axis=-1)))
        for got in runs[1:]:
            for a, b in zip(runs[0], got):
                np.testing.assert_array_equal(a, b)
        logp, in_place, lse = runs[0]
        np.testing.assert_array_equal(logp, in_place)
        fin = np.isfinite(x).all(axis=1)
        assert np.isnan(logp[~fin]).all()
        assert_close(logp[fin], ref.log_softmax(x[fin].astype(np.float64)), dtype)
        assert_close(lse[fin], ref.logsumexp(x[fin].astype(np.float64)), dtype)
        assert lse[1] == -np.inf and np.isnan(lse[G + 2]) and lse[2 * G - 1] == np.inf
        if C > 1:
            assert logp[2 * G, 0] < 0


def test_serial_and_parallel_kernels_agree_bitwise(monkeypatch):
    x = _rng(13).standard_normal((64, 600)).astype(np.float32)
    dy = _rng(14).standard_normal((64, 600)).astype(np.float32)
    monkeypatch.setattr(jitloss.cpu, "PARALLEL_MIN_ELEMENTS", 1 << 40)
    serial = _all_ops(x, dy, -1) + _all_ops(x, dy, 0)
    monkeypatch.setattr(jitloss.cpu, "PARALLEL_MIN_ELEMENTS", 1)
    parallel = _all_ops(x, dy, -1) + _all_ops(x, dy, 0)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_eight_python_threads_at_once():
    rng = _rng(15)
    xs = [rng.standard_normal((200, 500)).astype(np.float32) for _ in range(8)]
    want = [jitloss.softmax(x) for x in xs]
    results = [None] * 8
    errors = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(5):
                results[i] = jitloss.softmax(xs[i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, w in zip(results, want):
        np.testing.assert_array_equal(got, w)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf, np.nan])
def test_bad_temperature(name, bad):
    with pytest.raises(ValueError, match="temperature"):
        getattr(jitloss, name)([1.0, 2.0], temperature=bad)


def test_temperature_of_wrong_type():
    with pytest.raises(TypeError, match="temperature"):
        jitloss.softmax([1.0, 2.0], temperature="hot")


@pytest.mark.parametrize(
    "x", [np.array([1 + 2j]), np.array(["a", "b"]), np.array([object(), 1], dtype=object)]
)
def test_unsupported_dtypes(x):
    with pytest.raises(TypeError, match="x"):
        jitloss.softmax(x)


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_axis_out_of_range(axis):
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        jitloss.softmax(np.zeros((2, 3)), axis=axis)
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        jitloss.logsumexp(np.zeros((2, 3)), axis=axis)



@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "softmax_backward",
                                  "log_softmax_backward"])
def test_zero_dimensional_input_has_no_last_axis(name):
    # the small-call paths must not take a 0-d array (no last axis): AxisError, as NumPy
    fn = getattr(jitloss, name)
    args = (np.array(0.5),) * (2 if name.endswith("backward") else 1)
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        fn(*args)

def test_axis_repeated_or_of_wrong_type():
    with pytest.raises(ValueError, match="axis"):
        jitloss.softmax(np.zeros((2, 3)), axis=(0, 0))
    with pytest.raises(TypeError, match="axis"):
        jitloss.softmax(np.zeros((2, 3)), axis=1.0)


def test_out_of_wrong_shape_or_dtype():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="out"):
        jitloss.softmax(x, out=np.empty((3, 2)))
    with pytest.raises(ValueError, match="out"):
        jitloss.softmax(x, out=np.empty((2, 3), np.float32))
    with pytest.raises(TypeError, match="out"):
        jitloss.softmax(x, out=np.empty((2, 3), np.float32))
    with pytest.raises(TypeError, match="out"):
        jitloss.softmax(x, out=[[0.0] * 3] * 2)
    ro = np.empty((2, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        jitloss.softmax(x, out=ro)
    with pytest.raises(ValueError, match="out"):
        jitloss.logsumexp(x, out=np.empty(3))


def test_backward_shape_mismatch():
    with pytest.raises(ValueError, match="dy"):
        jitloss.softmax_backward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="dy"):
        jitloss.log_softmax_backward(np.zeros(3), np.zeros(4))


def test_b_that_does_not_broadcast():
    with pytest.raises(ValueError, match="b"):
        jitloss.logsumexp(np.zeros((2, 3)), b=np.ones(2))


@pytest.mark.parametrize("axis", [-1, 0])
def test_nan_hidden_behind_an_infinite_maximum(axis):
    # the lane maximum ignores NaN (max_num); rows whose maximum is infinite are scanned
    rows = np.array([[np.nan, -np.inf], [np.nan, np.inf], [-np.inf, -np.inf], [np.inf, 1.0],
                     [np.nan, np.nan]])
    x = rows if axis == -1 else np.ascontiguousarray(rows.T)
    lse = jitloss.logsumexp(x, axis=axis)
    assert np.isnan(lse[0]) and np.isnan(lse[1]) and np.isnan(lse[4])
    assert lse[2] == -np.inf and lse[3] == np.inf
    for fn in (jitloss.softmax, jitloss.log_softmax):
        assert np.isnan(fn(x, axis=axis)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_below_a_finite_maximum_reaches_every_result(dtype):
    # the maximum is finite, the NaN travels through the exponentials and the sums
    x = np.array([[1.0, np.nan, 0.5, -30.0], [2.0, 1.0, 0.0, 3.0]], dtype)
    for fn in (jitloss.softmax, jitloss.log_softmax):
        y = fn(x)
        assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    assert np.isnan(jitloss.logsumexp(x)[0])
    loss, g = jitloss.cross_entropy_with_grad(x, [0, 1], reduction="none")
    assert np.isnan(loss[0]) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
    loss, g = jitloss.cross_entropy_with_grad(x, np.full_like(x, 0.25), reduction="none")
    assert np.isnan(loss[0]) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
