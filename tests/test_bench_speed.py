"""bench/bench_speed.py: the paired old/new ratios on made-up timings (the timings themselves are measured by the bench)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("bench_speed", Path(__file__).resolve().parents[1] / "bench" / "bench_speed.py")
bench_speed = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_speed)


def _run(tree, repeat, process, pruning=1.0, label="sparsegpt_owl, statistics cached", **extra):
    return {"tree": tree, "label": label, "repeat": repeat, "process_s": process,
            "timings_s": {"pruning": pruning, "evaluation": 1.0, "calibration": 0.0}, **extra}


def test_ratios_pair_within_a_repeat_and_skip_warmups():
    runs = [
        _run("old", 0, 100.0, label="statistics (warm-up)", warmup=True),
        _run("old", 0, 100.0, pruning=80.0), _run("new", 0, 70.0, pruning=40.0),
        _run("new", 1, 80.0, pruning=60.0), _run("old", 1, 100.0, pruning=80.0),  # new went first
        _run("old", 2, 200.0), _run("new", 2, 150.0),
        _run("new", 3, 10.0),  # its old run is missing (interrupted): no pair
    ]
    summary = bench_speed.paired_ratios(runs)
    assert set(summary) == {"sparsegpt_owl, statistics cached"}
    row = summary["sparsegpt_owl, statistics cached"]
    assert row["ratios"] == pytest.approx([0.7, 0.8, 0.75]) and row["n"] == 3
    assert row["ratio"] == pytest.approx(math.exp(sum(map(math.log, [0.7, 0.8, 0.75])) / 3))
    assert row["lower"] < row["ratio"] < row["upper"]
    assert bench_speed.paired_ratios(runs, "pruning")["sparsegpt_owl, statistics cached"]["ratios"][:2] == pytest.approx([0.5, 0.75])


def test_one_pair_gives_no_interval():
    row = bench_speed.paired_ratios([_run("old", 0, 100.0), _run("new", 0, 75.0)])["sparsegpt_owl, statistics cached"]
    assert row["ratio"] == pytest.approx(0.75) and row["n"] == 1
    assert math.isnan(row["lower"]) and math.isnan(row["upper"])
