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
