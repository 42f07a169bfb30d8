"""Metrics, calibration and reports, checked on small cases computed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from training.calibration import fit_temperature
from training.metrics import expected_calibration_error, mean_macro_f1, reliability_bins, task_metrics


def test_task_metrics_hand_computed() -> None:
    # gold a a b b c ; pred a b b b a
    m = task_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], labels=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P=1/2 R=1/2 F=1/2 ; b: P=2/3 R=1 F=0.8 ; c: P=0 R=0 F=0  -> macro (0.5+0.8+0)/3
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(1.3 / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_majority_class_model_scores_low_macro_f1() -> None:
    """Accuracy flatters a model that always says 'none'; macro-F1 does not."""
    gold = [2] * 8 + [0, 1]
    m = task_metrics(gold, [2] * 10, labels=["favor", "against", "none"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0 + 0 + 2 * 0.8 / 1.8) / 3)


def test_ece_hand_computed() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    gold = [0, 1, 0, 0]
    # bin 0.9: acc 0.5, conf 0.9 (2 items); bin 0.6: acc 1.0, conf 0.6 (2 items)
    assert expected_calibration_error(gold, probs, n_bins=10) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)
    assert sum(b["count"] for b in reliability_bins(gold, probs, n_bins=10)) == 4


def test_mean_macro_f1_skips_unlabelled_tasks() -> None:
    assert mean_macro_f1({"a": {"n": 3, "macro_f1": 0.5}, "b": {"n": 0, "macro_f1": float("nan")}}) == 0.5


def test_temperature_scaling_lowers_ece_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 2000, 3
    gold = rng.integers(0, k, n)
    true_logits = rng.normal(0, 1, (n, k))
    true_logits[np.arange(n), gold] += 1.0  # a model that is right ~60% of the time ...
    overconfident = true_logits * 6.0  # ... but scores as if it were nearly always right
    probs = lambda x: np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    before = expected_calibration_error(gold, probs(overconfident))
    t = fit_temperature(overconfident, gold)
    after = expected_calibration_error(gold, probs(overconfident / t))
    assert t == pytest.approx(6.0, rel=0.25)
    assert after < before / 3 and after < 0.05


def test_report_files_exist_and_are_referenced(trained_run: Path) -> None:
    report_dir = trained_run / "report" / "dev"
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    pngs = {p.name for p in report_dir.glob("*.png")}
    assert pngs and linked == pngs  # every figure is shown, every link resolves
    for kind in ("confusion", "reliability", "f1"):
        assert {f"{kind}_{t}.png" for t in ("topic", "stance_gna", "stance_haftar")} <= pngs
    assert "training_curves.png" in pngs
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    assert "baseline" in metrics and "TF-IDF" in text
    assert "Most confident mistakes" in text
    for task in metrics["tasks"].values():
        assert {"accuracy", "macro_f1", "ece", "ece_uncalibrated", "per_class", "confusion"} <= set(task)


def test_fast_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    from training.metrics import macro_f1_from_ids

    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = f1_score(gold, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert macro_f1_from_ids(gold, pred, 4) == pytest.approx(expected)


def test_paired_bootstrap_separates_a_better_system_from_a_tie() -> None:
    from training.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.9, gold, (gold + 1) % 3)  # ~90 % right
    poor = np.where(rng.random(300) < 0.6, gold, (gold + 1) % 3)  # ~60 % right
    better = paired_bootstrap({"t": gold}, {"t": good}, {"t": poor}, {"t": 3}, n_resamples=300)
    assert better["mean"]["low"] > 0 and better["t"]["p_better"] == 1.0
    tie = paired_bootstrap({"t": gold}, {"t": good}, {"t": good.copy()}, {"t": 3}, n_resamples=300)
    assert tie["mean"]["diff"] == 0 and tie["mean"]["low"] <= 0 <= tie["mean"]["high"]


def test_paired_bootstrap_leaves_unlabelled_rows_out() -> None:
    from training.metrics import paired_bootstrap

    gold = np.array([0, 1, 0, 1, -100, -100] * 20)
    right = np.array([0, 1, 0, 1, 1, 1] * 20)
    wrong_only_where_unlabelled = np.array([0, 1, 0, 1, 0, 0] * 20)
    r = paired_bootstrap({"t": gold}, {"t": right}, {"t": wrong_only_where_unlabelled}, {"t": 2}, n_resamples=100)
    assert r["mean"]["diff"] == 0 and r["mean"]["low"] == r["mean"]["high"] == 0
