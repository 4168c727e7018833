"""Per-sample (and per-row) formulas shared by the CPU and the CUDA kernels (written once).

``numba.extending.register_jitable`` makes each usable from ``numba.njit`` code and from
``numba.cuda.jit`` kernels alike (and, under the CUDA simulator, as plain Python).  All
arithmetic is float64 on scalars that the kernels have already reduced.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

__all__ = ["index_loss", "prob_loss", "signed_lse", "target_entry"]


@register_jitable
def index_loss(m, xy, L, wy, wsum, gap, eps, z, classes):
    """Cross-entropy of one sample with class-index target y.

    (1 - e) w_y (lse - x_y) + e/C (sum_c w_c (m - x_c) + W L) + s lse^2, with lse = m + L
    and lse - x formed as (m - x) + L, so a confident correct prediction keeps its tiny
    loss.  ``gap`` is sum_c w_c (m - x_c) (needed only when e > 0).
    """
    lse = m + L
    loss = (1.0 - eps) * wy * ((m - xy) + L)
    if eps > 0:
        loss += eps / classes * (gap + wsum * L)
    if z > 0:
        loss += z * lse * lse
    return loss


@register_jitable
def prob_loss(gap, L, mass, z, lse):
    """Cross-entropy of one sample with probability target t, t' = (1 - e) t + e/C:
    sum_c w_c t'_c ((m - x_c) + L) + s lse^2 from gap = sum_c w_c t'_c (m - x_c) and
    mass = sum_c w_c t'_c."""
    return gap + L * mass + z * lse * lse


@register_jitable
def target_entry(ey, rest, ties, scale, wy, wsum, eps, z, lse, classes):
    """The cross-entropy gradient at the target class, in float64:
    k [(1 - e) w_y (p_y - 1) + (e/C W + 2 s lse) p_y - e/C w_y].

    p_y - 1 = (e_y - S) / S with S = rest + ties; when y holds the maximum (e_y = 1),
    e_y - S is -(rest + ties - 1) exactly, so a confident prediction's 1 - p_y ~ 1e-6 keeps
    its digits (the float32 difference p_y - 1 would keep one or two).
    """
    total = rest + ties
    gap = -(rest + (ties - 1.0)) if ey == 1.0 else ey - total
    return (
        scale * (1.0 - eps) * wy * (gap / total)
        + scale * (eps / classes * wsum + 2.0 * z * lse) * (ey / total)
        - scale * eps / classes * wy
    )


@register_jitable
def signed_lse(m, mb, rest):
    """(log|S|, sign(S)) of S = e**m (mb + rest) for a finite maximum m, in float64.

    ``mb`` is the sum of the weights b_j of the maximal terms, ``rest`` the sum of
    b_j exp(x_j - m) over the others (logsumexp with ``b=``).  The maximal terms are kept
    apart, log|S| = m + log|mb| + log1p(rest / mb), so that a sum close to mb keeps the
    small terms; S = 0 gives (-inf, 0).
    """
    if mb != 0.0:
        r = rest / mb
        sign = (1.0 if r + 1.0 > 0 else (-1.0 if r + 1.0 < 0 else 0.0)) * (
            1.0 if mb > 0 else -1.0
        )
        if r < -1.0:
            r = -r - 2.0
        return m + math.log(abs(mb)) + math.log1p(r), sign
    sign = 1.0 if rest > 0 else (-1.0 if rest < 0 else 0.0)
    return (m + math.log(abs(rest)) if rest != 0 else -math.inf), sign
