"""bench.writer_holdout: a writer's articles leave training entirely and become its test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import writer_holdout
from tests.conftest import ROOT, write_jsonl


def writer_records(split: str, writer: str, n: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "seeds" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if writer_holdout.writer_of(r) == writer][:n]


@pytest.fixture()
def two_writer_config(tmp_path: Path) -> Path:
    """configs/tiny.yaml over p7's and p8's articles, with the TF-IDF mix the bench compares."""
    files = {}
    for split, n in (("train", 24), ("dev", 10), ("test", 8)):
        records = writer_records(split, "p7", n) + writer_records(split, "p8", n)
        files[split] = write_jsonl(tmp_path / f"{split}.jsonl", records)
    raw = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    raw["data"] = {f"{s}_file": str(p) for s, p in files.items()}
    raw["train"].update({"epochs": 1, "fuse_lexical": True})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_fold_moves_every_article_of_the_writer_to_test_and_keeps_the_rest(two_writer_config: Path,
                                                                        tmp_path: Path) -> None:
    fold = writer_holdout.fold_config(two_writer_config, tmp_path / "fold", "p8")
    data = yaml.safe_load(fold.read_text(encoding="utf-8"))["data"]
    train, dev = ids(Path(data["train_file"])), ids(Path(data["dev_file"]))
    test = ids(tmp_path / "fold" / "test.jsonl")
    assert data["test_file"] is None  # the run does not score the held-out writer itself
    source = {s: ids(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert sorted(test) == sorted(i for s in source.values() for i in s if i.startswith("p8-"))
    assert train == [i for i in source["train"] if i.startswith("p7-")]
    assert dev == [i for i in source["dev"] if i.startswith("p7-")]
    # each article in one place; the other writers' test articles stay out (train and dev are
    # the recipe's own, less the writer)
    used = train + dev + test
    assert len(used) == len(set(used))
    assert sorted(used) == sorted(source["train"] + source["dev"] + [i for i in source["test"] if i.startswith("p8-")])


def test_unknown_writer_is_a_clear_error(two_writer_config: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no article of writer 'p99'"):
        writer_holdout.fold_config(two_writer_config, tmp_path / "fold", "p99")


def test_bench_scores_each_held_out_article_once_and_reuses_finished_runs(two_writer_config: Path,
                                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = writer_holdout.run(two_writer_config, ["p8"], work, retrain=False)
    held = result["per_writer"]["p8"]["held_out"]
    assert held["n"] == 24 + 10 + 8
    for system, row in held["macro_f1"].items():
        assert set(row) == {"topic", "stance_gna", "stance_haftar", "mean"}, system
        assert all(0.0 <= v <= 1.0 for v in row.values())
    boot = held["differences"]["shipped-tfidf"]["mean"]
    assert boot["low"] <= boot["diff"] <= boot["high"]
    assert result["pooled"]["held_out"]["macro_f1"] == held["macro_f1"]  # one writer: pooled is it
    weights = result["per_writer"]["p8"]["weights_chosen_on_dev"]
    assert set(weights) == {"topic", "stance_gna", "stance_haftar"}

    model = work / "p8" / "run" / "best" / "model.safetensors"
    before = model.stat().st_mtime_ns
    again = writer_holdout.run(two_writer_config, ["p8"], work, retrain=False)
    assert model.stat().st_mtime_ns == before  # the finished run was reused, not retrained
    assert again["pooled"]["held_out"]["macro_f1"] == result["pooled"]["held_out"]["macro_f1"]


def test_pooled_concatenates_writers_in_order() -> None:
    fold = {"held_out": {"preds": {"a": {"t": np.array([0, 1])}}, "gold": {"t": np.array([1, 1])}}}
    other = {"held_out": {"preds": {"a": {"t": np.array([2])}}, "gold": {"t": np.array([0])}}}
    preds, gold = writer_holdout.pooled({"p1": fold, "p2": other}, "held_out")
    assert preds["a"]["t"].tolist() == [0, 1, 2] and gold["t"].tolist() == [1, 1, 0]
