"""Shared pieces of the asv suite.

The benchmarks reach jitloss's functions only through their public names, so they run
against older commits too: a function that a commit does not have is skipped
(``NotImplementedError`` in ``setup``), not failed.  The shape list, the inputs and NumPy's
formulas come from ``jitloss._bench``, the registry that ``python -m jitloss check`` and
``bench`` use as well: one definition of the shapes and of every comparison.  (Commits older
than that registry cannot be benchmarked by this suite.)

Compilation happens in ``setup`` (one warm-up call), never in a timed call.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import jitloss
from jitloss import _bench

DTYPES = ["float32", "float64"]
SHAPES = dict(_bench.SHAPES)

# Initialise numba in asv's forkserver (a serial kernel: no thread pool before a fork), so
# the benchmark processes do not each pay numba's first-call setup.
jitloss.softmax(np.ones(4))


def public(name: str):
    """jitloss.<name>, or NotImplementedError (asv: skipped) for a commit without it."""
    fn = getattr(jitloss, name, None)
    if fn is None:
        raise NotImplementedError(f"jitloss.{name} does not exist in this commit")
    return fn


def registered(name: str):
    """The registry's entry ``name`` once its public function is found (``public``): an entry
    that calls a public function under a name of its own (a variant: in place, probability
    targets) says which in ``function``; a commit whose registry lacks the entry is skipped."""
    op = _bench.OPS.get(name)
    if op is None:
        raise NotImplementedError(f"{name} is not in this commit's benchmark registry")
    public(getattr(op, "function", None) or name)
    return op


@functools.lru_cache(maxsize=8)
def inputs(name: str, shape: tuple, dtype: str, axis: int) -> dict:
    """Deterministic inputs for one function (cached within a benchmark process)."""
    return _bench.OPS[name].make(shape, dtype, np.random.default_rng(12345), axis)


class _OpBenchmark:
    """time_ / track_ benchmarks of one public function, parametrised like ``bench``.

    Subclasses set ``name`` (the public function) and ``params``.
    """

    name = ""
    param_names = ["shape", "dtype", "axis"]
    timeout = 240

    def setup(self, shape, dtype, axis=-1):
        op = registered(self.name)
        dims = (op.shapes or SHAPES)[shape]
        if axis != -1:
            dims = dims[::-1]  # the classes along axis 0 of the transposed shape
        self.d = inputs(self.name, dims, dtype, axis)
        self.op = op
        src = _bench.main_array(self.d)
        dst = np.empty_like(src)
        self.copy = lambda: np.copyto(dst, src)
        self.op.run(self.d)  # compile (or load from numba's cache) here, not when timed

    def time_jitloss(self, *params):
        self.op.run(self.d)

    def time_numpy(self, *params):
        self.op.numpy(self.d)

    def track_ratio_to_copy(self, *params):
        """jitloss's time over np.copyto of the same array, both measured here, interleaved,
        the median of the rounds' ratios: steadier than the times themselves on a shared
        machine."""
        samples = _bench.interleaved_samples(
            {"copy": self.copy, "jitloss": lambda: self.op.run(self.d)}, rounds=5,
            min_sample=1e-3,
        )
        return _bench.paired_ratio(samples, "jitloss", "copy")

    track_ratio_to_copy.unit = "ratio"


def benchmark_classes(family: str, axes=(-1,)) -> dict:
    """One _OpBenchmark subclass per registered function of ``family``, named after it."""
    classes = {}
    for name, op in _bench.OPS.items():
        if op.family != family:
            continue
        shapes = list(op.shapes or SHAPES)
        cls_name = "".join(part.capitalize() for part in name.split("_"))
        classes[cls_name] = type(cls_name, (_OpBenchmark,), {
            "name": name,
            "params": [shapes, DTYPES, list(axes) if op.axis0 else [-1]],
            "__doc__": f"jitloss.{name} against np.copyto and NumPy's formula.",
        })
    return classes


def cold_start_seconds(code: str) -> float:
    """Wall time of a fresh interpreter running ``code`` with an empty numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - t0
