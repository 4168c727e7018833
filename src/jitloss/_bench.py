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
# a tiny row, a batch of short rows (few classes: the per-row costs dominate) and softmax
# along axis 0.  (rows, classes); "axis0" means the transposed case.
SHAPES = {
    "14": (1, 14),
    "65536x32": (65536, 32),
    "4096x1000": (4096, 1000),
    "256x32000": (256, 32000),
    "32x128256": (32, 128256),
}
AXIS0_SHAPE = (1000, 4096)  # softmax over axis 0 of a C-order array
# the GPU shapes of the CUDA issue (64M elements and more for the bandwidth figure)
CUDA_SHAPES = {"4096x1000": (4096, 1000), "4096x32000": (4096, 32000),
               "1024x128256": (1024, 128256)}


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
    shapes: dict | None = None  # its own shape list instead of SHAPES
    function: str | None = None  # the public function, where ``name`` is a variant of it

    @property
    def public(self) -> str:
        """The name of the public function this entry calls."""
        return self.function or self.name


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


def _t(name):  # noqa: C901 - one branch per function
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


def _labels_inputs(shape, dtype, rng, axis=-1):
    d = _logits(shape, dtype, rng, axis)
    n = shape[0] if axis == -1 else shape[1]
    classes = shape[-1] if axis == -1 else shape[0]
    d["y"] = rng.integers(0, classes, n)
    d["g"] = np.zeros(shape, dtype)  # preallocated gradient (grad_out)
    return d


def _in_place_inputs(shape, dtype, rng, axis=-1):
    # _labels_inputs and a copy of the logits that the call overwrites with its gradient
    # (grad_out=logits): after the first call it computes on gradient values, in [-1, 1]
    d = _labels_inputs(shape, dtype, rng, axis)
    d["xg"] = d["x"].copy()
    return d


def _probs_inputs(shape, dtype, rng, axis=-1):
    # _labels_inputs and probability targets of the logits' shape (each sample's sum 1)
    d = _labels_inputs(shape, dtype, rng, axis)
    t = rng.random(shape) + 0.01
    d["t"] = (t / t.sum(axis=axis, keepdims=True)).astype(dtype)
    return d


def _np_cross_entropy_probs(d, grad=False):
    x, t = d["x"], d["t"]
    if d["axis"] != -1:
        x, t = np.moveaxis(x, d["axis"], -1), np.moveaxis(t, d["axis"], -1)
    n = x.shape[0]
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    loss = np.mean((t * (np.log(s) - z)).sum(axis=-1))
    if not grad:
        return loss
    g = (e / s * t.sum(axis=-1, keepdims=True) - t) / n
    return loss, np.moveaxis(g, -1, d["axis"]) if d["axis"] != -1 else g


def _torch_cross_entropy_probs(d, grad=False):
    import torch.nn.functional as F

    x = d["x"].detach().requires_grad_(grad)
    xs, t = x, d["t"]
    if d["axis"] != -1:
        xs, t = x.movedim(d["axis"], -1), t.movedim(d["axis"], -1)
    loss = F.cross_entropy(xs, t)
    if not grad:
        return loss
    loss.backward()
    return loss, x.grad


def _np_cross_entropy(d):
    x, y = d["x"], d["y"]
    if d["axis"] != -1:
        x = np.moveaxis(x, d["axis"], -1)
    z = x - x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1))
    return np.mean(lse - z[np.arange(len(y)), y])


def _np_cross_entropy_with_grad(d):
    x, y = d["x"], d["y"]
    if d["axis"] != -1:
        x = np.moveaxis(x, d["axis"], -1)
    n = len(y)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - z[np.arange(n), y])
    g = e / s
    g[np.arange(n), y] -= 1
    g /= n
    return loss, np.moveaxis(g, -1, d["axis"]) if d["axis"] != -1 else g


def _torch_cross_entropy(d):
    import torch.nn.functional as F

    x = d["x"] if d["axis"] == -1 else d["x"].movedim(d["axis"], -1)
    return F.cross_entropy(x, d["y"])


def _torch_cross_entropy_with_grad(d):
    import torch.nn.functional as F

    x = d["x"].detach().requires_grad_(True)
    xs = x if d["axis"] == -1 else x.movedim(d["axis"], -1)
    loss = F.cross_entropy(xs, d["y"])
    loss.backward()
    return loss, x.grad


MARGIN_SHAPES = {"14": (1, 14), "65536x64": (65536, 64)}


def _pairs_inputs(shape, dtype, rng, axis=-1):
    d = {"x": rng.standard_normal(shape).astype(dtype), "axis": -1}
    d["g"] = np.zeros(shape, dtype)
    return d


def _np_max_margin(d):
    s = d["x"]
    return np.maximum(0, 1.0 - s[:, :1] + s[:, 1:]).mean()


def _np_max_margin_with_grad(d):
    s = d["x"]
    pairs = np.maximum(0, 1.0 - s[:, :1] + s[:, 1:])
    k = 1.0 / pairs.size
    active = (pairs > 0) * k
    g = np.empty_like(s)
    g[:, 1:] = active
    g[:, 0] = -active.sum(axis=1)
    return pairs.mean(), g


def _torch_max_margin_with_grad(d):
    import torch

    t = d["x"].detach().requires_grad_(True)
    loss = torch.relu(1.0 - t[:, :1] + t[:, 1:]).mean()
    loss.backward()
    return loss, t.grad


def _np_multi_margin_with_grad(d):
    x, y = d["x"], d["y"]
    if d["axis"] != -1:
        x = np.moveaxis(x, d["axis"], -1)
    n, classes = x.shape
    z = 1.0 - x[np.arange(n), y][:, None] + x
    z[np.arange(n), y] = 0
    active = z > 0
    loss = np.where(active, z, 0).sum() / (n * classes)
    g = active / (n * classes)
    g[np.arange(n), y] = -g.sum(axis=1)
    return loss, np.moveaxis(g, -1, d["axis"]) if d["axis"] != -1 else g


def _torch_multi_margin_with_grad(d):
    import torch.nn.functional as F

    x = d["x"].detach().requires_grad_(True)
    xs = x if d["axis"] == -1 else x.movedim(d["axis"], -1)
    loss = F.multi_margin_loss(xs, d["y"])
    loss.backward()
    return loss, x.grad


def _np_hinge_with_grad(d):
    x, y = d["x"], d["y"]
    if d["axis"] != -1:
        x = np.moveaxis(x, d["axis"], -1)
    n, classes = x.shape
    aug = x + 1.0
    aug[np.arange(n), y] -= 1.0
    star = aug.argmax(axis=1)
    loss = (aug[np.arange(n), star] - x[np.arange(n), y]).mean()
    g = np.zeros_like(x)
    on = star != y
    g[np.arange(n)[on], star[on]] = 1.0 / n
    g[np.arange(n)[on], y[on]] = -1.0 / n
    return loss, np.moveaxis(g, -1, d["axis"]) if d["axis"] != -1 else g


def _torch_hinge_with_grad(d):
    import torch

    x = d["x"].detach().requires_grad_(True)
    xs = x if d["axis"] == -1 else x.movedim(d["axis"], -1)
    y = d["y"]
    aug = xs + (torch.arange(xs.shape[1]) != y[:, None])
    loss = (aug.max(dim=1).values - xs.gather(1, y[:, None])[:, 0]).mean()
    loss.backward()
    return loss, x.grad


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
        Op(
            "cross_entropy",
            "cross_entropy",
            _labels_inputs,
            lambda d: jitloss.cross_entropy(d["x"], d["y"], axis=d["axis"]),
            _np_cross_entropy,
            _torch_cross_entropy,
        ),
        Op(
            "cross_entropy_with_grad",
            "cross_entropy",
            _labels_inputs,
            lambda d: jitloss.cross_entropy_with_grad(d["x"], d["y"], axis=d["axis"],
                                                      grad_out=d["g"]),
            _np_cross_entropy_with_grad,
            _torch_cross_entropy_with_grad,
        ),
        Op(
            "cross_entropy_with_grad_in_place",  # grad_out=logits: the memory-saving call
            "cross_entropy",
            _in_place_inputs,
            lambda d: jitloss.cross_entropy_with_grad(d["xg"], d["y"], axis=d["axis"],
                                                      grad_out=d["xg"]),
            _np_cross_entropy_with_grad,
            _torch_cross_entropy_with_grad,
            function="cross_entropy_with_grad",
        ),
        Op(
            "cross_entropy_probs",  # probability targets
            "cross_entropy",
            _probs_inputs,
            lambda d: jitloss.cross_entropy(d["x"], d["t"], axis=d["axis"]),
            _np_cross_entropy_probs,
            _torch_cross_entropy_probs,
            function="cross_entropy",
        ),
        Op(
            "cross_entropy_probs_with_grad",
            "cross_entropy",
            _probs_inputs,
            lambda d: jitloss.cross_entropy_with_grad(d["x"], d["t"], axis=d["axis"],
                                                      grad_out=d["g"]),
            lambda d: _np_cross_entropy_probs(d, grad=True),
            lambda d: _torch_cross_entropy_probs(d, grad=True),
            function="cross_entropy_with_grad",
        ),
        Op(
            "max_margin_loss",
            "margin",
            _pairs_inputs,
            lambda d: jitloss.max_margin_loss(d["x"]),
            _np_max_margin,
            None,
            shapes=MARGIN_SHAPES,
        ),
        Op(
            "max_margin_loss_with_grad",
            "margin",
            _pairs_inputs,
            lambda d: jitloss.max_margin_loss_with_grad(d["x"], grad_out=d["g"]),
            _np_max_margin_with_grad,
            _torch_max_margin_with_grad,
            shapes=MARGIN_SHAPES,
        ),
        Op(
            "multi_margin_loss",
            "margin",
            _labels_inputs,
            lambda d: jitloss.multi_margin_loss(d["x"], d["y"], axis=d["axis"]),
            lambda d: _np_multi_margin_with_grad(d)[0],
            lambda d: _torch_multi_margin_with_grad(d)[0],
        ),
        Op(
            "multi_margin_loss_with_grad",
            "margin",
            _labels_inputs,
            lambda d: jitloss.multi_margin_loss_with_grad(d["x"], d["y"], axis=d["axis"],
                                                          grad_out=d["g"]),
            _np_multi_margin_with_grad,
            _torch_multi_margin_with_grad,
        ),
        Op(
            "multiclass_hinge_loss",
            "margin",
            _labels_inputs,
            lambda d: jitloss.multiclass_hinge_loss(d["x"], d["y"], axis=d["axis"]),
            lambda d: _np_hinge_with_grad(d)[0],
            lambda d: _torch_hinge_with_grad(d)[0],
        ),
        Op(
            "multiclass_hinge_loss_with_grad",
            "margin",
            _labels_inputs,
            lambda d: jitloss.multiclass_hinge_loss_with_grad(d["x"], d["y"], axis=d["axis"],
                                                              grad_out=d["g"]),
            _np_hinge_with_grad,
            _torch_hinge_with_grad,
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
    return next(v for v in d.values() if hasattr(v, "shape") and hasattr(v, "nbytes"))


# --- timing ---------------------------------------------------------------------------------


def interleaved_samples(fns: dict, rounds: int = 15, min_sample: float = 2e-3) -> dict:
    """Seconds per call of each function in each of ``rounds`` interleaved rounds.

    Each function is called once to warm up (compilation), then each round times every
    function in turn (``number`` calls per sample, chosen so a sample lasts about
    ``min_sample``; the order rotates from round to round): a slow spell on a shared
    machine hits the samples of one round alike, so ratios taken round by round
    (``paired_ratio``) stay meaningful when the absolute times are not.
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
    return samples


def paired_ratio(samples: dict, a: str, b: str) -> float:
    """Median over the rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def device_median(fn, rounds: int = 15, sync=None) -> float:
    """Median seconds per call of a device function: calls between synchronisations."""
    import statistics

    if sync is None:
        from numba import cuda

        sync = cuda.synchronize
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    n = max(1, int(5e-3 / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def parse_shape(text: str) -> tuple:
    """'4096x1000' -> (4096, 1000); '14' -> (1, 14)."""
    parts = tuple(int(p) for p in text.lower().split("x"))
    return (1,) + parts if len(parts) == 1 else parts


# --- memory ---------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
import resource, sys
import numpy as np
variant = sys.argv[1]
rows, classes = 1024, 128256
rng = np.random.default_rng(0)
y = rng.integers(0, classes, rows)
x = np.empty((rows, classes), np.float32)
rng.standard_normal(out=x, dtype=np.float32)  # no temporary of x's size
def reset_peak():
    try:  # Linux: reset the high-water mark to the current size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
def peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
if variant == "torch":
    import torch, torch.nn.functional as F
    w = torch.zeros(4, 8, requires_grad=True)
    F.cross_entropy(w, torch.zeros(4, dtype=torch.long)).backward()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.from_numpy(y)
    reset_peak()
    before = peak_mb()
    F.cross_entropy(xt, yt).backward()
else:
    import jitloss
    # the measured call's kernels (long rows, parallel), loaded or compiled before the reset
    w = np.zeros((64, 1024), np.float32)
    jitloss.cross_entropy_with_grad(w, np.zeros(64, np.int64), grad_out=w)
    jitloss.cross_entropy_with_grad(w, np.zeros(64, np.int64))
    reset_peak()
    before = peak_mb()
    if variant == "grad_out":
        jitloss.cross_entropy_with_grad(x, y, grad_out=x)
    else:
        g = jitloss.cross_entropy_with_grad(x, y)[1]
print(peak_mb() - before)
"""


def peak_rss_growth(variant: str) -> float:
    """Growth of a fresh process's peak RSS (MB) across one cross-entropy forward+backward
    on a 1024x128256 float32 input: ``grad_out`` (in place), ``allocated``, or ``torch``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, variant], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])
