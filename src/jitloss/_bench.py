"""One registry of comparisons that drives ``python -m jitloss check``, ``bench`` and the asv
suite: for every public function, how to make its inputs, how to call it, NumPy's formula
(the float64 reference for ``check``, the baseline for ``bench``) and PyTorch's (when
installed).  Also the shared shape list and the interleaved timer.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import numpy as np

import jitloss

# The shapes every benchmark uses (asv's suite imports this list too): the shapes,
# a tiny row and softmax along axis 0.  (rows, classes); "axis0" means the transposed case.
SHAPES = {
    "14": (1, 14),
    "4096x1000": (4096, 1000),
    "256x32000": (256, 32000),
    "32x128256": (32, 128256),
}
AXIS0_SHAPE = (1000, 4096)  # softmax over axis 0 of a C-order array


@dataclasses.dataclass(frozen=True)
class Op:
    """A public function and its comparisons.

    ``make(shape, dtype, rng)`` returns the inputs as a dict; ``run``, ``numpy`` and
    ``torch`` take that dict (``torch`` gets tensors made from it by ``torch_inputs``) and
    return the result(s).  ``rtol`` maps dtype name to the tolerance ``check`` uses
    against ``numpy`` evaluated in float64.
    """

    name: str
    family: str
    make: Callable
    run: Callable
    numpy: Callable
    torch: Callable | None = None
    rtol: dict = dataclasses.field(default_factory=lambda: {"float32": 2e-5, "float64": 1e-12})
    axis0: bool = False  # also benchmarked along axis 0 (AXIS0_SHAPE)


def _logits(shape, dtype, rng, axis=-1):
    return {"x": (rng.standard_normal(shape) * 3).astype(dtype), "axis": axis}


def _np_softmax(d):
    x, axis = d["x"], d["axis"]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_log_softmax(d):
    x, axis = d["x"], d["axis"]
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _np_logsumexp(d):
    x, axis = d["x"], d["axis"]
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _backward_inputs(shape, dtype, rng, axis=-1):
    d = _logits(shape, dtype, rng, axis)
    d["y"] = jitloss.softmax(d["x"], axis=axis)
    d["logp"] = jitloss.log_softmax(d["x"], axis=axis)
    d["dy"] = rng.standard_normal(shape).astype(dtype)
    return d


def _np_softmax_backward(d):
    y, dy, axis = d["y"], d["dy"], d["axis"]
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def _np_log_softmax_backward(d):
    logp, dy, axis = d["logp"], d["dy"], d["axis"]
    return dy - np.exp(logp) * dy.sum(axis=axis, keepdims=True)


def _t(name):
    """A PyTorch comparison, resolved when called (torch is optional)."""

    def call(d):
        import torch

        dim = d["axis"]
        if name == "softmax":
            return torch.softmax(d["x"], dim)
        if name == "log_softmax":
            return torch.log_softmax(d["x"], dim)
        if name == "logsumexp":
            return torch.logsumexp(d["x"], dim)
        if name == "softmax_backward":
            return torch.ops.aten._softmax_backward_data(d["dy"], d["y"], dim, d["y"].dtype)
        if name == "log_softmax_backward":
            return torch.ops.aten._log_softmax_backward_data(
                d["dy"], d["logp"], dim, d["logp"].dtype
            )
        raise KeyError(name)

    return call


OPS = {
    op.name: op
    for op in [
        Op(
            "softmax",
            "softmax",
            _logits,
            lambda d: jitloss.softmax(d["x"], axis=d["axis"]),
            _np_softmax,
            _t("softmax"),
            axis0=True,
        ),
        Op(
            "log_softmax",
            "softmax",
            _logits,
            lambda d: jitloss.log_softmax(d["x"], axis=d["axis"]),
            _np_log_softmax,
            _t("log_softmax"),
            axis0=True,
        ),
        Op(
            "logsumexp",
            "softmax",
            _logits,
            lambda d: jitloss.logsumexp(d["x"], axis=d["axis"]),
            _np_logsumexp,
            _t("logsumexp"),
        ),
        Op(
            "softmax_backward",
            "softmax",
            _backward_inputs,
            lambda d: jitloss.softmax_backward(d["y"], d["dy"], axis=d["axis"]),
            _np_softmax_backward,
            _t("softmax_backward"),
        ),
        Op(
            "log_softmax_backward",
            "softmax",
            _backward_inputs,
            lambda d: jitloss.log_softmax_backward(d["logp"], d["dy"], axis=d["axis"]),
            _np_log_softmax_backward,
            _t("log_softmax_backward"),
        ),
    ]
}


def torch_inputs(d):
    """The same inputs as PyTorch tensors (sharing memory), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


def main_array(d):
    """The array whose bytes the copy baseline moves (the first array input)."""
    return next(v for v in d.values() if isinstance(v, np.ndarray))


# --- timing ---------------------------------------------------------------------------------


def interleaved_medians(fns: dict, rounds: int = 15, min_sample: float = 2e-3) -> dict:
    """Median seconds per call of each function, sampled in interleaved rounds.

    Each function is called once to warm up (compilation), then each round times every
    function in turn (``number`` calls per sample, chosen so a sample lasts about
    ``min_sample``): a slow spell on a shared machine hits all candidates alike, so the
    ratios of the medians stay meaningful when the absolute times are not.
    """
    number = {}
    for name, f in fns.items():
        f()
        t0 = time.perf_counter()
        f()
        dt = max(time.perf_counter() - t0, 1e-7)
        number[name] = max(1, int(min_sample / dt))
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f, n = fns[name], number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def parse_shape(text: str) -> tuple:
    """'4096x1000' -> (4096, 1000); '14' -> (1, 14)."""
    parts = tuple(int(p) for p in text.lower().split("x"))
    return (1,) + parts if len(parts) == 1 else parts
