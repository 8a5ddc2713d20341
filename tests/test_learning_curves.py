"""benchmarks/learning_curves.py: the plateau rule, the curve list, the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from contract.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location(
        "learning_curves", ROOT / "benchmarks" / "learning_curves.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_curves"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plateau_is_the_first_budget_no_later_one_beats(lc):
    # 1 -> 2 gains 0.10, 2 -> 4 0.005, 4 -> 8 0.004: flat from 2
    assert (
        lc.plateau([(1, 0.5), (2, 0.6), (4, 0.605), (8, 0.609)], higher_is_better=True, tol=0.01)
        == 2
    )
    # a dip then a rise: 2 is beaten by 8 by 0.16 over two doublings -> not flat at 2
    assert (
        lc.plateau([(1, 0.78), (2, 0.75), (4, 0.86), (8, 0.91)], higher_is_better=True, tol=0.01)
        is None
    )
    # flat from the first point, any order given
    assert lc.plateau([(8, 0.986), (1, 0.986), (4, 0.986)], higher_is_better=True, tol=0.01) == 1
    # lower is better (mean rank), tolerance in ranks
    ranks = [(1, 97.0), (2, 40.0), (5, 4.5), (10, 3.8)]
    assert lc.plateau(ranks, higher_is_better=False, tol=1.0) == 5
    assert lc.plateau(ranks, higher_is_better=True, tol=1.0) == 1  # sign matters
    assert lc.plateau([(1, 0.5)], higher_is_better=True, tol=0.01) is None


def test_every_curve_varies_a_registered_epochs_parameter(lc):
    from contract.registry import get_method

    for curve in lc.CURVES:
        assert "epochs" in get_method(curve.task, curve.method).parameters(), curve.name
        assert list(curve.budgets) == sorted(set(curve.budgets)), curve.name
    tasks = {c.task for c in lc.CURVES}
    assert tasks == set(TASKS), "every task's scGPT method has a curve"


def test_summary_marks_plateaus_and_failures(lc):
    curve = lc.CURVES[0]
    points = {}
    for budget, value in ((1, 0.70), (2, 0.80), (4, 0.802)):
        key = lc.point_key(curve, budget, 0)
        points[key] = {
            "key": key, "task": curve.task, "dataset": curve.dataset, "method": curve.method,
            "epochs": budget, "seed": 0, "value": value, "status": "ok",
            "wall_seconds": 10.0 * budget, "load_before": 1.0,
        }  # fmt: skip
    key = lc.point_key(curve, 8, 0)
    points[key] = {**points[lc.point_key(curve, 4, 0)], "key": key, "epochs": 8,
                   "status": "failed", "value": None, "error": "boom"}  # fmt: skip
    text = lc.summary_markdown(points, ["cmd a"])
    row = next(line for line in text.splitlines() if curve.name in line)
    assert "1: 0.700, 2: 0.800, 4: 0.802" in row
    assert "| 2 epochs; failed: 8 (boom) |" in row
    assert "- `cmd a`" in text
