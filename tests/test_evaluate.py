"""training.evaluate: the report's per-slice breakdown (``--by FIELD``)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from tests.conftest import corpus_overrides, run, train_command
from training.metrics import accuracy_by_slice


def test_accuracy_by_slice_matches_hand_counts_and_skips_unlabelled_rows() -> None:
    gold = {"topic": np.array([0, 1, 2, 0, 1, 2]), "stance": np.array([0, -100, 1, 1, 0, 0])}
    model = {"topic": np.array([0, 1, 0, 0, 1, 2]), "stance": np.array([0, 1, 1, 0, 0, 0])}
    tfidf = {"topic": np.array([1, 1, 2, 0, 0, 2]), "stance": np.array([1, 0, 1, 1, 0, 1])}
    table = accuracy_by_slice(["wire", "wire", "wire", "tv", "tv", "tv"], gold, {"model": model, "TF-IDF": tfidf},
                              n_resamples=300)
    assert table["wire"]["n"] == 3 and table["tv"]["n"] == 3
    # wire: topic model 2/3, TF-IDF 2/3; stance (row 2 unlabelled) model 2/2, TF-IDF 1/2
    assert np.isclose(table["wire"]["accuracy"]["model"], (2 / 3 + 1) / 2)
    assert np.isclose(table["wire"]["accuracy"]["TF-IDF"], (2 / 3 + 1 / 2) / 2)
    # tv: topic model 3/3, TF-IDF 2/3; stance model 2/3, TF-IDF 2/3
    assert np.isclose(table["tv"]["diff"], (1 + 2 / 3) / 2 - (2 / 3 + 2 / 3) / 2)
    assert table["tv"]["low"] <= table["tv"]["diff"] <= table["tv"]["high"]
    assert table["tv"]["compared"] == ["model", "TF-IDF"]


def test_evaluate_by_a_field_reports_every_value_with_its_article_count(trained_run: Path, small_corpus: dict,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run([sys.executable, "-m", "training.evaluate", "--model", str(trained_run / "best"),
                  "--data", str(small_corpus["test"]), "--out", str(out), "--by", "difficulty,hard_kind"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(x) for x in small_corpus["test"].read_text(encoding="utf-8").splitlines()]
    slices = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["slices"]
    assert {v: row["n"] for v, row in slices["difficulty"].items()} == dict(Counter(r["difficulty"] for r in records))
    kinds = Counter(r["hard_kind"] or "(none)" for r in records)
    assert {v: row["n"] for v, row in slices["hard_kind"].items()} == dict(kinds)
    assert set(slices["difficulty"]["normal"]["accuracy"]) == {"model", "transformer alone", "TF-IDF"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## By `difficulty`" in report and "## By `hard_kind`" in report


def test_training_reports_by_the_configured_fields(small_corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(train_command("configs/tiny.yaml", *corpus_overrides(small_corpus, out), "train.epochs=1",
                               "train.report_by=[difficulty]"))
    assert result.returncode == 0, result.stderr[-3000:]
    for split in ("dev", "test"):
        records = [json.loads(x) for x in small_corpus[split].read_text(encoding="utf-8").splitlines()]
        slices = json.loads((out / "report" / split / "metrics.json").read_text(encoding="utf-8"))["slices"]
        assert {v: row["n"] for v, row in slices["difficulty"].items()} == dict(Counter(r["difficulty"] for r in records))
        assert "## By `difficulty`" in (out / "report" / split / "report.md").read_text(encoding="utf-8")
