"""`python -m jitloss info|check|bench`: what each prints, and check's exit status."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

import jitloss
from jitloss import _bench
from jitloss.__main__ import _startup, main


def test_info_names_the_versions_and_the_threading(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("jitloss", "numpy", "numba", "numba threads", "SVML", "numba cache", "CUDA"):
        assert f"\n{key} " in "\n" + out
    assert jitloss.__version__ in out


def test_check_passes_against_the_reference(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "all functions agree with the float64 reference" in out
    assert out.count(" ok") == 4 * len(_bench.OPS)  # two dtypes x two shapes each


def test_check_exits_1_on_a_mismatch(capsys, monkeypatch):
    op = _bench.OPS["softmax"]
    wrong = dataclasses.replace(op, run=lambda d: op.run(d) * 1.001)
    monkeypatch.setitem(_bench.OPS, "softmax", wrong)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "4 mismatches" in out


def test_bench_prints_ratios_to_the_copy(capsys):
    assert main(["bench", "--op", "softmax", "--op", "cross_entropy", "--shape", "5x7",
                 "--rounds", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| softmax")
            or line.startswith("| cross_entropy")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "5x7" and cells[5].endswith("x") and cells[7] == "-"


def test_bench_times_axis0_and_its_rows_in_the_same_rounds(capsys, monkeypatch):
    monkeypatch.setattr(_bench, "SHAPES", {"6x9": (6, 9)})
    monkeypatch.setattr(_bench, "AXIS0_SHAPE", (9, 6))
    assert main(["bench", "--op", "log_softmax", "--rounds", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "| log_softmax" in out and "| 9x6 " in out
    assert "# log_softmax along axis 0 of 9x6 / along axis -1 of 6x9, interleaved" in out


@pytest.mark.slow
def test_startup_line(capsys):
    _startup(sys.executable, runs=1)
    out = capsys.readouterr().out
    assert out.startswith("# startup") and "numba's own floor" in out
    assert "SciPy installed" in out  # the test environment has it
    assert np.isfinite(float(out.split("import numba' ")[1].split(" s")[0]))
