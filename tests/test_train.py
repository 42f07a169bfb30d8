"""Training end to end: the run directory, best/ round trip, reports, two CPU processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from inference import Classifier
from tests.conftest import ROOT, corpus_overrides, run, train_command


def test_run_dir_layout_and_resolved_config(trained_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "best", "checkpoints", "report/dev/report.md"):
        assert (trained_run / name).exists(), name
    saved = yaml.safe_load((trained_run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["epochs"] == 2  # the override, not the file's value
    assert yaml.safe_load((trained_run / "best" / "run_config.yaml").read_text(encoding="utf-8")) == saved
    evals = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["epoch"] for e in evals] == [1, 2]
    assert set(evals[0]["dev"]) == {"topic", "stance_gna", "stance_haftar"}


def test_best_is_a_loadable_model_with_card_and_calibration(trained_run: Path) -> None:
    best = trained_run / "best"
    for name in ("model.safetensors", "config.json", "preprocess.json", "calibration.json", "README.md",
                 "tokenizer.json"):
        assert (best / name).exists(), name
    calibration = json.loads((best / "calibration.json").read_text())
    assert set(calibration) == {"topic", "stance_gna", "stance_haftar"}
    assert all(v["temperature"] > 0 for v in calibration.values())
    clf = Classifier.from_pretrained(best, device="cpu")
    assert clf.labels("stance_gna") == ["favor", "against", "none"]
    assert "## Schema" in (best / "README.md").read_text(encoding="utf-8")


def test_bad_data_fails_before_training(small_corpus: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "نص", "topic": "sport", "stance_gna": "none", "stance_haftar": "none"}\n',
                   encoding="utf-8")
    result = run(train_command("configs/tiny.yaml", f"data.train_file={bad}", f"data.dev_file={small_corpus['dev']}",
                               f"output_dir={tmp_path / 'run'}"))
    assert result.returncode == 2
    assert f"{bad}:1: field 'topic': unknown label 'sport'" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_existing_run_is_not_overwritten(trained_run: Path, small_corpus: dict) -> None:
    result = run(train_command("configs/tiny.yaml", *corpus_overrides(small_corpus, trained_run)))
    assert result.returncode != 0 and "pass --resume" in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("feature_cache", [False, True], ids=["tokens", "feature_cache"])
def test_two_cpu_processes(small_corpus: dict, tmp_path: Path, feature_cache: bool) -> None:
    """`accelerate launch --cpu --num_processes 2` silently starts one process; this form starts two.
    With the feature cache, rank 0 builds the store and rank 1 opens it."""
    out = tmp_path / "ddp"
    cache = ["model.freeze_embeddings=true", "model.freeze_layers=1", "train.feature_cache=true"] if feature_cache else []
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    cmd = [str(ROOT / ".venv/bin/accelerate") if (ROOT / ".venv/bin/accelerate").exists() else "accelerate",
           "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "training.train", "--config", "configs/tiny.yaml",
           *corpus_overrides(small_corpus, out), "train.epochs=1", "train.final_report=false",
           "train.report_to=[tensorboard]", *cache]
    result = run(cmd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert ("feature cache:" in result.stdout) == feature_cache
    # both ranks wrote their RNG state into the checkpoint
    [checkpoint] = list((out / "checkpoints").glob("step_*"))
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    Classifier.from_pretrained(out / "best", device="cpu")
    assert list((out / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs through accelerate's tracker"
