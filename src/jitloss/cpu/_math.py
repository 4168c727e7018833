"""Helpers shared by every CPU kernel: vectorisable ``exp``, ``max`` and ``min``, and the
row and lane primitives (range, sums of exponentials, log-sum-exp) every family uses.

pip's numba has no SVML, so ``math.exp`` inside a loop is a libm call per element and the
loop does not vectorise. ``exp``/``exp_sub`` here are a polynomial with Cody-Waite range
reduction and the exponent written by a bitcast, straight-line code that LLVM turns into
``<8 x float>`` (AVX2) or ``<4 x double>`` operations once inlined into a loop. The row
ranges, reductions, use ``llvm.maximum``/``minimum`` (NaN-propagating); the lane ranges,
elementwise, a cheaper compare and select (NaN-ignoring: a NaN reaches the results
through the exponentials instead). Checked with ``inspect_llvm`` on numba 0.68
(llvmlite 0.50, LLVM 22; znver3): the hot loops of every kernel hold ``<8 x float>``
operations for float32 and ``<4 x double>`` for float64; ``tests/test_math.py`` keeps
that check.  Where the CPU has AVX-512 the loops use 512-bit vectors (``<16 x float>``,
``<8 x double>``): LLVM's tuning for znver4/5 picks them itself, its tuning for Intel Xeons
(skylake-avx512 to emeraldrapids) would keep 256-bit ones, so every function with a loop
asks for the wider ones with ``wide_vectors()`` (10-25% faster kernels on emeraldrapids).

Accuracy (``tests/test_math.py``, against mpmath):

* ``exp(x)``: within 2 ulp for float32 and float64 over the whole range; results
  below the smallest subnormal are 0, above the largest float +inf, NaN gives NaN.
* ``exp_sub(x, m, s)`` = exp((x - m) / T) for x <= m (x a row element, m the row
  maximum; the online lane sums also take x up to ONLINE_LAG * T above m) with ``s`` =
  1/T as a float64 pair (hi, lo): within 2 ulp, with the difference ``x - m`` taken
  exactly (TwoSum) and 1/T carried to twice float64 precision, so neither a float32 row
  with a spread of 80 nor a temperature of 3 loses anything.  Used for every
  exponential, stored or summed: the sums then keep the small terms that a log-softmax
  near probability 1 (or a cross-entropy near 0) is made of.
* ``exp_near(x, m)``: the cheaper twin for float32 rows of spread below 32 at
  temperature 1 (``near_ok``): x - m rounded once (at most 2**-20), so within 1 ulp
  plus 9.5e-7 relative, which keeps float32 results within 2e-6 of exact.  It has no
  underflow clamp (-NEAR32 < x - m <= ONLINE_LAG there; 14% fewer operations): x - m =
  -inf (a lane whose maximum is +inf) gives NaN, in lanes the kernels overwrite with NaN
  anyway.

* ``log1p(u)`` (float64): within 1 ulp (0.94 measured; libm 0.78), straight-line code
  with selects only, so that loops over many rows or lanes (``log1p_rests``) vectorise.
  One row at a time takes libm's (``log1p_rest``), whose latency is lower.

``exp`` and ``exp_sub`` are numba ``overload``s of Python stubs, so a kernel is written
once and the float32 or float64 implementation (constants of the right width, no silent
promotion) is picked at typing time. The overloads only dispatch: an overload's body is
compiled with its caller's fastmath flags, so the arithmetic lives in ``fastmath=False``
njit functions with every fma explicit (re-association would destroy the TwoSum error term
and the rounding by the magic constant). The row primitives are compiled with ``reassoc``
so that their sums vectorise; a float32 sum is taken in float32 over blocks of ``BLOCK``
elements and the block sums are added in float64, so its relative error stays below about
1e-6 for any row length (float64: block sums added in float64).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from . import LANE_ROW_BYTES, LANE_WIDE_BYTES, l2_bytes

__all__ = [
    "BLOCK",
    "always_inline",
    "pairwise_sum",
    "LANE_BLOCK",
    "as_type_of",
    "exp",
    "exp_near",
    "exp_sub",
    "fma",
    "lanes_dot",
    "lanes_exp",
    "lanes_exp_scale",
    "lanes_exp_store",
    "lanes_online_total",
    "lanes_log1p",
    "lanes_range",
    "lanes_rest",
    "lanes_scale",
    "lanes_sum",
    "lanes_sumexp",
    "LANE_TILE",
    "tile_row",
    "wide_piece",
    "lane_block",
    "prefetch_lanes",
    "prefetch_row",
    "AHEAD",
    "log1p",
    "log1p_rest",
    "max_nan",
    "min_nan",
    "max_num",
    "max_span",
    "min_num",
    "near_ok",
    "row_dot",
    "row_dot_block",
    "row_sum_block",
    "aside_row",
    "stack_lanes",
    "borrowed",
    "rows_copy",
    "rows_to_lanes",
    "lanes_to_rows",
    "tile",
    "lanes_of",
    "transpose_block",
    "group_scratch",
    "group_span",
    "log1p_rests",
    "log1p_rest_vec",
    "row_exp",
    "row_exp_sum",
    "row_fill",
    "has_nan",
    "row_lse",
    "row_lse_parts",
    "ONLINE_ROW_BYTES",
    "row_range",
    "row_rest",
    "row_sum",
    "row_sumexp",
    "same_memory",
    "apart",
    "wide_vectors",
]

# --- intrinsics ------------------------------------------------------------------------


@intrinsic
def _bits(typingctx, x):
    """Reinterpret a float32/float64 as int32/int64 (no conversion)."""
    if x == types.float32:
        ret, llty = types.int32, ir.IntType(32)
    elif x == types.float64:
        ret, llty = types.int64, ir.IntType(64)
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llty)

    return ret(x), codegen


def _from_bits_intrinsic(width):
    ftype = types.float32 if width == 32 else types.float64
    llfloat = ir.FloatType() if width == 32 else ir.DoubleType()
    itype = types.int32 if width == 32 else types.int64

    @intrinsic
    def from_bits(typingctx, i):
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], itype)
            return builder.bitcast(v, llfloat)

        return ftype(i), codegen

    return from_bits


_float32_from_bits = _from_bits_intrinsic(32)
_float64_from_bits = _from_bits_intrinsic(64)


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (``llvm.fma``); three operands of one float type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


def _minmax_intrinsic(name):
    @intrinsic
    def minmax(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, sig, args):
            llty = args[0].type
            fnty = ir.FunctionType(llty, [llty, llty])
            fn = builder.module.declare_intrinsic(name, [llty], fnty)
            return builder.call(fn, args, fastmath=("nsz",))

        return a(a, b), codegen

    return minmax


def _prefetch_codegen(context, builder, sig, args):
    # llvm.prefetch of the element args[1:] of the array args[0]: read, keep in all levels
    arrty = sig.args[0]
    arr = context.make_array(arrty)(context, builder, args[0])
    idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:])]
    ptr = cgutils.get_item_pointer(context, builder, arrty, arr, idx, wraparound=False)
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
    fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], fnty)
    builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def _prefetch(typingctx, a3, o, j, k):
    """Hint the cache to fetch the line of a3[o, j, k] (``llvm.prefetch``: read, keep in all
    levels).  A prefetch never faults and loads nothing into registers."""
    if not (isinstance(a3, types.Array) and a3.ndim == 3):
        return None
    return types.none(a3, o, j, k), _prefetch_codegen


@intrinsic
def _prefetch2(typingctx, a2, i, j):
    """_prefetch for a 2-D array: the line of a2[i, j]."""
    if not (isinstance(a2, types.Array) and a2.ndim == 2):
        return None
    return types.none(a2, i, j), _prefetch_codegen


# LLVM's tuning for Intel Xeons with AVX-512 (skylake-avx512 to emeraldrapids) prefers
# 256-bit vectors; clang's -mprefer-vector-width=512 is the function attribute below.  A
# loop is vectorised in the function that holds it, and a helper's loops are vectorised
# before it is inlined, where a caller without the attribute splits them back into 256-bit
# halves: so every kernel function and every helper with a loop starts with wide_vectors().
# Where the CPU has no AVX-512 (or prefers 512 bits already, znver4/5) it changes nothing.
# Measured on emeraldrapids, in-process A/B, float32, 2 threads: see the README.
PREFER_VECTOR_WIDTH = '"prefer-vector-width"="512"'


def _add_fn_attribute(fn, attr: str) -> None:
    # llvmlite's FunctionAttributes only admits the enum attributes it knows; its base is a
    # set whose items are written out as they are, which is how a string attribute gets in
    # (if a later llvmlite changes that, the hint is dropped, never the compilation)
    try:
        set.add(fn.attributes, attr)
        fn.attributes._to_list(fn.return_value.type)
    except Exception:  # pragma: no cover - depends on llvmlite's internals
        set.discard(fn.attributes, attr)


# numba compiles each jitted function on its own and LLVM, linking them, inlines only
# small ones: a row function whose loops have been vectorised (a vector body, its
# epilogues, the runtime alias checks) stays a call per row, with its arrays passed as
# some thirty scalar arguments and its checks and setup run again for every row.  For
# short rows that is most of the time: a softmax_backward row of 32 float32 classes took
# 14 ns as a call and 8 ns inlined (the same loops, the same bits).  The row functions
# that run per row, and the helpers they call per row, start with always_inline(); the
# kernels, the lane blocks (with them inlined the tile kernels took up to 1.13x the time),
# the rows of row_lse_parts over INLINE_LSE_ROW_BYTES (float64 logsumexp and cross_entropy
# at 1000-2000 classes measured 1.02-1.07x inlined, float32 at 1000 0.91-0.97) and
# _log_softmax_out (see there) do not.  Inlined row_lse_parts: logsumexp and cross_entropy
# 0.77-0.92 of the time at 128-256 float32 classes (row groups), 0.91-0.97 at 1000-2000.
# In-process against the calls (float32, 2 threads, znver4, the same bits): softmax 0.85
# of the time at 8192 x 256 and 16384 x 128, 0.93-0.98 at 4096 x 1000; log_softmax 0.85 at
# 256 classes; cross_entropy_with_grad 0.83-0.90 at 128-256, 0.94-0.96 at 1000, with
# probability targets 0.79-0.81 and 0.83-0.93; float64 0.89-1.00; 32000 and 128256
# classes, the row groups and the tiles level (0.97-1.02).  The backward and margin
# kernels: see cpu/softmax.py (INLINE_EXP_ROW_BYTES) and the README.
ALWAYS_INLINE = "alwaysinline"


@intrinsic
def always_inline(typingctx):
    """Have LLVM inline the calling function into every function that calls it (the
    ``alwaysinline`` attribute: its loops keep their own fastmath flags, which numba's
    ``inline="always"`` would replace with the caller's); emits no instruction."""

    def codegen(context, builder, sig, args):
        _add_fn_attribute(builder.function, ALWAYS_INLINE)
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit vectors where the CPU has
    AVX-512 (see PREFER_VECTOR_WIDTH); emits no instruction."""

    def codegen(context, builder, sig, args):
        _add_fn_attribute(builder.function, PREFER_VECTOR_WIDTH)
        return context.get_dummy_value()

    return types.none(), codegen


def _splat(builder, value, width):
    # <width x i64> with every element value (an i64)
    vty = ir.VectorType(value.type, width)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.IntType(32)(0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width))


@intrinsic
def transpose_block(typingctx, src, s0, s_step, dst, d0, d_step, rows, cols):
    """dst.flat[d0 + c * d_step + k] = src.flat[s0 + k * s_step + c] for k < rows and
    c < cols, both at most W = 64 bytes / itemsize (16 float32, 8 float64): a rows x cols
    block of src, transposed into dst (C-contiguous float arrays of one dtype).  Nothing
    else is read or written.

    W masked vector loads (``llvm.masked.load``: the elements past ``cols``, and the rows
    past ``rows``, are never touched), log2(W) rounds of W two-input shuffles that swap
    the off-diagonal blocks of 8, 4, 2 and 1 elements, and W masked stores: about 0.1 ns
    per float32 element on emeraldrapids, where the same transposition as a loop of
    scalar copies took 0.5.
    """
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.layout == "C" and dst.layout == "C" and src.dtype == dst.dtype
            and src.dtype in (types.float32, types.float64)):
        return None
    W = 64 // (4 if src.dtype == types.float32 else 8)
    sig = types.none(src, s0, s_step, dst, d0, d_step, rows, cols)

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ety = context.get_data_type(src.dtype)
        vty, mty = ir.VectorType(ety, W), ir.VectorType(ir.IntType(1), W)
        ity, sty = ir.VectorType(i64, W), ir.VectorType(i32, W)
        pty = vty.as_pointer()
        name = "v%d%s" % (W, "f32" if W == 16 else "f64")
        load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [pty, i32, mty, vty]),
            f"llvm.masked.load.{name}.p0")
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, pty, i32, mty]),
            f"llvm.masked.store.{name}.p0")
        ints = [context.cast(builder, v, t, types.int64)
                for v, t in zip(args[1:3] + args[4:], sig.args[1:3] + sig.args[4:])]
        s0, s_step, d0, d_step, rows, cols = ints
        sdata = context.make_array(sig.args[0])(context, builder, args[0]).data
        ddata = context.make_array(sig.args[3])(context, builder, args[3]).data
        iota = ir.Constant(ity, list(range(W)))
        align = i32(context.get_abi_sizeof(ety))

        def mask(k, n_k, n):
            # elements below n of vector k, if k < n_k (else none)
            live = builder.select(builder.icmp_unsigned("<", i64(k), n_k), n, i64(0))
            return builder.icmp_unsigned("<", iota, _splat(builder, live, W))

        vec = []
        for k in range(W):
            at = builder.gep(sdata, [builder.add(s0, builder.mul(s_step, i64(k)))])
            vec.append(builder.call(load, [builder.bitcast(at, pty), align, mask(k, rows, cols),
                                           ir.Constant(vty, [0.0] * W)]))
        d = W // 2
        while d:  # swap (r, c) and (r ^ d, c ^ d) where bit d of r and c differ
            pick_a = [c if not c & d else W + (c ^ d) for c in range(W)]
            pick_b = [c ^ d if not c & d else W + c for c in range(W)]
            for a in range(W):
                if not a & d:
                    b = a | d
                    va, vb = vec[a], vec[b]
                    vec[a] = builder.shuffle_vector(va, vb, ir.Constant(sty, pick_a))
                    vec[b] = builder.shuffle_vector(va, vb, ir.Constant(sty, pick_b))
            d //= 2
        for c in range(W):
            at = builder.gep(ddata, [builder.add(d0, builder.mul(d_step, i64(c)))])
            builder.call(store, [vec[c], builder.bitcast(at, pty), align, mask(c, cols, rows)])
        return context.get_dummy_value()

    return sig, codegen


max_nan = _minmax_intrinsic("llvm.maximum")
max_nan.__doc__ = "max(a, b) propagating NaN (``llvm.maximum``); reductions over it vectorise."
min_nan = _minmax_intrinsic("llvm.minimum")
min_nan.__doc__ = "min(a, b) propagating NaN (``llvm.minimum``)."
# NaN-ignoring max/min for the lane ranges, elementwise (a NaN then reaches the results
# through the exponentials, see lanes_range): written as a compare and select, which x86
# does in a compare and a masked store (or one vmaxps/vminps), where llvm.maxnum/minnum
# add a NaN fix-up to every one: lane kernels 0-7% faster than with maxnum (float32
# along axis 0 of 1000 x 4096, emeraldrapids, in-process A/B).  In a reduction
# (row_range) llvm.maximum/minimum measured 0.09 ns per float32 element against 0.13 for
# maxnum, which LLVM vectorises with a NaN test that exits to a scalar loop.


@njit
def max_num(a, b):
    """max(a, b) with a NaN b ignored (a is never NaN where it is used)."""
    return b if b > a else a


@njit
def min_num(a, b):
    """min(a, b) with a NaN b ignored (a is never NaN where it is used)."""
    return b if b < a else a


def as_type_of(value, like):  # pragma: no cover - the overload runs in jitted code
    """``value`` converted to the float type of ``like`` (a float scalar or array)."""
    return np.asarray(like).dtype.type(value)


@overload(as_type_of)
def _as_type_of_impl(value, like):
    dt = like.dtype if isinstance(like, types.Array) else like
    if dt == types.float32:
        return lambda value, like: np.float32(value)
    if dt == types.float64:
        return lambda value, like: np.float64(value)
    return None


# --- exp -------------------------------------------------------------------------------
# exp(r) = 1 + r * (1 + r * g(r)) on |r| <= ln2/2 (Horner form, constant and linear terms
# exactly 1), with g a Chebyshev fit (mpmath.chebyfit) of (exp(r) - 1 - r) / r**2: degree 4
# for float32 (|error| 6.5e-8 * r**2 <= 0.07 ulp), degree 9 for float64 (|error| 1.1e-16 *
# r**2 <= 0.13 ulp).  Coefficients from the highest degree down.
_G32 = (
    0.0013926176119935578884,
    0.0083631730745137109028,
    0.041666554662050533982,
    0.1666657702559798819,
    0.5,
)
_G64 = (
    2.5100375832561233664e-8,
    2.7620075879983366586e-7,
    2.7557268480310025526e-6,
    0.000024801521322368693266,
    0.00019841269863040545271,
    0.0013888888917196719077,
    0.0083333333333300644495,
    0.041666666666624161903,
    0.16666666666666667452,
    0.50000000000000010211,
)
# ln2 split so that n * LN2_HI is exact for every n that occurs (|n| <= 150 / 1076).
_LN2_HI32 = np.float32(0.693145751953125)  # 15 significant bits
_LN2_LO32 = np.float32(1.428606765330187045e-06)
_LN2_HI64 = 0.6931471803691238  # 32 significant bits
_LN2_LO64 = 1.9082149292705877e-10
_LOG2E = 1.4426950408889634
# Rounding to an integer by adding 1.5 * 2**p (p = mantissa bits): the low bits of the sum's
# bit pattern are then the integer itself, so there is no float->int conversion (and no
# poison value on NaN).
_MAGIC32 = np.float32(12582912.0)
_MAGIC64 = 6755399441055744.0
_MAGIC32_BITS = int(np.float32(_MAGIC32).view(np.int32))
_MAGIC64_BITS = int(np.float64(_MAGIC64).view(np.int64))
# Below LO the result rounds to 0, above HI it is +inf (this also keeps n in range).
_LO32, _HI32 = np.float32(-104.0), np.float32(89.0)
_LO64, _HI64 = -746.0, 710.0
# exp_sub computes (2**-K * exp(r)) * 2**(n + K): n + K stays a normal exponent down to the
# underflow limit, the coefficients scaled by 2**-K are exact, and the one multiply rounds
# a subnormal result correctly.
_K32, _K64 = 24, 54
_ZERO32, _ONE32, _INF32 = np.float32(0.0), np.float32(1.0), np.float32(np.inf)


@njit(fastmath=False)
def _poly32(r, c):
    # c * exp(r) for |r| <= ln2/2; c is a power of two (constant-folded into the coefficients)
    a4, a3, a2, a1, a0 = _G32
    q = fma(np.float32(a4 * c), r, np.float32(a3 * c))
    q = fma(fma(fma(q, r, np.float32(a2 * c)), r, np.float32(a1 * c)), r, np.float32(a0 * c))
    return fma(fma(q, r, np.float32(c)), r, np.float32(c))


@njit(fastmath=False)
def _poly64(r, c):
    a9, a8, a7, a6, a5, a4, a3, a2, a1, a0 = _G64
    q = fma(fma(fma(a9 * c, r, a8 * c), r, a7 * c), r, a6 * c)
    q = fma(fma(fma(fma(q, r, a5 * c), r, a4 * c), r, a3 * c), r, a2 * c)
    q = fma(fma(q, r, a1 * c), r, a0 * c)
    return fma(fma(q, r, c), r, c)


@njit(fastmath=False)
def _exp32(x):
    t = fma(x, np.float32(_LOG2E), _MAGIC32)  # n = round(x / ln2) in the low bits of t
    nf = t - _MAGIC32
    r = fma(-nf, _LN2_LO32, fma(-nf, _LN2_HI32, x))
    n = _bits(t) - _MAGIC32_BITS
    n1 = n >> 1  # 2**n as two factors: each stays a normal number
    y = _poly32(r, 1.0) * _float32_from_bits((n1 + 127) << 23)
    y = y * _float32_from_bits((n - n1 + 127) << 23)
    y = _ZERO32 if x < _LO32 else y
    return _INF32 if x > _HI32 else y


@njit(fastmath=False)
def _exp64(x):
    t = fma(x, _LOG2E, _MAGIC64)
    nf = t - _MAGIC64
    r = fma(-nf, _LN2_LO64, fma(-nf, _LN2_HI64, x))
    n = _bits(t) - _MAGIC64_BITS
    n1 = n >> 1
    y = _poly64(r, 1.0) * _float64_from_bits((n1 + 1023) << 52)
    y = y * _float64_from_bits((n - n1 + 1023) << 52)
    y = 0.0 if x < _LO64 else y
    return math.inf if x > _HI64 else y


# error_model="numpy": s > 0 always, and the division in the clamp must not be a path that
# raises (see _per_line)
@njit(fastmath=False, error_model="numpy")
def _exp_sub32(x, m, s, s_lo):
    hi = x - m  # TwoSum: x - m == hi + lo exactly
    z = hi - x
    lo = (x - (hi - z)) + (-m - z)
    lowest = _LO32 / s  # (x - m) * s below LO gives 0; clamping keeps n >= -150
    inside = not (hi < lowest)  # NaN stays NaN
    hi = hi if inside else lowest
    lo = lo if inside else _ZERO32  # also drops the NaN TwoSum gives for x = -inf
    t = fma(hi, s * np.float32(_LOG2E), _MAGIC32)
    nf = t - _MAGIC32
    r = fma(hi, s, -(nf * _LN2_HI32))  # one rounding: nf * _LN2_HI32 is exact
    r = fma(hi, s_lo, r)  # (hi + lo) * (s + s_lo): 1/T carried to twice the precision
    r = fma(-nf, _LN2_LO32, r)
    r = fma(lo, s, r)
    scale = _float32_from_bits(_bits(t) + (_K32 + 127 - _MAGIC32_BITS) << 23)
    return _poly32(r, 2.0**-_K32) * scale


@njit(fastmath=False, error_model="numpy")
def _exp_sub64(x, m, s, s_lo):
    hi = x - m
    z = hi - x
    lo = (x - (hi - z)) + (-m - z)
    lowest = _LO64 / s
    inside = not (hi < lowest)
    hi = hi if inside else lowest
    lo = lo if inside else 0.0
    t = fma(hi, s * _LOG2E, _MAGIC64)
    nf = t - _MAGIC64
    r = fma(hi, s, -(nf * _LN2_HI64))
    r = fma(hi, s_lo, r)
    r = fma(-nf, _LN2_LO64, r)
    r = fma(lo, s, r)
    scale = _float64_from_bits(_bits(t) + (_K64 + 1023 - _MAGIC64_BITS) << 52)
    return _poly64(r, 2.0**-_K64) * scale


# The public names are overloads that only pick the implementation by type: an overload's
# body is compiled with its caller's fastmath flags, a called njit function with its own, so
# all the arithmetic above lives in fastmath=False functions.


def exp(x):  # pragma: no cover - the overload runs in jitted code
    """exp(x) for a float32 or float64 scalar, within 2 ulp over the whole range."""
    return math.exp(x)


@overload(exp)
def _exp_impl(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


def exp_sub(x, m, s):  # pragma: no cover - the overload runs in jitted code
    """exp((x - m) * s) for x <= m (m the row maximum, finite) and s > 0; x not NaN.

    ``s`` is the inverse temperature as a pair of float64 ``(hi, lo)`` with hi + lo = 1/T
    to twice float64 precision (``jitloss._args.check_temperature``), and x - m is taken
    exactly (TwoSum), so the result is within 2 ulp of exp((x - m) / T) however far x lies
    below m.  Use it for values that are stored (softmax, gradients).
    """
    return math.exp((x - m) * (s[0] + s[1]))


@overload(exp_sub)
def _exp_sub_impl(x, m, s):
    if x == types.float32:

        def exp_sub32(x, m, s):
            hi = np.float32(s[0])
            lo = np.float32((s[0] - np.float64(hi)) + s[1])
            return _exp_sub32(x, np.float32(m), hi, lo)

        return exp_sub32
    if x == types.float64:
        return lambda x, m, s: _exp_sub64(x, np.float64(m), s[0], s[1])
    return None


@njit(fastmath=False)
def _exp_near32(x, m):
    # exp(x - m), temperature 1, x - m rounded once: for m - x < NEAR32 the rounding is at
    # most 2**-20 (half an ulp below 32), so the result is within 1 ulp + 9.5e-7 relative
    hi = x - m  # no clamp: callers admit only -NEAR32 < x - m <= ONLINE_LAG (or NaN)
    t = fma(hi, np.float32(_LOG2E), _MAGIC32)
    nf = t - _MAGIC32
    r = fma(-nf, _LN2_LO32, fma(-nf, _LN2_HI32, hi))
    scale = _float32_from_bits(_bits(t) + (_K32 + 127 - _MAGIC32_BITS) << 23)
    return _poly32(r, 2.0**-_K32) * scale


NEAR32 = 32.0  # a float32 row whose spread max - min is below this may use exp_near


def exp_near(x, m):  # pragma: no cover - the overload runs in jitted code
    """exp(x - m) for float32 rows that ``near_ok`` admits (float64: ``exp_sub``)."""
    return math.exp(x - m)


@overload(exp_near)
def _exp_near_impl(x, m):
    if x == types.float32:
        return lambda x, m: _exp_near32(x, np.float32(m))
    if x == types.float64:
        return lambda x, m: _exp_sub64(x, np.float64(m), 1.0, 0.0)
    return None


def near_ok(m, low, s):  # pragma: no cover - the overload runs in jitted code
    """True if a row of maximum m and minimum low may use ``exp_near`` instead of the exact
    ``exp_sub``: float32, temperature 1, spread below NEAR32.  Without TwoSum and the
    double-double 1/T an exponential costs about a third fewer operations; the float32
    results stay within 2e-6 of exact (the float64 kernels always take exp_sub)."""
    return False


@njit
def near_spread(m, low):
    """near_ok's bound on a float32 row's spread, alone (lanes_range checks the rest once
    per block)."""
    return m - low < NEAR32


@overload(near_ok)
def _near_ok_impl(m, low, s):
    if m == types.float32:
        return lambda m, low, s: s[0] == 1.0 and s[1] == 0.0 and near_spread(m, low)
    return lambda m, low, s: False


# The lane blocks' choice of exponential (lanes_range): every lane exp_near, every lane
# exp_sub, or each lane its own (_lane_exp_mixed, _lane_terms_mixed: twice the
# exponentials, in the rare block that mixes float32 lanes of spread below NEAR32 with
# wider ones).
NEAR_NONE, NEAR_ALL, NEAR_MIXED = 0, 1, 2


# --- log1p -----------------------------------------------------------------------------
# log1p(u) = k ln2 + log(F) + c / a, with a = 1 + u rounded and c = (1 + u) - a exactly
# (TwoSum), a = 2**k F, F = 1 + f in [sqrt(1/2), sqrt(2)) (f exact); and log(1 + f) =
# 2 atanh(s) = f - (f**2/2 - s (f**2/2 + R)), s = f / (2 + f), R = sum_n 2 s**(2n) / (2n + 1).
# |s| <= 0.172, so nine terms of the series leave under 0.02 ulp.  Within 1 ulp of mpmath
# (0.94 measured; libm 0.78), and straight-line code with selects only, so that a loop
# over the samples of a lane block vectorises (pip's numba has no SVML: math.log1p is a
# libm call per element, 12.5 ns against 2.1 ns vectorised on emeraldrapids).
_SQRT_HALF_BITS = int(np.float64(math.sqrt(0.5)).view(np.int64))
_ATANH64 = tuple(2.0 / (2 * n + 1) for n in range(9, 0, -1))  # highest power first


@njit(fastmath=False)
def _atanh_series(z):
    c9, c8, c7, c6, c5, c4, c3, c2, c1 = _ATANH64
    q = ((((c9 * z + c8) * z + c7) * z + c6) * z + c5) * z + c4
    return (((q * z + c3) * z + c2) * z + c1) * z


@njit(fastmath=False, error_model="numpy")
def log1p(u):
    """log(1 + u) for a float64 u (-1 -> -inf, below -1 NaN), within 1 ulp; vectorises."""
    a = 1.0 + u
    t = a - 1.0
    c = (1.0 - (a - t)) + (u - t)
    ab = _bits(a)
    k = (ab - _SQRT_HALF_BITS) >> 52  # a = 2**k F, F in [sqrt(1/2), sqrt(2)); a >= 2**-53
    f = _float64_from_bits(ab - (k << 52)) - 1.0
    hf = 0.5 * f * f
    s = f / (2.0 + f)
    R = _atanh_series(s * s)
    kf = np.float64(k)
    r = kf * _LN2_HI64 - ((hf - (s * (hf + R) + (kf * _LN2_LO64 + c / a))) - f)
    r = r if a < math.inf else u  # +inf, NaN
    r = -math.inf if a == 0.0 else r
    return math.nan if a < 0.0 else r


# --- row primitives --------------------------------------------------------------------
# A "row" is row i of a C-contiguous 2-D array (samples, classes): the primitives take the
# array and the index, never a view of the row.  A view in a loop body costs two atomic
# updates of the parent array's reference count, and when two threads do that on the same
# array the cache line bounces between the cores: a view per row (or per block of a row)
# cost more than the arithmetic on short rows.  Inner loops start from 0 (or run over
# b0 + jj with both provably >= 0), so numba's negative-index checks vanish and the loops
# vectorise.
#
# "Lanes" are the strided layout: x3[o, :, i0:i0 + w] of a C-contiguous (outer, classes,
# inner) array, w samples side by side.  The lane offset i0 and the lane index are
# unsigned (uint64), again so that no negative-index check stands in the way; the loops run
# over the w contiguous lanes and vectorise.
#
# A loop that stores and also reduces never reads the memory it writes (aside_row copies
# an in-place row first): with out aliasing x LLVM's vectorised loop falls back to its
# scalar version, which sums in another order.  An elementwise loop may alias: its scalar
# fallback gives the same bits.  Only
# re-association (which lets sums vectorise), no contraction to fma (explicit fma only):
# whether LLVM contracts depends on the code path it picks, and results must not.
_REDUCE = {"reassoc"}
# float32 partial sums run over at most BLOCK terms before going to float64.  A vectorised
# sum keeps 32 (AVX2) or 64 (AVX-512) partial sums, so each adds at most 32 terms; blocks of
# 256 (each only 4 vector iterations on AVX-512, then a horizontal sum) measured 3-10%
# slower for 1000-class rows, with the same worst float32 softmax error (8.7e-7).
BLOCK = 1024
# A lane adds its terms one after another (a row's vectorised sum keeps dozens of partial
# sums), so lane sums go to float64 every LANE_BLOCK terms: after 256 the float32 softmax
# along axis 0 of 1000 classes was off by up to 2.4e-6 (target 2e-6), after 16 by 1.2e-6
# like the rows.
LANE_BLOCK = 16


# Rows of up to half the L2 cache take two passes (range, then sums: the second from L2);
# longer ones are read once, online (row_lse_parts).  Measured on 32 x 128256 float32 (513
# KB rows) logsumexp: on znver3 (512 KB L2) online 6-18% faster, on znver5 (1 MB L2) two
# passes 22% faster.  A constant of the machine, compiled into the kernels: both paths are
# exact to the same bound, they may differ in the last bit.
ONLINE_ROW_BYTES = l2_bytes() // 2
INLINE_LSE_ROW_BYTES = 4096
ONLINE_CHUNK = 4096  # elements per online chunk (16 KiB of float32: the range leaves it in L1)
_U0, _U1 = np.uint64(0), np.uint64(1)
_UBLOCK, _UCHUNK = np.uint64(BLOCK), np.uint64(ONLINE_CHUNK)


@njit(fastmath=_REDUCE)
def row_dot(a2, b2, i):
    """sum_j a2[i, j] * b2[i, j] in float64 (float32 products summed in blocks)."""
    wide_vectors()
    n = a2.shape[1]
    total = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        part = as_type_of(0.0, a2)
        for jj in range(min(BLOCK, n - b0)):
            part += a2[i, b0 + jj] * b2[i, b0 + jj]
        total += part
    return total


@njit(fastmath=_REDUCE)
def row_dot_block(a2, b2, i):
    """row_dot of a row of at most BLOCK elements (the same bits, in one loop)."""
    wide_vectors()
    always_inline()
    part = as_type_of(0.0, a2)
    for j in range(a2.shape[1]):
        part += a2[i, j] * b2[i, j]
    return 0.0 + part


@njit(fastmath=_REDUCE)
def row_sum_block(a2, i):
    """row_sum of a row of at most BLOCK elements (the same bits, in one loop)."""
    wide_vectors()
    always_inline()
    part = as_type_of(0.0, a2)
    for j in range(a2.shape[1]):
        part += a2[i, j]
    return 0.0 + part


@njit(fastmath=_REDUCE)
def row_sum(a2, i):
    """sum_j a2[i, j] in float64 (float32 terms summed in blocks)."""
    wide_vectors()
    n = a2.shape[1]
    total = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        part = as_type_of(0.0, a2)
        for jj in range(min(BLOCK, n - b0)):
            part += a2[i, b0 + jj]
        total += part
    return total


# "mean" and "sum" add the float64 per-sample losses in NumPy's pairwise order: what
# np.add.reduce does for a contiguous array (0.0 plus: eight running sums over a block of
# up to PAIRWISE_BLOCK terms, the rest one by one; longer spans split in two halves whose
# sizes are multiples of 8).  The same bits as .sum(), in a compiled call of about 0.2 us
# instead of about 1 us for np.add.reduce (a 14-class cross_entropy takes 4-5 us).
PAIRWISE_BLOCK = 128


@njit(cache=True)
def pairwise_sum(a):
    """0.0 + the pairwise sum of the 1-D float64 array ``a`` (np.add.reduce's bits)."""
    wide_vectors()
    n = a.shape[0]
    if n <= PAIRWISE_BLOCK:
        return 0.0 + _pairwise_block(a, 0, n)
    # NumPy recurses: sum(lo, n) = sum(lo, h) + sum(lo + h, n - h), h = n // 2 rounded
    # down to a multiple of 8.  The same order with a stack of spans (a recursive function
    # would do, but numba's cache loads recursive functions wrongly, and they crash).
    # Each span is (lo, n, phase): phase 0 has summed neither half yet, 1 the first half.
    lo_ = np.empty(64, np.int64)
    n_ = np.empty(64, np.int64)
    phase = np.empty(64, np.int64)
    vals = np.empty(64, np.float64)
    lo_[0], n_[0], phase[0] = 0, n, 0
    sp, nv = 1, 0
    while sp > 0:
        lo, m, ph = lo_[sp - 1], n_[sp - 1], phase[sp - 1]
        h = m // 2 - (m // 2) % 8
        if m <= PAIRWISE_BLOCK:
            vals[nv] = _pairwise_block(a, lo, m)
            nv += 1
            sp -= 1
        elif ph == 0:
            phase[sp - 1] = 1
            lo_[sp], n_[sp], phase[sp] = lo, h, 0
            sp += 1
        elif ph == 1:
            phase[sp - 1] = 2
            lo_[sp], n_[sp], phase[sp] = lo + h, m - h, 0
            sp += 1
        else:  # both halves summed: their values are the top two
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            sp -= 1
    return 0.0 + vals[0]


@njit
def _pairwise_block(a, lo, n):
    wide_vectors()
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(fastmath=_REDUCE)
def row_range(x2, i):
    """(max, min) of row i in one pass; either is NaN if the row holds a NaN.

    Every caller treats a maximum that is not finite (+inf, all -inf, NaN) as a row of
    NaN results (logsumexp tells -inf, +inf and NaN apart with ``has_nan``), which is what
    a NaN anywhere in a row gives anyway: it reaches every result through the sum.
    """
    always_inline()
    return _range_span(x2, i, _U0, uint64(x2.shape[1]))


@njit(fastmath=_REDUCE)
def _range_span(x2, i, j0, n):
    # row_range over x2[i, j0:j0 + n] (j0 and n uint64)
    wide_vectors()
    always_inline()
    m = as_type_of(-np.inf, x2)
    low = as_type_of(np.inf, x2)
    for jj in range(n):
        v = x2[i, j0 + jj]
        m = max_nan(m, v)
        low = min_nan(low, v)
    return m, low


@njit(fastmath=_REDUCE)
def max_span(x2, i, j0, n):
    """max of x2[i, j0:j0 + n] (NaN-propagating; -inf if n == 0).  j0 and n are uint64: with
    a signed start LLVM cannot rule out a negative (wrapped-around) index and, on znver5
    (AVX-512), left such a loop scalar (0.8 against 0.12 ns per float32 element)."""
    wide_vectors()
    always_inline()
    m = as_type_of(-np.inf, x2)
    for jj in range(n):
        m = max_nan(m, x2[i, j0 + jj])
    return m


@njit
def row_fill(a2, i, value):
    """a2[i, :] = value (the NaN rows of non-finite inputs, the zero rows of gradients)."""
    wide_vectors()
    always_inline()
    v = as_type_of(value, a2)
    for j in range(a2.shape[1]):
        a2[i, j] = v


@njit
def has_nan(x1):
    """True if the 1-D array holds a NaN (for the rare rows whose maximum is not finite)."""
    wide_vectors()
    for j in range(x1.shape[0]):
        if x1[j] != x1[j]:
            return True
    return False


@njit(fastmath=_REDUCE)
def row_exp(x2, k, m, s, out2, i, near):
    """out2[i, j] = exp((x2[k, j] - m) * s).  ``near``: see near_ok.  Row k of x2 may be row
    i of out2 (the same bits), but LLVM's vectorised loop checks that the two do not
    overlap and runs its scalar version when they do: in place, pass aside_row's copy."""
    wide_vectors()
    always_inline()
    if near:
        for j in range(x2.shape[1]):
            out2[i, j] = exp_near(x2[k, j], m)
    else:
        for j in range(x2.shape[1]):
            out2[i, j] = exp_sub(x2[k, j], m, s)


@njit
def apart(a, b):
    """True if the C-contiguous arrays a and b share no byte.  The small-call kernels copy
    an input they read after writing rows of their output (labels, targets) when it is
    not apart from it: the check costs nothing here, where np.may_share_memory in the
    public layer took 0.45 us of a 5 us call."""
    pa, pb = a.ctypes.data, b.ctypes.data
    return pa + a.size * a.itemsize <= pb or pb + b.size * b.itemsize <= pa


@njit
def same_memory(a, b):
    """True if arrays a and b start at the same address: an output passed as its input (in
    place).  The public layer gives the kernels outputs that are their input or share no
    memory with it (``jitloss._args.writes_through``)."""
    return a.ctypes.data == b.ctypes.data


@intrinsic
def _borrowed_array(typingctx, a):
    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        view = context.make_array(sig.return_type)(context, builder)
        context.populate_array(view, data=src.data, shape=src.shape, strides=src.strides,
                               itemsize=src.itemsize, meminfo=None)  # no owner: no counts
        return view._getvalue()

    return a(a), codegen


def borrowed(a):  # pragma: no cover - the overload runs in jitted code
    """A view of array ``a`` that carries no reference count (other values unchanged).

    numba increments and decrements the reference count of each array argument of a call
    it does not inline, atomically, and a row function takes two to four arrays: seven
    atomic operations a row, 40-50 ns, half the time of a 16- or 32-class softmax row on
    one thread (emeraldrapids).  The parallel kernels' loop bodies already receive arrays
    without a count, so only serial loops need this.  Use it only for a kernel's own
    arguments, which outlive the call, and never return such a view.
    """
    return a


@overload(borrowed)
def _borrowed_impl(a):
    if isinstance(a, types.Array):
        return lambda a: _borrowed_array(a)
    return lambda a: a


STACK_ROW_BYTES = 16 << 10  # rows up to this size are copied to the stack (aside_row)
LANE_STACK_BYTES = LANE_WIDE_BYTES  # a lane block's piece of a class row (stack_lanes)


def _stack_buffer(context, builder, dtype, nbytes):
    # A pointer to nbytes of dtype in the calling function's frame: an alloca in its entry
    # block, so a loop that asks for it does not grow the stack; no owner, so no counts
    llty = context.get_data_type(dtype)
    buf = cgutils.alloca_once(builder, llty, size=nbytes // context.get_abi_sizeof(llty))
    buf.align = 64
    return buf


@intrinsic
def _stack_row(typingctx, like):
    # A (1, like.shape[1]) C-contiguous array of like's dtype in STACK_ROW_BYTES on the
    # caller's stack (_stack_buffer).  The caller checks that the row fits and never lets
    # the array outlive its frame.
    ret = types.Array(like.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        intp = context.get_value_type(types.intp)
        itemsize = intp(context.get_abi_sizeof(context.get_data_type(like.dtype)))
        n = builder.extract_value(src.shape, 1)
        view = context.make_array(ret)(context, builder)
        context.populate_array(
            view, data=_stack_buffer(context, builder, like.dtype, STACK_ROW_BYTES),
            shape=[intp(1), n], strides=[builder.mul(n, itemsize), itemsize],
            itemsize=itemsize, meminfo=None)
        return view._getvalue()

    return ret(like), codegen


@intrinsic
def stack_lanes(typingctx, like):
    # A pointer to LANE_STACK_BYTES of like's dtype on the caller's stack (_stack_buffer),
    # for a lane block's piece of a class row (at most LANE_WIDE_BYTES).  A pointer, not an
    # array: an array value would bring reference counting (a decref, even of nothing) into
    # the lane helpers, which must have none (see _per_line).
    def codegen(context, builder, sig, args):
        return _stack_buffer(context, builder, like.dtype, LANE_STACK_BYTES)

    return types.CPointer(like.dtype)(like), codegen


@njit(inline="always")
def aside_row(x2, i):
    """Row i of x2 as a (1, classes) array of its own: the source of row_exp_sum in place.
    Reading the memory it writes, a loop that also sums runs LLVM's scalar fallback, which
    sums in another order: the copy keeps in-place results bitwise equal to allocated ones.

    Rows of up to STACK_ROW_BYTES are copied to the stack: an allocation per row made a
    short in-place softmax or cross-entropy gradient take 1.5-2x the time of one into new
    memory (65536 x 32 float32), and a stack row carries no reference count.  Inlined into
    the caller by numba (``inline="always"``), so that the stack is the caller's frame:
    use the copy in the function that calls this, and never return it.
    """
    wide_vectors()
    if x2.shape[1] * x2.itemsize <= STACK_ROW_BYTES:
        src = _stack_row(x2)
    else:
        src = np.empty((1, x2.shape[1]), x2.dtype)
    for j in range(x2.shape[1]):
        src[0, j] = x2[i, j]
    return src


@njit
def rows_copy(x2, r0, g):
    """Rows r0 to r0 + g - 1 of x2 as a (g, classes) array of its own (see aside_row)."""
    wide_vectors()
    src = np.empty((g, x2.shape[1]), x2.dtype)
    for q in range(g):
        for j in range(x2.shape[1]):
            src[q, j] = x2[r0 + q, j]
    return src


@njit
def group_scratch(n, like):
    """The row-group kernels' scratch, n each: (maxima in like's dtype, rest, ties and
    logs in float64)."""
    f64 = np.float64
    return np.empty(n, like.dtype), np.empty(n, f64), np.empty(n, f64), np.empty(n, f64)


@njit
def group_span(t, G, n):
    """(r0, g) of row group t: first row and row count (groups of G rows of n)."""
    r0 = t * G
    return r0, min(G, n - r0)


@njit
def rows_to_lanes(x2, r0, T):
    """Rows r0 .. r0 + g - 1 of the C-contiguous x2 into the lanes of the (1, classes, R)
    tile T (T[0, j, q] = x2[r0 + q, j], g = min(R, rows - r0)), in transpose_block's
    blocks; returns g."""
    wide_vectors()
    C = x2.shape[1]
    R = T.shape[2]
    W = 64 // x2.itemsize
    g = min(R, x2.shape[0] - r0)
    for q in range(0, g, W):
        for j in range(0, C, W):
            transpose_block(x2, (r0 + q) * C + j, C, T, j * R + q, R, min(W, g - q), min(W, C - j))
    return g


@njit
def lanes_to_rows(U, out2, r0, g):
    """rows_to_lanes backwards: out2[r0 + q, j] = U[0, j, q] for q < g."""
    wide_vectors()
    C = out2.shape[1]
    R = U.shape[2]
    W = 64 // out2.itemsize
    for q in range(0, g, W):
        for j in range(0, C, W):
            transpose_block(U, j * R + q, R, out2, (r0 + q) * C + j, C, min(W, C - j),
                            min(W, g - q))


@njit
def tile(rows, R, like):
    """A (1, classes, min(R, rows)) tile of like's dtype for short rows taken R at a time as
    lanes (rows_to_lanes)."""
    return np.empty((1, like.shape[1], min(R, rows)), like.dtype)


@njit
def lanes_of(a1, r0, g):
    """a1[r0:r0 + g] as the (1, g) array that a lane block indexes [0, k] (the per-sample
    arrays of the rows in a tile: targets, scales, losses)."""
    return a1[r0:r0 + g].reshape((1, g))


@njit
def log1p_rests(rest, ties, n, L):
    """L[q] = log1p_rest(rest[q], ties[q]) for q < n, in a loop of its own: it vectorises,
    where the per-sample loops that use it (labels, branches) do not."""
    wide_vectors()
    for q in range(n):
        L[q] = log1p_rest_vec(rest[q], ties[q])


@njit(fastmath=_REDUCE)
def row_exp_sum(x2, k, m, s, out2, i, near):
    """out2[i, j] = exp((x2[k, j] - m) * s), and their sum in float64 (float32 terms summed
    in blocks), in one loop; row k of x2 must not be row i of out2 (see aside_row).

    One loop instead of storing, then summing the stored row (float32 softmax, 2 threads,
    emeraldrapids): 0.96 of the time at 128 x 1000, 0.93 at 4096 x 1000, 0.82 at 65536 x
    64.  The same fusion for (rest, ties), a compare and two selects more per term,
    measured 1.01-1.06 for log_softmax: it takes this sum instead (see _log_softmax_row).
    """
    wide_vectors()
    always_inline()
    n = x2.shape[1]
    total = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        part = as_type_of(0.0, x2)
        if near:
            for jj in range(min(BLOCK, n - b0)):
                t = exp_near(x2[k, b0 + jj], m)
                out2[i, b0 + jj] = t
                part += t
        else:
            for jj in range(min(BLOCK, n - b0)):
                t = exp_sub(x2[k, b0 + jj], m, s)
                out2[i, b0 + jj] = t
                part += t
        total += part
    return total


@njit(fastmath=_REDUCE)
def row_sumexp(x2, i, m, s, near):
    """(rest, ties): sum of exp((x - m) * s) over x < m (NaN included), count of x == m.

    Keeping the terms equal to 1 out of the sum lets log1p_rest form log(sum) without
    losing the small terms (log_softmax near probability 1, cross-entropy near 0).
    """
    always_inline()
    return _sumexp_span(x2, i, _U0, uint64(x2.shape[1]), m, s, near)


@njit(fastmath=_REDUCE)
def _sumexp_span(x2, i, j0, n, m, s, near):
    # row_sumexp over x2[i, j0:j0 + n] (j0 and n uint64)
    wide_vectors()
    always_inline()
    zero = as_type_of(0.0, x2)
    one = as_type_of(1.0, x2)
    rest = 0.0
    ties = 0.0
    for b in range((n + _UBLOCK - _U1) // _UBLOCK):
        b0 = j0 + b * _UBLOCK
        part = zero
        count = zero
        if near:
            for jj in range(min(_UBLOCK, n - b * _UBLOCK)):
                v = x2[i, b0 + jj]
                t = exp_near(v, m)  # before the condition: see _terms_tile
                below = not (v >= m)  # NaN counts as a term, and makes the sum NaN
                part += t if below else zero
                count += zero if below else one
        else:
            for jj in range(min(_UBLOCK, n - b * _UBLOCK)):
                v = x2[i, b0 + jj]
                t = exp_sub(v, m, s)
                below = not (v >= m)
                part += t if below else zero
                count += zero if below else one
        rest += part
        ties += count
    return rest, ties


@njit(fastmath=_REDUCE)
def row_rest(e2, i):
    """(rest, ties) as row_sumexp gives them, from stored e2[i, j] = exp((x - m) * s).

    The maximum gives exactly 1; a term that rounds to 1 without being maximal counts as
    a tie, an error below one ulp of a sum that is then at least 2.
    """
    wide_vectors()
    always_inline()
    n = e2.shape[1]
    zero = as_type_of(0.0, e2)
    one = as_type_of(1.0, e2)
    rest = 0.0
    ties = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):
        b0 = b * BLOCK
        part = zero
        count = zero
        for jj in range(min(BLOCK, n - b0)):
            v = e2[i, b0 + jj]
            below = not (v >= one)  # a NaN term makes the sum NaN
            part += v if below else zero
            count += zero if below else one
        rest += part
        ties += count
    return rest, ties


@njit
def log1p_rest(rest, ties):
    """log(sum_j exp(d_j)) from row_sumexp's (rest, ties): log1p of the terms beyond one.

    libm's log1p: for one row at a time its latency is what counts, and the polynomial
    ``log1p`` (a division and a nine-term series in a chain) measured 30-45 ns a row slower
    there; loops over many rows or lanes take log1p_rests."""
    return math.log1p(rest + (ties - 1.0))


@njit
def log1p_rest_vec(rest, ties):
    """log1p_rest with the vectorisable ``log1p`` (for loops over rows or lanes)."""
    return log1p(rest + (ties - 1.0))


@njit(fastmath=_REDUCE)
def row_lse_parts(x2, i, s):
    """(m, rest, ties) of row i: m its maximum (NaN if it holds one) and, when m is finite,
    row_sumexp's (rest, ties) against m; otherwise (m, 0, 0).

    A row of up to ONLINE_ROW_BYTES (it fits in L2) takes two passes, row_range then
    row_sumexp.  A longer one is read once, ONLINE_CHUNK elements at a time: the chunk's
    range, then its terms against the maximum so far, the sums so far rescaled by
    exp((m_old - m_new) s) in float64 when the maximum grows (the online softmax).  The
    second trip through L3 it saves measured 6-18% of a float32 logsumexp of 32 x 128256.
    Rows of up to INLINE_LSE_ROW_BYTES are taken where it is called (inlined), longer ones
    in a call of their own (_row_lse_long).
    """
    wide_vectors()
    always_inline()
    if x2.shape[1] * x2.itemsize <= INLINE_LSE_ROW_BYTES:
        return _row_lse_two_pass(x2, i, s)
    return _row_lse_long(x2, i, s)


@njit(fastmath=_REDUCE)
def _row_lse_two_pass(x2, i, s):
    # row_lse_parts of a row of up to ONLINE_ROW_BYTES
    wide_vectors()
    always_inline()
    m, low = row_range(x2, i)
    if not math.isfinite(m):
        return m, 0.0, 0.0
    rest, ties = row_sumexp(x2, i, m, s, near_ok(m, low, s))
    return m, rest, ties


@njit(fastmath=_REDUCE)
def _row_lse_long(x2, i, s):
    # row_lse_parts of a row longer than INLINE_LSE_ROW_BYTES: a call, two passes up to
    # ONLINE_ROW_BYTES, then read once
    wide_vectors()
    if x2.shape[1] * x2.itemsize <= ONLINE_ROW_BYTES:
        return _row_lse_two_pass(x2, i, s)
    n = uint64(x2.shape[1])
    top = as_type_of(-np.inf, x2)  # the maximum, NaN-propagating, as row_range gives it
    m = as_type_of(-np.inf, x2)  # the largest finite chunk maximum so far
    rest = 0.0
    ties = 0.0
    for c in range((n + _UCHUNK - _U1) // _UCHUNK):
        c0 = c * _UCHUNK
        cn = min(_UCHUNK, n - c0)
        cm, low = _range_span(x2, i, c0, cn)
        top = max_nan(top, cm)
        if not math.isfinite(top) or cm == -np.inf:
            continue  # the result is NaN or +inf, or the chunk adds nothing
        if cm > m:
            if m > -np.inf:
                rest = (rest + ties) * exp_sub(np.float64(m), np.float64(cm), s)
                ties = 0.0
            m = cm
        r, t = _sumexp_span(x2, i, c0, cn, m, s, near_ok(m, low, s))
        rest += r
        ties += t
    if not math.isfinite(top):
        return top, 0.0, 0.0
    return m, rest, ties


@njit
def row_lse(x2, i, s):
    """(m, L) with logsumexp(row * s) = m * s + L; m non-finite (+-inf, NaN) leaves L = 0."""
    always_inline()
    m, rest, ties = row_lse_parts(x2, i, s)
    if not math.isfinite(m):
        return m, 0.0
    return m, log1p_rest(rest, ties)


# --- lane primitives (i0 and the lane index k are uint64; see above) ---------------------
# A lane block reads w lanes of every class row: short pieces a whole inner stride apart,
# which the hardware prefetchers barely follow, and a power-of-two stride maps them all
# onto a few cache sets, so each pass fetches the block again from L3 or memory.  Every
# pass therefore asks for the piece of row j + AHEAD while it works on row j.  Measured on
# 1000 x 4096 along axis 0 (2 threads): about a fifth less time for one pass alone, 5-8% for
# a whole softmax or log_softmax, whose exponentials then cost more than the reads.  That
# was in pieces of 2 KiB; a block of many classes now takes pieces of LANE_WIDE_BYTES
# (lane_width_for), which the hardware prefetchers do follow, and gets no hints: with them
# it took 1.1-1.4x the time (float32, 1000 x 4096 and 512 x 8192, 2 threads).

AHEAD = 2  # rows ahead
_LINE = 64  # bytes


# Nothing in a per-row helper may raise.  numba counts references to the arrays a function
# receives (an atomic increment on entry, a decrement on exit) and prunes the pair only if
# no path through the function can raise; a division by a run-time value (ZeroDivisionError
# under numba's default error model) is such a path, and with two threads the counts of the
# shared input array bounce between the cores.  The lane helpers are called once per class
# row: _LINE // itemsize in prefetch_lanes and the clamp _LO / s in exp_sub kept those
# updates in every one of them, and removing the two made the lane kernels 15-23% faster
# (float32 along axis 0 of 1000 x 4096, 2 threads, emeraldrapids).
# test_lane_row_helpers_count_no_references pins it.


def _per_line(a):  # pragma: no cover - the overload runs in jitted code
    """Elements of the array ``a`` per cache line (at least 1), a compile-time constant
    (``_LINE // a.itemsize`` would divide by a run-time value: see above)."""
    return max(1, _LINE // a.itemsize)


@overload(_per_line)
def _per_line_impl(a):
    n = uint64(max(1, _LINE // as_dtype(a.dtype).itemsize))
    return lambda a: n


def _hinted_lanes(a):  # pragma: no cover - the overload runs in jitted code
    """The most lanes of ``a`` that prefetch_lanes gives hints for (LANE_ROW_BYTES of them),
    a compile-time constant."""
    return LANE_ROW_BYTES // a.itemsize


@overload(_hinted_lanes)
def _hinted_lanes_impl(a):
    n = uint64(LANE_ROW_BYTES // as_dtype(a.dtype).itemsize)
    return lambda a: n


@njit
def prefetch_lanes(a3, o, j, i0, w):
    """Prefetch a3[o, j, i0:i0 + w] if row j exists and the piece is at most LANE_ROW_BYTES
    long (one hint per cache line); longer pieces (LANE_WIDE_BYTES, see lane_width_for) are
    left to the hardware prefetchers, which follow them better without the hints."""
    wide_vectors()
    if j < a3.shape[1] and w <= _hinted_lanes(a3):
        step = _per_line(a3)
        for q in range(uint64(0), w, step):
            _prefetch(a3, o, j, i0 + q)


# Rows: a row kernel working on row i (several passes over it, in L1) asks for row i + 1,
# so its first pass does not wait on memory.  On znver5, float32 softmax of 4096x1000, that
# took 10% off a single thread and 5-15% at two, with hints for rows of up to 16 KiB.  On
# znver4 (2 vCPUs, in-process against those hints) rows of 500 to 4000 float32 classes ran
# faster without them: 4096x1000 softmax 0.75-0.86 of the time, log_softmax 0.84-0.91,
# cross_entropy_with_grad 0.83-0.90 (1 and 2 threads), 2048x2000 0.77-0.92, 8192x500
# 0.91-1.01; at 256 classes they measured 0.90-1.16, level.  The hints cost an instruction
# per cache line, and the hardware prefetchers follow rows this long, so only rows of at
# most PREFETCH_ROW_BYTES get them.
PREFETCH_ROW_BYTES = 1 << 10


@njit
def prefetch_row(a2, i):
    """Prefetch row i of a2 (one hint per cache line) if it exists and is short."""
    wide_vectors()
    if i < a2.shape[0] and a2.shape[1] * a2.itemsize <= PREFETCH_ROW_BYTES:
        step = _per_line(a2)
        for q in range(uint64(0), uint64(a2.shape[1]), step):
            _prefetch2(a2, i, q)


# Lane tiles.  The lane passes take LANE_TILE class rows at a time (the range and the sums
# always, the output passes where out3 is not an input and the piece is wide): each vector
# of lanes goes through the tile's rows in registers (the loop over the rows, of constant
# length, is unrolled by LLVM, and the loop over the lanes vectorised), so a lane's
# running maximum, sum or factor is loaded and stored once a tile, not once a row: a row
# at a time, a pass stored twice per element where a row kernel stores once, and znver4
# stores a 64-byte vector in two cycles.  A tile of n < LANE_TILE rows (the last of a
# LANE_BLOCK, or of the class rows) repeats its last row (tile_row): the repeat's terms
# are not added and its stores write the same values again, so the tiles that store take
# outputs that are not their inputs only (_scale_tile, which scales its output in place,
# skips the repeat instead).  A lane adds its terms in the order it did row by row: the
# same bits.  Four rows: LLVM unrolls no more exponentials than that, and its run-time
# checks that the stored rows overlap no loaded one grow with the product of their
# numbers (2 or 8 rows measured the same as 4).  Along axis 0 (float32, znver4,
# in-process against the row-at-a-time passes, 2 threads and 1): 1000 x 4096 softmax
# 0.59-0.70 of the time, log_softmax 0.59-0.71, logsumexp 0.65-0.82, log_softmax_backward
# 0.58-0.80, softmax_backward 0.72-0.87, cross_entropy 0.65-0.82, with the gradient
# 0.85-0.86; 512 x 8192 and 2000 x 2048 0.61-0.88 on 2 threads.  Output passes take tiles
# in wide pieces only (wide_piece): in narrow ones, whose blocks stay in cache, they took
# 1.1-1.4x the time on 2 threads (256 x 1024, 1000 x 500, 500 x 1024), against 0.94-1.01
# a row at a time; the sums' tiles measured 0.79-0.97 there.
LANE_TILE = 4


@njit
def tile_row(j0, r, n):
    """Class row r of the tile of n rows from j0: j0 + r, the last row for r >= n."""
    return j0 + (r if r < n else n - 1)


@njit
def wide_piece(a3, w):
    """True for a lane block of w lanes wider than LANE_ROW_BYTES (lane_width_for's pieces
    for a block that streams from memory): its output passes take tiles."""
    return w > _hinted_lanes(a3)


@njit
def prefetch_tile(a3, o, j0, i0, w):
    """prefetch_lanes for the rows of the tile after the one at j0."""
    wide_vectors()
    for r in range(LANE_TILE):
        prefetch_lanes(a3, o, j0 + LANE_TILE + r, i0, w)


@njit(fastmath=_REDUCE)
def _range_tile(x3, o, j0, n, i0, m, low):
    # lanes_range over the tile of n rows at j0
    wide_vectors()
    w = uint64(m.shape[0])
    for k in range(w):
        a = m[k]
        b = low[k]
        for r in range(LANE_TILE):
            v = x3[o, tile_row(j0, r, n), i0 + k]
            a = max_num(a, v)
            b = min_num(b, v)
        m[k] = a
        low[k] = b


@njit(fastmath=_REDUCE)
def _terms_tile(x3, o, j0, n, i0, m, s, near, part, count):
    # The terms of the tile of n rows at j0 added to part (below the lane's maximum) or
    # counted in count (equal to it).  m[k] is loaded once and the term computed before the
    # condition: a load or a call under the condition is control flow that LLVM does not
    # turn into a select, and the loop stays scalar (5x).
    wide_vectors()
    w = uint64(m.shape[0])
    zero = as_type_of(0.0, x3)
    one = as_type_of(1.0, x3)
    if near:
        for k in range(w):
            mk = m[k]
            p = part[k]
            c = count[k]
            for r in range(LANE_TILE):
                v = x3[o, tile_row(j0, r, n), i0 + k]
                t = exp_near(v, mk)
                below = not (v >= mk)  # NaN counts as a term, and makes the sum NaN
                p += (t if below else zero) if r < n else zero
                c += (zero if below else one) if r < n else zero
            part[k] = p
            count[k] = c
    else:
        for k in range(w):
            mk = m[k]
            p = part[k]
            c = count[k]
            for r in range(LANE_TILE):
                v = x3[o, tile_row(j0, r, n), i0 + k]
                t = exp_sub(v, mk, s)
                below = not (v >= mk)
                p += (t if below else zero) if r < n else zero
                c += (zero if below else one) if r < n else zero
            part[k] = p
            count[k] = c


@njit(fastmath=_REDUCE)
def _exp_store_tile(x3, o, j0, n, i0, m, s, near, out3, part):
    # out3 = exp((x3 - m[k]) s) over the tile of n rows at j0, each term added to part[k]
    wide_vectors()
    w = uint64(m.shape[0])
    zero = as_type_of(0.0, x3)
    if near:
        for k in range(w):
            mk = m[k]
            p = part[k]
            for r in range(LANE_TILE):
                j = tile_row(j0, r, n)
                t = exp_near(x3[o, j, i0 + k], mk)
                out3[o, j, i0 + k] = t
                p += t if r < n else zero
            part[k] = p
    else:
        for k in range(w):
            mk = m[k]
            p = part[k]
            for r in range(LANE_TILE):
                j = tile_row(j0, r, n)
                t = exp_sub(x3[o, j, i0 + k], mk, s)
                out3[o, j, i0 + k] = t
                p += t if r < n else zero
            part[k] = p


@njit(fastmath=_REDUCE)
def _exp_scale_tile(x3, o, j0, n, i0, m, s, near, inv, out3):
    # out3 = exp((x3 - m[k]) s) * inv[k] over the tile of n rows at j0 (out3 is not x3):
    # the bits of an exponential stored (lanes_exp) and then scaled (lanes_scale)
    wide_vectors()
    w = uint64(m.shape[0])
    if near:
        for k in range(w):
            mk = m[k]
            a = inv[k]
            for r in range(LANE_TILE):
                j = tile_row(j0, r, n)
                out3[o, j, i0 + k] = exp_near(x3[o, j, i0 + k], mk) * a
    else:
        for k in range(w):
            mk = m[k]
            a = inv[k]
            for r in range(LANE_TILE):
                j = tile_row(j0, r, n)
                out3[o, j, i0 + k] = exp_sub(x3[o, j, i0 + k], mk, s) * a


@njit(fastmath=_REDUCE)
def _scale_tile(out3, o, j0, n, i0, inv):
    # out3 *= inv[k] over the tile of n rows at j0 (a repeated row is scaled once: n rows)
    wide_vectors()
    w = uint64(inv.shape[0])
    for k in range(w):
        a = inv[k]
        for r in range(LANE_TILE):
            if r < n:
                out3[o, j0 + r, i0 + k] *= a


@njit(fastmath=_REDUCE)
def lanes_scale(out3, o, i0, inv):
    """out3[o, j, i0 + k] *= inv[k] for every class row j, in tiles."""
    wide_vectors()
    w = uint64(inv.shape[0])
    C = out3.shape[1]
    if not wide_piece(out3, w):
        for j in range(C):
            _scale_lane_row(out3, o, j, i0, inv)
        return
    for j0 in range(0, C, LANE_TILE):  # a wide piece: no prefetch hints (prefetch_lanes)
        _scale_tile(out3, o, j0, min(LANE_TILE, C - j0), i0, inv)


@njit(fastmath=_REDUCE)
def _scale_lane_row(out3, o, j, i0, inv):
    # out3[o, j, i0 + k] *= inv[k] (prefetching row j + AHEAD)
    wide_vectors()
    w = uint64(inv.shape[0])
    prefetch_lanes(out3, o, j + AHEAD, i0, w)
    for k in range(w):
        out3[o, j, i0 + k] *= inv[k]


@njit(fastmath=_REDUCE)
def _lane_exp(x3, o, j, i0, m, s, out3, near):
    # out3[o, j, i0 + k] = exp((x3[o, j, i0 + k] - m[k]) * s) for the lanes of class row j,
    # prefetching row j + AHEAD of x3 only: out3 is written, not read, and prefetching it
    # too cost 9-19% of a float32 softmax along axis 0 of 1000 x 4096 (2 threads,
    # emeraldrapids; prefetchw no better).  A function of its own, not a loop nested in the
    # loop over j: nested, LLVM reloads the exponential's constants in every iteration (48
    # instructions per 8 float32 instead of 25).  In place, _lane_exp_aside.
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    if near:
        for k in range(w):
            out3[o, j, i0 + k] = exp_near(x3[o, j, i0 + k], m[k])
    else:
        for k in range(w):
            out3[o, j, i0 + k] = exp_sub(x3[o, j, i0 + k], m[k], s)


@njit(fastmath=_REDUCE)
def _lane_exp_sum(x3, o, j, i0, m, s, out3, near, part):
    # _lane_exp, each term also added to part[k] (elementwise, not a reduction: the same
    # bits as _lane_exp_sum_aside, in place)
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    if near:
        for k in range(w):
            t = exp_near(x3[o, j, i0 + k], m[k])
            out3[o, j, i0 + k] = t
            part[k] += t
    else:
        for k in range(w):
            t = exp_sub(x3[o, j, i0 + k], m[k], s)
            out3[o, j, i0 + k] = t
            part[k] += t


@njit(fastmath=_REDUCE)
def _lane_exp_aside(x3, o, j, i0, m, s, out3, near):
    # _lane_exp for out3 = x3 (in place): the piece of class row j is copied to the stack
    # first, as the loop would run LLVM's scalar fallback reading what it writes (2.6x
    # slower measured; the same bits).  Called instead of _lane_exp, not from it: so
    # joined, numba kept the arguments' reference counts
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    src = stack_lanes(x3)
    for k in range(w):
        src[k] = x3[o, j, i0 + k]
    if near:
        for k in range(w):
            out3[o, j, i0 + k] = exp_near(src[k], m[k])
    else:
        for k in range(w):
            out3[o, j, i0 + k] = exp_sub(src[k], m[k], s)


@njit(fastmath=_REDUCE)
def _lane_exp_sum_aside(x3, o, j, i0, m, s, out3, near, part):
    # _lane_exp_sum in place (as _lane_exp_aside)
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    src = stack_lanes(x3)
    for k in range(w):
        src[k] = x3[o, j, i0 + k]
    if near:
        for k in range(w):
            t = exp_near(src[k], m[k])
            out3[o, j, i0 + k] = t
            part[k] += t
    else:
        for k in range(w):
            t = exp_sub(src[k], m[k], s)
            out3[o, j, i0 + k] = t
            part[k] += t


@njit(fastmath=_REDUCE)
def lanes_range(x3, o, i0, m, low, s):
    """row_range for each lane (maxima into m, minima into low), a NaN ignored (it reaches
    the results through the exponentials and sums); returns ``near``, the lanes' choice of
    exponential for the lane primitives: (NEAR_ALL, low) if every lane may take exp_near
    (near_ok; a lane whose maximum is not finite, whose results are overwritten, goes
    either way), (NEAR_NONE, low) if none may, else (NEAR_MIXED, low) with low[k] = 1 for
    the lanes that may and 0 for the others.  Each lane's choice is its own, so a lane's
    results do not depend on the block it falls in, and lane_width may follow the number
    of threads."""
    wide_vectors()
    w = uint64(m.shape[0])
    for k in range(w):
        m[k] = as_type_of(-np.inf, x3)
        low[k] = as_type_of(np.inf, x3)
    C = x3.shape[1]
    for j0 in range(0, C, LANE_TILE):
        prefetch_tile(x3, o, j0, i0, w)
        _range_tile(x3, o, j0, min(LANE_TILE, C - j0), i0, m, low)
    return lanes_near(x3, m, low, s)


@njit(fastmath=_REDUCE)
def lanes_near(x3, m, low, s):
    """lanes_range's ``near`` for the lanes' maxima m and minima low (low overwritten)."""
    wide_vectors()
    w = uint64(m.shape[0])
    zero = as_type_of(0.0, x3)
    if not near_ok(zero, zero, s):  # float64, or a temperature other than 1
        return NEAR_NONE, low
    one = as_type_of(1.0, x3)
    near = 0  # finite lanes that may take exp_near (near_ok), and finite lanes
    finite = 0
    for k in range(w):  # vectorised: finite as m - m == 0
        mk = m[k]
        fin = mk - mk == zero
        ok = near_spread(mk, low[k]) or not fin
        low[k] = one if ok else zero
        near += 1 if ok and fin else 0
        finite += 1 if fin else 0
    return NEAR_ALL if near == finite else (NEAR_NONE if near == 0 else NEAR_MIXED), low


@njit(fastmath=_REDUCE)
def _lane_exp_mixed(x3, o, j, i0, m, s, out3, f, part):
    # _lane_exp_sum for a block of mixed lanes: exp_near where f[k] is 1, exp_sub elsewhere,
    # both computed and one selected so that the loop stays vectorised.  In place (out3 is
    # x3) it runs LLVM's scalar fallback: slower, the same bits, and only in such a block.
    wide_vectors()
    w = uint64(m.shape[0])
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    for k in range(w):
        v = x3[o, j, i0 + k]
        a = exp_near(v, m[k])
        b = exp_sub(v, m[k], s)
        t = a if f[k] != 0 else b
        out3[o, j, i0 + k] = t
        part[k] += t


@njit(fastmath=_REDUCE)
def lanes_exp(x3, o, i0, m, s, out3, near, aside):
    """out3[o, j, i0 + k] = exp((x3[o, j, i0 + k] - m[k]) * s); near from lanes_range;
    aside: out3 is x3."""
    wide_vectors()
    mode, f = near
    if mode == NEAR_MIXED:
        part = np.zeros(m.shape[0], x3.dtype)  # sums, unused
        for j in range(x3.shape[1]):
            _lane_exp_mixed(x3, o, j, i0, m, s, out3, f, part)
        return
    for j in range(x3.shape[1]):
        if aside:
            _lane_exp_aside(x3, o, j, i0, m, s, out3, mode == NEAR_ALL)
        else:
            _lane_exp(x3, o, j, i0, m, s, out3, mode == NEAR_ALL)


@njit(fastmath=_REDUCE)
def lanes_exp_store(x3, o, i0, m, s, out3, total, near, aside):
    """lanes_exp, and total[k] = the lane's sum (float64; float32 terms summed in float32
    over LANE_BLOCK classes, then added in float64), in tiles unless in place (aside) or
    the lanes are mixed."""
    wide_vectors()
    w = uint64(m.shape[0])
    C = x3.shape[1]
    mode, f = near
    part = np.empty(w, x3.dtype)
    for k in range(w):
        total[k] = 0.0
    for b in range((C + LANE_BLOCK - 1) // LANE_BLOCK):
        for k in range(w):
            part[k] = 0.0
        b0 = b * LANE_BLOCK
        b1 = min(b0 + LANE_BLOCK, C)
        if mode == NEAR_MIXED:
            for j in range(b0, b1):
                _lane_exp_mixed(x3, o, j, i0, m, s, out3, f, part)
        elif aside:
            for j in range(b0, b1):
                _lane_exp_sum_aside(x3, o, j, i0, m, s, out3, mode == NEAR_ALL, part)
        elif not wide_piece(x3, w):
            for j in range(b0, b1):
                _lane_exp_sum(x3, o, j, i0, m, s, out3, mode == NEAR_ALL, part)
        else:  # a wide piece: no prefetch hints (prefetch_lanes)
            for j0 in range(b0, b1, LANE_TILE):
                _exp_store_tile(x3, o, j0, min(LANE_TILE, b1 - j0), i0, m, s, mode == NEAR_ALL,
                                out3, part)
        for k in range(w):
            total[k] += part[k]


@njit(fastmath=_REDUCE)
def lanes_exp_scale(x3, o, i0, m, s, inv, out3, near):
    """out3[o, j, i0 + k] = exp((x3[o, j, i0 + k] - m[k]) s) * inv[k] for every class row j,
    in tiles (out3 is not x3); near is True (exp_near) or False (exp_sub), not mixed."""
    wide_vectors()
    C = x3.shape[1]
    for j0 in range(0, C, LANE_TILE):  # no hints: 1.08-1.13x the time with, 4000 x 1024
        _exp_scale_tile(x3, o, j0, min(LANE_TILE, C - j0), i0, m, s, near, inv, out3)


# Online sums (float32 softmax along any axis but the last, on arrays that stream from
# memory: cpu.online_lanes).  A lane block's range and sums in one read of x3, in blocks of
# ONLINE_LANE_ROWS class rows: the tiles that add a block's terms also take the range of
# the next block's rows (_online_tile), so that the loads from memory run under the
# exponentials and each block is read again from L2 only.  A block's terms are taken
# against a reference r, which follows the maximum with a lag: where the block's maximum
# lies more than ONLINE_LAG (times 1/T) above it, r moves to the maximum and the float64
# total is rescaled by exp((r_old - r) / T) (_online_next); at the end the total is
# scaled from r to the maximum once.  Moving r with every new maximum cost a float64
# exponential per lane and block, about 8% at 256 x 8192; with the lag, logits like
# 3 N(0, 1) rarely move it after the first block.  A lane takes exp_near for a block
# where near_spread(r, low) holds with the minimum so far (then -NEAR32 < x - r <=
# ONLINE_LAG), exp_sub elsewhere, and a lane whose maximum is still -inf takes its
# terms against 0 with exp_sub (0 for -inf, NaN for NaN).  Every choice is the lane's
# own: a lane's sums do not depend on the block of lanes it falls in.  In the prototype
# (1000 x 4096, 2 threads, znver4) blocks of 16 and 64 rows took 1.04-1.10 and
# 1.03-1.05 the time of 32.
ONLINE_LANE_ROWS = 32  # a multiple of LANE_BLOCK
ONLINE_LAG = 8.0  # terms up to e**8: LANE_BLOCK of them stay far from float32's range


@njit(fastmath=_REDUCE)
def _online_tile(x3, o, j0, n, i0, ms, near, s, part, jn, nn, bm, low):
    # part[k] += exp((x3 - ms[k]) s) over the tile of n rows at j0 (exp_near if near, else
    # exp_sub); bm[k], low[k]: the range over the tile of nn rows at jn.  Mixed lanes take
    # _online_tile_mixed (a third branch here kept numba's reference counts: see _per_line)
    wide_vectors()
    w = uint64(ms.shape[0])
    zero = as_type_of(0.0, x3)
    if near:
        for k in range(w):
            mk = ms[k]
            p = part[k]
            a = bm[k]
            b = low[k]
            for r in range(LANE_TILE):
                t = exp_near(x3[o, tile_row(j0, r, n), i0 + k], mk)
                p += t if r < n else zero
                v = x3[o, tile_row(jn, r, nn), i0 + k]
                a = max_num(a, v)
                b = min_num(b, v)
            part[k] = p
            bm[k] = a
            low[k] = b
    else:
        for k in range(w):
            mk = ms[k]
            p = part[k]
            a = bm[k]
            b = low[k]
            for r in range(LANE_TILE):
                t = exp_sub(x3[o, tile_row(j0, r, n), i0 + k], mk, s)
                p += t if r < n else zero
                v = x3[o, tile_row(jn, r, nn), i0 + k]
                a = max_num(a, v)
                b = min_num(b, v)
            part[k] = p
            bm[k] = a
            low[k] = b


@njit(fastmath=_REDUCE)
def _online_tile_mixed(x3, o, j0, n, i0, ms, f, s, part, jn, nn, bm, low):
    # _online_tile for mixed lanes: exp_near where f[k] is 1, exp_sub elsewhere (both
    # computed and one selected, so that the loop stays vectorised)
    wide_vectors()
    w = uint64(ms.shape[0])
    zero = as_type_of(0.0, x3)
    for k in range(w):
        mk = ms[k]
        near = f[k] != zero
        p = part[k]
        a = bm[k]
        b = low[k]
        for r in range(LANE_TILE):
            u = x3[o, tile_row(j0, r, n), i0 + k]
            t0 = exp_near(u, mk)
            t1 = exp_sub(u, mk, s)
            t = t0 if near else t1
            p += t if r < n else zero
            v = x3[o, tile_row(jn, r, nn), i0 + k]
            a = max_num(a, v)
            b = min_num(b, v)
        part[k] = p
        bm[k] = a
        low[k] = b


@njit(fastmath=_REDUCE)
def _online_next(x3, m, r, bm, low, s, total, ms, f):
    # Before a block whose range is bm (maximum) and low (minimum so far): m = max(m, bm);
    # where the block's maximum lies more than ONLINE_LAG above the reference r (scaled by
    # s), total is rescaled to r = m; bm reset; ms: the reference the block's terms take
    # (0 where r is -inf), f: the lanes that take exp_near; returns the mode
    wide_vectors()
    w = uint64(m.shape[0])
    sf = as_type_of(s[0], x3)
    lag = as_type_of(ONLINE_LAG, x3)
    grown = 0
    for k in range(w):
        b = bm[k]
        grown += 1 if (b - r[k]) * sf > lag else 0  # NaN (-inf twice) is not
        m[k] = max_num(m[k], b)
    if grown:
        for k in range(w):  # exp((a - b) s) computed for every lane, so that it vectorises
            a = r[k]
            b = m[k]
            g = exp_sub(np.float64(a), np.float64(b), s)  # a = -inf: 0, and t is 0 or NaN
            moved = (bm[k] - a) * sf > lag
            t = total[k]
            total[k] = t * g if moved else t
            r[k] = b if moved else a
    zero = as_type_of(0.0, x3)
    one = as_type_of(1.0, x3)
    below = as_type_of(-np.inf, x3)
    allowed = near_ok(zero, zero, s)  # float32 at temperature 1
    near = 0
    for k in range(w):  # vectorised: no call or short-circuit under the loop
        rk = r[k]
        live = rk > below
        ok = near_spread(rk, low[k]) & live & allowed  # -NEAR32 < x - r <= ONLINE_LAG
        f[k] = one if ok else zero
        ms[k] = rk if live else zero
        bm[k] = below
        near += 1 if ok else 0
    return NEAR_ALL if near == w else (NEAR_NONE if near == 0 else NEAR_MIXED)


@njit(fastmath=_REDUCE)
def lanes_online_total(x3, o, i0, m, low, s, total):
    """lanes_range (m, low and the ``near`` it returns, for the output pass) and total[k],
    the lane's sum of exp((x3 - m[k]) s) in float64, in one read of x3 (see "Online sums")."""
    wide_vectors()
    w = uint64(m.shape[0])
    C = x3.shape[1]
    B = ONLINE_LANE_ROWS
    r = np.empty(w, x3.dtype)
    bm = np.empty(w, x3.dtype)
    ms = np.empty(w, x3.dtype)
    f = np.empty(w, x3.dtype)
    part = np.empty(w, x3.dtype)
    for k in range(w):
        m[k] = as_type_of(-np.inf, x3)
        r[k] = as_type_of(-np.inf, x3)
        bm[k] = as_type_of(-np.inf, x3)
        low[k] = as_type_of(np.inf, x3)
        total[k] = 0.0
    first = min(B, C)
    for j0 in range(0, first, LANE_TILE):
        _range_tile(x3, o, j0, min(LANE_TILE, first - j0), i0, bm, low)
    for b0 in range(0, C, B):
        b1 = min(b0 + B, C)
        mode = _online_next(x3, m, r, bm, low, s, total, ms, f)
        for c0 in range(b0, b1, LANE_BLOCK):
            c1 = min(c0 + LANE_BLOCK, b1)
            for k in range(w):
                part[k] = 0.0
            for j0 in range(c0, c1, LANE_TILE):
                n = min(LANE_TILE, c1 - j0)
                jn = j0 + B
                if jn < C:
                    nn = min(n, C - jn)
                else:  # no next rows here: the tile's own range again (already in m)
                    jn, nn = j0, n
                if mode == NEAR_MIXED:
                    _online_tile_mixed(x3, o, j0, n, i0, ms, f, s, part, jn, nn, bm, low)
                else:
                    _online_tile(x3, o, j0, n, i0, ms, mode == NEAR_ALL, s, part, jn, nn, bm,
                                 low)
            for k in range(w):
                total[k] += part[k]
    for k in range(w):  # the sums from the references to the maxima
        a = r[k]
        b = m[k]
        g = exp_sub(np.float64(a), np.float64(b), s)
        t = total[k]
        total[k] = t if a == b else t * g
    return lanes_near(x3, m, low, s)


@njit(fastmath=_REDUCE)
def _lane_terms_mixed(x3, o, j, i0, m, s, f, part, count):
    # _terms_tile for one class row j of a block of mixed lanes (as _lane_exp_mixed)
    wide_vectors()
    w = uint64(m.shape[0])
    zero = as_type_of(0.0, x3)
    one = as_type_of(1.0, x3)
    prefetch_lanes(x3, o, j + AHEAD, i0, w)
    for k in range(w):
        v = x3[o, j, i0 + k]
        mk = m[k]
        a = exp_near(v, mk)
        b = exp_sub(v, mk, s)
        t = a if f[k] != 0 else b
        below = not (v >= mk)
        part[k] += t if below else zero
        count[k] += zero if below else one


@njit(fastmath=_REDUCE)
def lanes_sumexp(x3, o, i0, m, s, rest, ties, near):
    """row_sumexp for each of the w = len(m) lanes, into the float64 arrays rest and ties;
    near from lanes_range."""
    wide_vectors()
    w = uint64(m.shape[0])
    C = x3.shape[1]
    mode, f = near
    zero = as_type_of(0.0, x3)
    part = np.empty(w, x3.dtype)
    count = np.empty(w, x3.dtype)
    for k in range(w):
        rest[k] = 0.0
        ties[k] = 0.0
    for b in range((C + LANE_BLOCK - 1) // LANE_BLOCK):
        for k in range(w):
            part[k] = zero
            count[k] = zero
        b0 = b * LANE_BLOCK
        b1 = min(b0 + LANE_BLOCK, C)
        if mode == NEAR_MIXED:
            for j in range(b0, b1):
                _lane_terms_mixed(x3, o, j, i0, m, s, f, part, count)
        else:
            for j0 in range(b0, b1, LANE_TILE):
                prefetch_tile(x3, o, j0, i0, w)
                _terms_tile(x3, o, j0, min(LANE_TILE, b1 - j0), i0, m, s, mode == NEAR_ALL,
                            part, count)
        for k in range(w):
            rest[k] += part[k]
            ties[k] += count[k]


@njit(fastmath=_REDUCE)
def lanes_rest(e3, o, i0, rest, ties):
    """row_rest for each of the w = len(rest) lanes of stored exponentials e3."""
    wide_vectors()
    w = uint64(rest.shape[0])
    C = e3.shape[1]
    zero = as_type_of(0.0, e3)
    one = as_type_of(1.0, e3)
    part = np.empty(w, e3.dtype)
    count = np.empty(w, e3.dtype)
    for k in range(w):
        rest[k] = 0.0
        ties[k] = 0.0
    for b in range((C + LANE_BLOCK - 1) // LANE_BLOCK):
        for k in range(w):
            part[k] = zero
            count[k] = zero
        for j in range(b * LANE_BLOCK, min(b * LANE_BLOCK + LANE_BLOCK, C)):
            prefetch_lanes(e3, o, j + AHEAD, i0, w)
            for k in range(w):
                v = e3[o, j, i0 + k]
                below = not (v >= one)
                part[k] += v if below else zero
                count[k] += zero if below else one
        for k in range(w):
            rest[k] += part[k]
            ties[k] += count[k]


@njit
def lanes_log1p(rest, ties):
    """log1p_rest of each lane (log1p_rests), as a new array."""
    L = np.empty(rest.shape[0], np.float64)
    log1p_rests(rest, ties, rest.shape[0], L)
    return L


@njit(fastmath=_REDUCE)
def _dot_tile(a3, b3, o, j0, n, i0, part):
    # part[k] += a3 * b3 over the lane tile of n rows at j0
    wide_vectors()
    w = uint64(part.shape[0])
    zero = as_type_of(0.0, a3)
    for k in range(w):
        p = part[k]
        for r in range(LANE_TILE):
            j = tile_row(j0, r, n)
            t = a3[o, j, i0 + k] * b3[o, j, i0 + k]
            p += t if r < n else zero
        part[k] = p


@njit(fastmath=_REDUCE)
def _sum_tile(a3, o, j0, n, i0, part):
    # part[k] += a3 over the lane tile of n rows at j0
    wide_vectors()
    w = uint64(part.shape[0])
    zero = as_type_of(0.0, a3)
    for k in range(w):
        p = part[k]
        for r in range(LANE_TILE):
            t = a3[o, tile_row(j0, r, n), i0 + k]
            p += t if r < n else zero
        part[k] = p


@njit(fastmath=_REDUCE)
def lanes_dot(a3, b3, o, i0, total):
    """total[k] = sum_j a3[o, j, i0 + k] * b3[o, j, i0 + k] in float64 (float32 products
    summed in float32 over LANE_BLOCK classes, then added in float64)."""
    wide_vectors()
    w = uint64(total.shape[0])
    C = a3.shape[1]
    part = np.empty(w, a3.dtype)
    for k in range(w):
        total[k] = 0.0
    for b in range((C + LANE_BLOCK - 1) // LANE_BLOCK):
        for k in range(w):
            part[k] = 0.0
        b1 = min(b * LANE_BLOCK + LANE_BLOCK, C)
        for j0 in range(b * LANE_BLOCK, b1, LANE_TILE):
            prefetch_tile(a3, o, j0, i0, w)
            prefetch_tile(b3, o, j0, i0, w)
            _dot_tile(a3, b3, o, j0, min(LANE_TILE, b1 - j0), i0, part)
        for k in range(w):
            total[k] += part[k]


@njit(fastmath=_REDUCE)
def lanes_sum(a3, o, i0, total):
    """total[k] = sum_j a3[o, j, i0 + k] in float64 (float32 terms summed in float32 over
    LANE_BLOCK classes, then added in float64)."""
    wide_vectors()
    w = uint64(total.shape[0])
    C = a3.shape[1]
    part = np.empty(w, a3.dtype)
    for k in range(w):
        total[k] = 0.0
    for b in range((C + LANE_BLOCK - 1) // LANE_BLOCK):
        for k in range(w):
            part[k] = 0.0
        b1 = min(b * LANE_BLOCK + LANE_BLOCK, C)
        for j0 in range(b * LANE_BLOCK, b1, LANE_TILE):
            prefetch_tile(a3, o, j0, i0, w)
            _sum_tile(a3, o, j0, min(LANE_TILE, b1 - j0), i0, part)
        for k in range(w):
            total[k] += part[k]


@njit
def lane_block(t, nb, width, inner):
    """(o, i0, n) of lane task t: outer index, first lane (uint64) and lane count (uint64)."""
    o = t // nb
    i0 = uint64(t % nb) * uint64(width)
    n = min(uint64(width), uint64(inner) - i0)
    return o, i0, n


# --- short rows as vectors ---------------------------------------------------------------
# A row of at most SHORT_ROW_BYTES (64 float32 or 32 float64 classes) is one vector of 16
# or 32 bytes, or K <= 4 vectors of 64 bytes (short_chunks).  LLVM's loop vectoriser gives
# the row kernels' loops a body of 4 vectors (64 float32 elements) and a scalar remainder,
# so such a row ran scalar, and the row tiles (rows transposed into lanes and back) spent
# half their time moving the data.  These intrinsics take a row as its K vectors in
# registers, written in LLVM IR: masked loads (nothing past the row is touched), the range
# and the sums reduced across the vector by halving it log2(W) times, the exponentials by
# the same operations as exp_near / exp_sub / exp (the same bits, element by element),
# masked stores.  All of a row is loaded before any of it
# is stored, so out2 may be x2 (in place).  Each intrinsic holds the code for every shape
# of row (short_chunks' code, 1 to 6) and switches on it (_by_code): the same branch for
# every row of a call.
# Rows a group of log_softmax's or logsumexp's short rows (short_scratch), whose logarithms
# are taken in one vectorised loop
SHORT_GROUP = 64


@intrinsic
def short_scratch(typingctx, like):
    """(m, rest, ties, L): four SHORT_GROUP arrays for a group of short rows, on the
    caller's stack (_stack_buffer: no allocation, no reference count); m, rest and ties in
    like's dtype, L float64.  The caller never lets them outlive its frame."""
    dt = like.dtype
    arr = types.Array(dt, 1, "C")
    arr64 = types.Array(types.float64, 1, "C")
    ret = types.Tuple((arr, arr, arr, arr64))

    def codegen(context, builder, sig, args):
        intp = context.get_value_type(types.intp)
        views = []
        for t in ret.types:
            size = context.get_abi_sizeof(context.get_data_type(t.dtype))
            view = context.make_array(t)(context, builder)
            context.populate_array(
                view, data=_stack_buffer(context, builder, t.dtype, SHORT_GROUP * size),
                shape=[intp(SHORT_GROUP)], strides=[intp(size)], itemsize=intp(size),
                meminfo=None)
            views.append(view._getvalue())
        return context.make_tuple(builder, ret, views)

    return ret(like), codegen


@njit
def short_chunks(n, itemsize):
    """The vectors a short row of n elements takes, as a code for the short-row intrinsics
    (_short_shape): 1 for a row of up to 16 bytes (one vector of 16), 2 up to 32 bytes (one
    of 32), 3 to 6 for 1 to 4 vectors of 64 bytes."""
    b = n * itemsize
    if b <= 16:
        return 1
    if b <= 32:
        return 2
    return 2 + (b + 63) // 64


def _short_shape(code, itemsize):
    # (lanes a vector, vectors) of short_chunks' code: the rows of a few classes take a
    # narrow vector, whose operations cost less (a 64-byte one is two halves on znver4) and
    # whose reductions take fewer steps
    vec = 16 << min(code - 1, 2)
    return vec // itemsize, max(1, code - 2)


class _RowVectors:
    # IR for one row of x2 as K vectors of W lanes (short_chunks' code; see "short rows as
    # vectors")

    def __init__(self, context, builder, aty, a, i, code):
        self.b = builder
        self.f64 = aty.dtype == types.float64
        self.W, K = _short_shape(code, 8 if self.f64 else 4)
        self.ety = context.get_data_type(aty.dtype)
        self.ity = ir.IntType(64 if self.f64 else 32)
        self.vty = ir.VectorType(self.ety, self.W)
        self.ivty = ir.VectorType(self.ity, self.W)
        self.K = K
        i64 = ir.IntType(64)
        arr = context.make_array(aty)(context, builder, a)
        self.n = builder.extract_value(arr.shape, 1)
        row = builder.gep(arr.data, [builder.mul(i, self.n)])
        self.at = [builder.bitcast(builder.gep(row, [i64(c * self.W)]), self.vty.as_pointer())
                   for c in range(K)]
        iota = ir.Constant(ir.VectorType(i64, self.W), list(range(self.W)))
        n = _splat(builder, self.n, self.W)
        self.masks = [builder.icmp_signed("<", builder.add(iota, _splat(builder, i64(c * self.W),
                                                                         self.W)), n)
                      for c in range(K)]

    def _fn(self, name, ret, argtys):
        return cgutils.get_or_insert_function(self.b.module, ir.FunctionType(ret, argtys), name)

    def _suffix(self):
        return "v%d%s" % (self.W, "f64" if self.f64 else "f32")

    def splat(self, value):
        if isinstance(value, ir.Value):
            return _splat(self.b, value, self.W)
        return ir.Constant(self.vty, [float(value)] * self.W)

    def load(self, fill):
        mty = ir.VectorType(ir.IntType(1), self.W)
        fn = self._fn("llvm.masked.load.%s.p0" % self._suffix(), self.vty,
                      [self.vty.as_pointer(), ir.IntType(32), mty, self.vty])
        align = ir.IntType(32)(8 if self.f64 else 4)
        return [self.b.call(fn, [p, align, m, self.splat(fill)])
                for p, m in zip(self.at, self.masks)]

    def store(self, vecs):
        mty = ir.VectorType(ir.IntType(1), self.W)
        fn = self._fn("llvm.masked.store.%s.p0" % self._suffix(), ir.VoidType(),
                      [self.vty, self.vty.as_pointer(), ir.IntType(32), mty])
        align = ir.IntType(32)(8 if self.f64 else 4)
        for v, p, m in zip(vecs, self.at, self.masks):
            self.b.call(fn, [v, p, align, m])

    def fma(self, a, b, c):
        fn = self._fn("llvm.fma.%s" % self._suffix(), self.vty, [self.vty] * 3)
        return self.b.call(fn, [a, b, c])

    def vmax(self, a, b):  # a compare and select: vmaxps (a NaN reaches the sums instead)
        return self.b.select(self.b.fcmp_ordered(">", a, b), a, b)

    def vmin(self, a, b):
        return self.b.select(self.b.fcmp_ordered("<", a, b), a, b)

    def across(self, v, op):
        # op over the W lanes of v, halving the vector each step (64 -> 32 -> 16 bytes ...:
        # the narrow steps are single operations on znver4): the scalar result
        w = self.W
        while w > 1:
            w //= 2
            half = ir.VectorType(ir.IntType(32), w)
            lo = self.b.shuffle_vector(v, v, ir.Constant(half, list(range(w))))
            hi = self.b.shuffle_vector(v, v, ir.Constant(half, list(range(w, 2 * w))))
            v = op(lo, hi)
        return self.b.extract_element(v, ir.IntType(32)(0))

    def fold(self, vecs, op):
        acc = vecs[0]
        for v in vecs[1:]:
            acc = op(acc, v)
        return acc

    def count(self, bits):
        # the number of true lanes in the i1 vectors bits (an i32)
        i32, iw = ir.IntType(32), ir.IntType(self.W)
        pop = self._fn("llvm.ctpop.i32", i32, [i32])
        n = [self.b.call(pop, [self.b.zext(self.b.bitcast(v, iw), i32)]) for v in bits]
        return self.fold(n, self.b.add)

    def finite(self, v):
        # an i1: the scalar v is finite
        fabs = self._fn("llvm.fabs.%s" % ("f64" if self.f64 else "f32"), self.ety, [self.ety])
        return self.b.fcmp_ordered("<", self.b.call(fabs, [v]), ir.Constant(self.ety, math.inf))

    def live(self, vecs, fill):
        # vecs with the lanes past the row set to fill
        return [self.b.select(m, v, self.splat(fill)) for v, m in zip(vecs, self.masks)]

    def _poly(self, r, c):
        # _poly32 / _poly64 (r, c), c a power of two: Horner, every coefficient scaled by c
        coef = [a * c for a in (_G64 if self.f64 else _G32)] + [c, c]
        if not self.f64:
            coef = [float(np.float32(a)) for a in coef]
        q = self.fma(self.splat(coef[0]), r, self.splat(coef[1]))
        for a in coef[2:]:
            q = self.fma(q, r, self.splat(a))
        return q

    def _consts(self):
        # (MAGIC, LN2_HI, LN2_LO, K, bias, mantissa bits, MAGIC's bits) of the row's dtype
        if self.f64:
            return _MAGIC64, _LN2_HI64, _LN2_LO64, _K64, 1023, 52, _MAGIC64_BITS
        return float(_MAGIC32), float(_LN2_HI32), float(_LN2_LO32), _K32, 127, 23, _MAGIC32_BITS

    def exp(self, x):
        # _exp32 / _exp64(x): 2**n as two factors, 0 below LO, +inf above HI
        b = self.b
        magic, ln2_hi, ln2_lo, _, bias, mant, magic_bits = self._consts()
        log2e = _LOG2E if self.f64 else float(np.float32(_LOG2E))
        t = self.fma(x, self.splat(log2e), self.splat(magic))
        nf = b.fsub(t, self.splat(magic))
        neg = b.fneg(nf)
        r = self.fma(neg, self.splat(ln2_lo), self.fma(neg, self.splat(ln2_hi), x))
        n = b.sub(b.bitcast(t, self.ivty), ir.Constant(self.ivty, [magic_bits] * self.W))
        n1 = b.ashr(n, ir.Constant(self.ivty, [1] * self.W))

        def power(k):
            bits = b.shl(b.add(k, ir.Constant(self.ivty, [bias] * self.W)),
                         ir.Constant(self.ivty, [mant] * self.W))
            return b.bitcast(bits, self.vty)

        y = b.fmul(b.fmul(self._poly(r, 1.0), power(n1)), power(b.sub(n, n1)))
        lo, hi = (_LO64, _HI64) if self.f64 else (float(_LO32), float(_HI32))
        y = b.select(b.fcmp_ordered("<", x, self.splat(lo)), self.splat(0.0), y)
        return b.select(b.fcmp_ordered(">", x, self.splat(hi)), self.splat(math.inf), y)

    def _scale(self, t):
        # 2**(n + K) from t, whose low bits hold n (exp_sub's scale)
        _, _, _, k, bias, shift, magic_bits = self._consts()
        k += bias - magic_bits
        bits = self.b.bitcast(t, self.ivty)
        bits = self.b.shl(self.b.add(bits, ir.Constant(self.ivty, [k] * self.W)),
                          ir.Constant(self.ivty, [shift] * self.W))
        return self.b.bitcast(bits, self.vty)

    def exp_near(self, x, m):
        # _exp_near32(x, m) (float32 only)
        b = self.b
        hi = b.fsub(x, m)
        t = self.fma(hi, self.splat(float(np.float32(_LOG2E))), self.splat(float(_MAGIC32)))
        nf = b.fsub(t, self.splat(float(_MAGIC32)))
        neg = b.fneg(nf)
        r = self.fma(neg, self.splat(float(_LN2_LO32)),
                     self.fma(neg, self.splat(float(_LN2_HI32)), hi))
        return b.fmul(self._poly(r, 2.0 ** -_K32), self._scale(t))

    def exp_sub(self, x, m, s, s_lo, s_log2e, lowest):
        # _exp_sub32 / _exp_sub64(x, m, s, s_lo); s_log2e = s * LOG2E and lowest = LO / s in
        # the row's precision, splats
        b = self.b
        hi = b.fsub(x, m)
        z = b.fsub(hi, x)
        lo = b.fadd(b.fsub(x, b.fsub(hi, z)), b.fsub(b.fneg(m), z))
        inside = b.not_(b.fcmp_ordered("<", hi, lowest))
        hi = b.select(inside, hi, lowest)
        lo = b.select(inside, lo, self.splat(0.0))
        magic, ln2_hi, ln2_lo, k, *_ = self._consts()
        magic, ln2_hi, ln2_lo = self.splat(magic), self.splat(ln2_hi), self.splat(ln2_lo)
        t = self.fma(hi, s_log2e, magic)
        nf = b.fsub(t, magic)
        r = self.fma(hi, s, b.fneg(b.fmul(nf, ln2_hi)))
        r = self.fma(hi, s_lo, r)
        r = self.fma(b.fneg(nf), ln2_lo, r)
        r = self.fma(lo, s, r)
        return b.fmul(self._poly(r, 2.0 ** -k), self._scale(t))


def _by_code(context, builder, code, emit, tys=()):
    # emit(c) for the runtime short_chunks code (an int argument), each c in its own block
    # (c = 6 the default); emit returns values of the LLVM types tys, joined by phis
    code = context.cast(builder, code[0], code[1], types.int64)
    end = builder.append_basic_block("short.end")
    blocks = [builder.append_basic_block("short.%d" % c) for c in range(1, 7)]
    switch = builder.switch(code, blocks[-1])
    for c, bb in enumerate(blocks[:-1], 1):
        switch.add_case(ir.Constant(ir.IntType(64), c), bb)
    ends = []
    for c, bb in enumerate(blocks, 1):
        builder.position_at_end(bb)
        values = emit(c) or []
        ends.append((builder.block, values))
        builder.branch(end)
    builder.position_at_end(end)
    out = []
    for n, ty in enumerate(tys):
        phi = builder.phi(ty)
        for bb, values in ends:
            phi.add_incoming(values[n], bb)
        out.append(phi)
    return out


def _short_terms(rv, xs, m, p, spread):
    # the exponentials of the row (vectors xs) against m (a splat), the lanes past the row
    # 0: exp_near where p allows it (p[4]) and the row's spread is below NEAR32 (near_ok),
    # else exp_sub with p's (s, s_lo, s * LOG2E, LO / s)
    b = rv.b
    sub = [rv.splat(v) for v in p[:4]]
    if rv.f64:
        return rv.live([rv.exp_sub(x, m, *sub) for x in xs], 0.0)
    near = b.and_(p[4], b.fcmp_ordered("<", spread, ir.Constant(rv.ety, NEAR32)))
    with b.if_else(near, likely=True) as (then, otherwise):
        with then:
            near_terms = [rv.exp_near(x, m) for x in xs]
            bb_near = b.block
        with otherwise:
            sub_terms = [rv.exp_sub(x, m, *sub) for x in xs]
            bb_sub = b.block
    out = []
    for e_near, e_sub in zip(near_terms, sub_terms):
        phi = b.phi(rv.vty)
        phi.add_incoming(e_near, bb_near)
        phi.add_incoming(e_sub, bb_sub)
        out.append(phi)
    return rv.live(out, 0.0)


def _short_range(rv, xs):
    # (max, spread) of the row (its vectors xs, masked lanes -inf), scalars; the maximum
    # misses a NaN (the terms carry it), a spread that is not finite is not near
    m = rv.across(rv.fold(xs, rv.vmax), rv.vmax)
    low = rv.across(rv.fold(rv.live(xs, math.inf), rv.vmin), rv.vmin)
    return m, rv.b.fsub(m, low)


def _short_lane(builder, rv, vecs, j):
    # element j (an i64, 0 <= j < the row's length) of the row held as the vectors vecs
    i64 = ir.IntType(64)
    out = ir.Constant(rv.ety, 0.0)
    for c, v in enumerate(vecs):
        lane = builder.sub(j, i64(c * rv.W))
        inside = builder.icmp_unsigned("<", lane, i64(rv.W))
        lane = builder.trunc(builder.select(inside, lane, i64(0)), ir.IntType(32))
        out = builder.select(inside, builder.extract_element(v, lane), out)
    return out


def _short_rest_ties(rv, xs, m, es):
    # (rest, ties) of the row xs with its exponentials es against m (a splat), scalars:
    # below the maximum (a NaN too) a term of rest, at it a tie
    b = rv.b
    below = [b.not_(b.fcmp_ordered(">=", x, m)) for x in xs]
    rest = [b.select(w, e, rv.splat(0.0)) for w, e in zip(below, es)]
    ties = rv.count([b.and_(b.not_(w), live) for w, live in zip(below, rv.masks)])
    return rv.across(rv.fold(rest, b.fadd), b.fadd), b.uitofp(ties, rv.ety)


def _short_sums(rv, ro, xs, m, q, spread, store, slots):
    # the exponentials of the row xs against m (_short_terms, returned), their rest and
    # ties (_short_rest_ties) into slots[0] and slots[1], and where store (an i1), the
    # exponentials into ro's row
    es = _short_terms(rv, xs, m, q, spread)
    for value, slot in zip(_short_rest_ties(rv, xs, m, es), slots):
        rv.b.store(value, slot)
    with rv.b.if_then(store):
        ro.store(es)
    return es


def _c_rows(*arrays):
    # the short-row intrinsics address row i at i * classes: C-contiguous 2-D float arrays
    # of one dtype only (anything else fails to type rather than read the wrong memory)
    return all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
               and a.dtype == arrays[0].dtype and a.dtype in (types.float32, types.float64)
               for a in arrays)


def _short_sig_args(context, builder, sig, args, k):
    # short_exp_args' tuple, argument k of a short-row intrinsic, as LLVM values: s, s_lo,
    # s * LOG2E, LO / s (in the row's dtype) and near (an i1)
    tup = sig.args[k]
    vals = [context.cast(builder, builder.extract_value(args[k], n), tup.types[n],
                         sig.args[0].dtype) for n in range(4)]
    return vals + [context.cast(builder, builder.extract_value(args[k], 4), tup.types[4],
                                types.boolean)]


@intrinsic
def short_softmax_row(typingctx, x2, out2, i, p, k):
    """out2[i] = softmax of the short row x2[i] (short_chunks' code k) at 1/T as p
    (short_exp_args) gives it: y_j = exp_sub(x_j, m, s) / sum_k exp_sub(x_k, m, s),
    m = max_k x_k (exp_near where p allows it and the row's spread does, as near_ok), the
    sum in the row's precision, the row scaled by 1 / sum (rounded from float64); a row
    whose maximum is not finite is NaN."""
    if not _c_rows(x2, out2):
        return None
    sig = types.none(x2, out2, i, p, k)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[2], sig.args[2], types.int64)
        q = _short_sig_args(context, builder, sig, args, 3)

        def emit(code):
            rv = _RowVectors(context, builder, sig.args[0], args[0], i, code)
            ro = _RowVectors(context, builder, sig.args[1], args[1], i, code)
            xs = rv.load(-math.inf)
            m, spread = _short_range(rv, xs)
            with builder.if_else(rv.finite(m), likely=True) as (then, otherwise):
                with then:
                    es = _short_terms(rv, xs, rv.splat(m), q, spread)
                    total = rv.across(rv.fold(es, builder.fadd), builder.fadd)
                    dty = ir.DoubleType()
                    inv = builder.fdiv(ir.Constant(dty, 1.0),
                                       total if rv.f64 else builder.fpext(total, dty))
                    inv = inv if rv.f64 else builder.fptrunc(inv, rv.ety)
                    ro.store([builder.fmul(e, rv.splat(inv)) for e in es])
                with otherwise:
                    ro.store([rv.splat(math.nan)] * rv.K)

        _by_code(context, builder, (args[4], sig.args[4]), emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def short_lse(typingctx, x2, i, p, k):
    """(m, rest, ties) of the short row x2[i] (short_chunks' code k), as row_lse_parts gives
    them (row_sumexp's rest and ties against the maximum m, in the row's dtype; (m, 0, 0)
    when m is not finite), with the exponentials of short_softmax_row."""
    if not _c_rows(x2):
        return None
    ret = types.UniTuple(x2.dtype, 3)
    sig = ret(x2, i, p, k)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[1], sig.args[1], types.int64)
        q = _short_sig_args(context, builder, sig, args, 2)
        ety = context.get_data_type(sig.args[0].dtype)

        def emit(code):
            rv = _RowVectors(context, builder, sig.args[0], args[0], i, code)
            xs = rv.load(-math.inf)
            m0, spread = _short_range(rv, xs)
            m = rv.splat(m0)
            zero = ir.Constant(rv.ety, 0.0)
            entry = builder.block
            with builder.if_then(rv.finite(m0), likely=True):
                es = _short_terms(rv, xs, m, q, spread)
                rest0, ties0 = _short_rest_ties(rv, xs, m, es)
                inside = builder.block
            out = [m0]
            for value in (rest0, ties0):
                phi = builder.phi(rv.ety)
                phi.add_incoming(value, inside)
                phi.add_incoming(zero, entry)
                out.append(phi)
            return out

        parts = _by_code(context, builder, (args[3], sig.args[3]), emit, (ety,) * 3)
        return context.make_tuple(builder, sig.return_type, parts)

    return sig, codegen


@intrinsic
def short_shift(typingctx, x2, out2, i, m, a, c, k):
    """out2[i, j] = (x2[i, j] - m) * a - c for the short row i (short_chunks' code k;
    log_softmax's output, _log_softmax_out's arithmetic)."""
    if not _c_rows(x2, out2):
        return None
    sig = types.none(x2, out2, i, m, a, c, k)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[2], sig.args[2], types.int64)
        dt = sig.args[0].dtype
        vals = [context.cast(builder, v, t, dt) for v, t in zip(args[3:6], sig.args[3:6])]

        def emit(code):
            rv = _RowVectors(context, builder, sig.args[0], args[0], i, code)
            ro = _RowVectors(context, builder, sig.args[1], args[1], i, code)
            m, a, c = (rv.splat(v) for v in vals)
            ro.store([builder.fsub(builder.fmul(builder.fsub(x, m), a), c)
                      for x in rv.load(0.0)])

        _by_code(context, builder, (args[6], sig.args[6]), emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def short_lse_gap(typingctx, x2, g2, w2, i, y, p, k, smooth, store):
    """(m, rest, ties, gap, x_y, e_y) of the short row x2[i] (short_chunks' code k):
    short_lse's m, rest and ties (exponentials at temperature 1 as p, short_exp_args,
    allows), where ``smooth`` gap = sum_j w2[0, j] (m - x_j) (label smoothing's sum, as
    _row_gap; else 0), and of column y (0 <= y < classes) the logit and its exponential
    exp(x_y - m).  Where ``store``, g2[i] = the exponentials (a row whose maximum is not
    finite: NaN).  The whole row is loaded before g2 is written, so g2 may be x2
    (cross-entropy's short rows with class indices, cpu/cross_entropy.py); rest, ties,
    gap and e_y are 0 where m is not finite."""
    if not _c_rows(x2, g2, w2):
        return None
    ret = types.UniTuple(x2.dtype, 6)
    sig = ret(x2, g2, w2, i, y, p, k, smooth, store)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[3], sig.args[3], types.int64)
        y = context.cast(builder, args[4], sig.args[4], types.int64)
        q = _short_sig_args(context, builder, sig, args, 5)
        smooth = context.cast(builder, args[7], sig.args[7], types.boolean)
        store = context.cast(builder, args[8], sig.args[8], types.boolean)
        ety = context.get_data_type(sig.args[0].dtype)
        zero = ir.Constant(ety, 0.0)
        # rest, ties, gap, e_y
        slots = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]

        def emit(code):
            rv = _RowVectors(context, builder, sig.args[0], args[0], i, code)
            ro = _RowVectors(context, builder, sig.args[1], args[1], i, code)
            for slot in slots:
                builder.store(zero, slot)
            xs = rv.load(-math.inf)
            m0, spread = _short_range(rv, xs)
            m = rv.splat(m0)
            xy = _short_lane(builder, rv, xs, y)
            with builder.if_else(rv.finite(m0), likely=True) as (then, otherwise):
                with then:
                    es = _short_sums(rv, ro, xs, m, q, spread, store, slots)
                    builder.store(_short_lane(builder, rv, es, y), slots[3])
                    with builder.if_then(smooth):
                        rw = _RowVectors(context, builder, sig.args[2], args[2],
                                         ir.IntType(64)(0), code)
                        terms = [builder.fmul(w, builder.fsub(m, x))
                                 for w, x in zip(rw.load(0.0), xs)]
                        gap = rv.fold(rv.live(terms, 0.0), builder.fadd)
                        builder.store(rv.across(gap, builder.fadd), slots[2])
                with otherwise:
                    with builder.if_then(store):
                        ro.store([rv.splat(math.nan)] * rv.K)
            rest, ties, gap, ey = (builder.load(slot) for slot in slots)
            return [m0, rest, ties, gap, xy, ey]

        parts = _by_code(context, builder, (args[6], sig.args[6]), emit, (ety,) * 6)
        return context.make_tuple(builder, sig.return_type, parts)

    return sig, codegen


@intrinsic
def short_prob_sums(typingctx, x2, t2, g2, w2, i, p, k, k1, k0, store):
    """(m, rest, ties, mass, gap) of the short row x2[i] (short_chunks' code k) with the
    probability target t2[i]: short_lse's m, rest and ties (exponentials at temperature 1
    as p allows), and with t'_j = t_j k1 + k0 and w = w2[0], mass = sum_j w_j t'_j and gap
    = sum_j w_j t'_j (m - x_j) (as _row_target_sums).  Where ``store``, g2[i] = the
    exponentials (a row whose maximum is not finite: NaN; then rest, ties, mass and gap are
    0).  The rows are loaded before g2 is written: g2 may be x2 (not t2)."""
    if not _c_rows(x2, t2, g2, w2):
        return None
    ret = types.UniTuple(x2.dtype, 5)
    sig = ret(x2, t2, g2, w2, i, p, k, k1, k0, store)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[4], sig.args[4], types.int64)
        q = _short_sig_args(context, builder, sig, args, 5)
        dt = sig.args[0].dtype
        k1, k0 = (context.cast(builder, v, t, dt) for v, t in zip(args[7:9], sig.args[7:9]))
        store = context.cast(builder, args[9], sig.args[9], types.boolean)
        ety = context.get_data_type(dt)
        zero = ir.Constant(ety, 0.0)
        slots = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]  # rest ties mass gap

        def emit(code):
            rv = _RowVectors(context, builder, sig.args[0], args[0], i, code)
            rt = _RowVectors(context, builder, sig.args[1], args[1], i, code)
            ro = _RowVectors(context, builder, sig.args[2], args[2], i, code)
            rw = _RowVectors(context, builder, sig.args[3], args[3], ir.IntType(64)(0), code)
            for slot in slots:
                builder.store(zero, slot)
            xs = rv.load(-math.inf)
            ts, ws = rt.load(0.0), rw.load(0.0)
            m0, spread = _short_range(rv, xs)
            m = rv.splat(m0)
            with builder.if_else(rv.finite(m0), likely=True) as (then, otherwise):
                with then:
                    _short_sums(rv, ro, xs, m, q, spread, store, slots)
                    wt = rv.live([builder.fmul(w, builder.fadd(builder.fmul(t, rv.splat(k1)),
                                                               rv.splat(k0)))
                                  for w, t in zip(ws, ts)], 0.0)
                    builder.store(rv.across(rv.fold(wt, builder.fadd), builder.fadd), slots[2])
                    gaps = rv.live([builder.fmul(v, builder.fsub(m, x)) for v, x in zip(wt, xs)],
                                   0.0)
                    builder.store(rv.across(rv.fold(gaps, builder.fadd), builder.fadd),
                                  slots[3])
                with otherwise:
                    with builder.if_then(store):
                        ro.store([rv.splat(math.nan)] * rv.K)
            return [m0] + [builder.load(slot) for slot in slots]

        parts = _by_code(context, builder, (args[6], sig.args[6]), emit, (ety,) * 5)
        return context.make_tuple(builder, sig.return_type, parts)

    return sig, codegen


def _affine_codegen(context, builder, sig, args):
    # short_affine (args g2, w2, i, a, b, k) and short_prob_affine (g2, t2, w2, i, a, c1,
    # c0, k): g = g * a - w * (t * c1 + c0), or g * a - b * w without a target
    prob = len(args) == 8
    g2, w2 = args[0], args[2 if prob else 1]
    n = 3 if prob else 2
    i = context.cast(builder, args[n], sig.args[n], types.int64)
    dt = sig.args[0].dtype
    vals = [context.cast(builder, v, t, dt) for v, t in zip(args[n + 1:-1], sig.args[n + 1:-1])]

    def emit(code):
        rg = _RowVectors(context, builder, sig.args[0], g2, i, code)
        rw = _RowVectors(context, builder, sig.args[n - 1], w2, ir.IntType(64)(0), code)
        gs, ws = rg.load(0.0), rw.load(0.0)
        a = rg.splat(vals[0])
        if prob:
            c1, c0 = rg.splat(vals[1]), rg.splat(vals[2])
            ts = _RowVectors(context, builder, sig.args[1], args[1], i, code).load(0.0)
            out = [builder.fsub(builder.fmul(g, a),
                                builder.fmul(w, builder.fadd(builder.fmul(t, c1), c0)))
                   for g, w, t in zip(gs, ws, ts)]
        else:
            b = rg.splat(vals[1])
            out = [builder.fsub(builder.fmul(g, a), builder.fmul(b, w)) for g, w in zip(gs, ws)]
        rg.store(out)

    _by_code(context, builder, (args[-1], sig.args[-1]), emit)
    return context.get_dummy_value()


@intrinsic
def short_affine(typingctx, g2, w2, i, a, b, k):
    """g2[i, j] = g2[i, j] * a - b * w2[0, j] for the short row i (short_chunks' code k;
    the cross-entropy gradient's scaling with class indices, as _index_grad_row's loop)."""
    if not _c_rows(g2, w2):
        return None
    return types.none(g2, w2, i, a, b, k), _affine_codegen


@intrinsic
def short_prob_affine(typingctx, g2, t2, w2, i, a, c1, c0, k):
    """g2[i, j] = g2[i, j] * a - w2[0, j] * (t2[i, j] * c1 + c0) for the short row i
    (short_chunks' code k; with probability targets, as _prob_grad_row's loop)."""
    if not _c_rows(g2, t2, w2):
        return None
    return types.none(g2, t2, w2, i, a, c1, c0, k), _affine_codegen


@intrinsic
def short_backward(typingctx, y2, dy2, out2, i, sm, log, k):
    """The backward functions for the short row i (short_chunks' code k), sm = 1/T in the
    rows' dtype.  ``log`` False (softmax_backward, _softmax_backward_row's arithmetic):
    out_j = y_j (dy_j - sum_k dy_k y_k) sm; True (log_softmax_backward, y = log
    probabilities): out_j = (dy_j - exp(y_j) sum_k dy_k) sm.  The sum in the rows' dtype;
    out2 may be y2 or dy2."""
    if not _c_rows(y2, dy2, out2):
        return None
    sig = types.none(y2, dy2, out2, i, sm, log, k)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[3], sig.args[3], types.int64)
        smv = context.cast(builder, args[4], sig.args[4], sig.args[0].dtype)
        is_log = context.cast(builder, args[5], sig.args[5], types.boolean)

        def emit(code):
            ry, rd, ro = (_RowVectors(context, builder, sig.args[n], args[n], i, code)
                          for n in range(3))
            y, dy = ry.load(0.0), rd.load(0.0)
            sm = ry.splat(smv)
            with builder.if_else(is_log) as (then, otherwise):
                with then:
                    total = ry.splat(ry.across(ry.fold(dy, builder.fadd), builder.fadd))
                    ro.store([builder.fmul(builder.fsub(d, builder.fmul(ry.exp(v), total)), sm)
                              for v, d in zip(y, dy)])
                with otherwise:
                    dot = ry.across(ry.fold([builder.fmul(d, v) for v, d in zip(y, dy)],
                                            builder.fadd), builder.fadd)
                    dot = ry.splat(dot)
                    ro.store([builder.fmul(builder.fmul(v, builder.fsub(d, dot)), sm)
                              for v, d in zip(y, dy)])

        _by_code(context, builder, (args[6], sig.args[6]), emit)
        return context.get_dummy_value()

    return sig, codegen


def short_exp_args(s, like):  # pragma: no cover - the overload runs in jitted code
    """(s, s_lo, s * LOG2E, LO / s, near) for the short-row intrinsics from the float64 pair
    s = 1/T (see exp_sub), in like's dtype; near: exp_near may be taken (float32 at
    temperature 1, as near_ok)."""
    return None


@overload(short_exp_args)
def _short_exp_args_impl(s, like):
    if like.dtype == types.float32:

        def args32(s, like):
            hi = np.float32(s[0])
            lo = np.float32((s[0] - np.float64(hi)) + s[1])
            return hi, lo, hi * np.float32(_LOG2E), _LO32 / hi, s[0] == 1.0 and s[1] == 0.0

        return args32
    if like.dtype == types.float64:
        return lambda s, like: (s[0], s[1], s[0] * _LOG2E, _LO64 / s[0], False)
    return None
