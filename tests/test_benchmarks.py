"""The asv suite covers every public function, and its shapes are bench's (one list)."""

from __future__ import annotations

import importlib

import jitloss
from jitloss import _bench


def _benchmarked_names():
    names = set()
    for module in ("bench_softmax", "bench_cross_entropy", "bench_margin"):
        mod = importlib.import_module(f"benchmarks.{module}")
        for obj in vars(mod).values():
            name = getattr(obj, "name", None)
            if isinstance(obj, type) and isinstance(name, str) and name:
                names.add(name)
    return names


def test_every_public_function_has_an_asv_benchmark():
    missing = set(jitloss.__all__) - _benchmarked_names()
    assert not missing, f"no asv benchmark for {sorted(missing)}"


def test_every_public_function_is_in_the_registry():
    assert set(jitloss.__all__) <= set(_bench.OPS)


def test_asv_and_bench_share_one_shape_list():
    from benchmarks import common

    assert common.SHAPES == _bench.SHAPES


def test_paired_ratio_takes_the_median_of_the_rounds_ratios():
    # round by round 2, 4, 2 (a ratio of medians would say 4 / 1 = 4)
    samples = {"jit": [2.0, 4.0, 6.0], "copy": [1.0, 1.0, 3.0]}
    assert _bench.paired_ratio(samples, "jit", "copy") == 2.0


def test_interleaved_samples_times_every_function_every_round():
    calls = {"a": 0, "b": 0}

    def count(name):
        calls[name] += 1

    samples = _bench.interleaved_samples(
        {"a": lambda: count("a"), "b": lambda: count("b")}, rounds=3, min_sample=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in samples.values() for t in v)
    assert calls == {"a": 5, "b": 5}  # two warm-up calls each, then one per round
