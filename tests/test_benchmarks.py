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


def test_every_registry_entry_names_the_public_function_it_calls():
    # the asv benchmarks look an entry's function up by name before they time it: the
    # in-place cross-entropy entry named none, and its benchmark was always skipped
    from benchmarks import common

    for name, op in _bench.OPS.items():
        assert op.public in jitloss.__all__, name
        assert common.registered(name) is op
    assert _bench.OPS["cross_entropy_probs_with_grad"].public == "cross_entropy_with_grad"


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
