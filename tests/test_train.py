"""Training end to end: the run directory, best/ round trip, reports, two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Dataset

from inference import Classifier, UncalibratedWarning
from model.tiny import build_tiny_backbone
from tests.conftest import ROOT, corpus_overrides, run, seed_records, train_command, write_jsonl
from training.calibration import MAX_T, MIN_T


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
    clf = Classifier.from_pretrained(best, device="cpu")
    assert clf.calibrated
    assert clf.labels("stance_gna") == ["favor", "against", "none"]
    assert "## Schema" in (best / "README.md").read_text(encoding="utf-8")


def dev_nll(logits: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(gold)), gold]))


def test_saved_temperatures_minimise_dev_nll(trained_run: Path, small_corpus: dict) -> None:
    """Each task's temperature is the one that makes dev scores honest: moving it either way
    within the allowed range, or dropping it (T=1), gives a worse dev log-loss. (The old
    check, `temperature > 0`, held for any value: the fit clips it.)"""
    clf = Classifier.from_pretrained(trained_run / "best", device="cpu")
    records = [json.loads(x) for x in small_corpus["dev"].read_text(encoding="utf-8").splitlines()]
    raw = clf.logits(records, calibrated=False)
    for task in clf.tasks:
        keep = [i for i, r in enumerate(records) if r.get(task.name)]
        gold = np.array([task.labels.index(records[i][task.name]) for i in keep])
        logits, t = raw[task.name][keep], clf.temperature(task.name)
        best = dev_nll(logits, gold, t)
        # Within the allowed range (a near-uniform tiny model may want a temperature past MAX_T).
        others = [x for x in (t / 1.25, t * 1.25, 1.0) if MIN_T <= x <= MAX_T]
        for other in others:
            assert best <= dev_nll(logits, gold, other) + 1e-6, (task.name, t, other)


def test_folder_without_calibration_says_so(trained_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "best"
    shutil.copytree(trained_run / "best", folder)
    (folder / "calibration.json").unlink()
    with pytest.warns(UncalibratedWarning, match="uncalibrated"):
        clf = Classifier.from_pretrained(folder, device="cpu")
    assert not clf.calibrated


@pytest.mark.slow
def test_best_is_calibrated_without_finalisation(small_corpus: dict, tmp_path: Path) -> None:
    """`best/` used to get calibration.json only from finalisation: after a kill or --no-finalize
    its scores were silently uncalibrated. The same run checks that a task's ``mentions`` reach the
    saved model when its class weights are resolved (``auto``) at training time."""
    out = tmp_path / "run"
    config = (ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8").replace(
        "{name: stance_haftar, labels: [favor, against, none]}",
        "{name: stance_haftar, labels: [favor, against, none], class_weights: auto, mentions: [حفتر, ليبي]}")
    (tmp_path / "tiny.yaml").write_text(config, encoding="utf-8")
    result = run(train_command(str(tmp_path / "tiny.yaml"), *corpus_overrides(small_corpus, out), "train.epochs=1",
                               "--no-finalize"))
    assert result.returncode == 0, result.stderr[-3000:]
    haftar = Classifier.from_pretrained(out / "best", device="cpu").tasks[2]
    assert haftar.mentions == ("حفتر", "ليبي") and isinstance(haftar.class_weights, tuple)
    calibration = json.loads((out / "best" / "calibration.json").read_text(encoding="utf-8"))
    assert set(calibration) == {"topic", "stance_gna", "stance_haftar"}
    assert {v["fitted_when"] for v in calibration.values()} == {"training, epoch 1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedWarning)
        assert Classifier.from_pretrained(out / "best", device="cpu").calibrated


def test_training_process_group_uses_the_configured_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """torch's default (10 min under NCCL) would end a run whose rank 0 works alone longer."""
    import training.train as train_module
    from training.config import load_config

    seen = {}

    class Stop(Exception):
        pass

    def fake_accelerator(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(train_module, "Accelerator", fake_accelerator)
    cfg = load_config("configs/tiny.yaml", [f"output_dir={tmp_path}", "train.process_group_timeout=5400"])
    with pytest.raises(Stop):
        train_module.training_function(cfg)
    [handler] = [h for h in seen["kwargs_handlers"] if hasattr(h, "timeout")]
    assert handler.to_kwargs()["timeout"].total_seconds() == 5400


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


def partially_labelled_corpus(folder: Path) -> tuple[Path, str]:
    """64 seeds articles, a quarter labelled for stance_haftar and a third without a topic, and a
    tiny backbone without dropout shared by the runs (so they differ only by how they are run)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = seed_records("train", 64)
    for i, record in enumerate(records):
        if i % 4:
            del record["stance_haftar"]
        if i % 3 == 1:
            record["topic"] = ""
    train = write_jsonl(folder / "train.jsonl", records)
    backbone = build_tiny_backbone([r["text"] for r in records], folder / "backbone", vocab_size=2000, seed=1)
    config = json.loads((folder / "backbone" / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "backbone" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return train, backbone


def batches_lacking(records: list[dict], task: str, batch_size: int, epochs: int, seed: int) -> int:
    """How many per-process batches of the run have no label for ``task`` (same shuffle as the loop)."""
    lacking = 0
    for epoch in range(epochs):
        order = Dataset.from_dict({"i": list(range(len(records)))}).shuffle(seed=seed + epoch)["i"]
        for start in range(0, len(order), batch_size):
            lacking += not any(records[i].get(task) for i in order[start:start + batch_size])
    return lacking


def eval_curve(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["dev_mean_macro_f1"] for x in lines if '"eval"' in x]


@pytest.mark.slow
def test_two_cpu_processes_on_partial_labels_match_one(tmp_path: Path) -> None:
    """DDP (two gloo processes) on partially labelled data where some batches lack a task: it
    used to fail on the step after such a batch (a head without gradient). It now completes and
    learns what one process with the same global batch learns. (`accelerate launch --cpu
    --num_processes 2` silently starts one process; this form starts two.)"""
    train, backbone = partially_labelled_corpus(tmp_path / "data")
    records = [json.loads(x) for x in train.read_text(encoding="utf-8").splitlines()]
    epochs, per_process = 4, 4
    assert batches_lacking(records, "stance_haftar", per_process, epochs, seed=13) >= 4
    assert batches_lacking(records, "topic", per_process, epochs, seed=13) >= 1
    # Evaluated on its own training file: the curve measures what was learnt, not generalisation.
    common = ["--config", "configs/tiny.yaml", f"data.train_file={train}", f"data.dev_file={train}",
              "data.test_file=null", f"model.backbone={backbone}", "model.pooling=mean", "model.head_dropout=0",
              "model.max_length=64", "model.stride=8", "model.max_windows=1", "model.predict_max_windows=1",
              f"train.epochs={epochs}", "train.learning_rate=5e-3", "train.patience=9",
              "train.mixed_precision='no'", "train.final_report=false", "train.calibrate=false"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    accelerate = str(ROOT / ".venv/bin/accelerate") if (ROOT / ".venv/bin/accelerate").exists() else "accelerate"
    two = run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.train", *common,
               f"train.batch_size={per_process}", f"output_dir={tmp_path / 'two'}", "train.report_to=[tensorboard]"],
              env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    one = run([sys.executable, "-m", "training.train", *common, f"train.batch_size={2 * per_process}",
               f"output_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-3000:]

    curve_two, curve_one = eval_curve(tmp_path / "two"), eval_curve(tmp_path / "one")
    assert len(curve_two) == len(curve_one) == epochs
    assert max(curve_two) > 0.6 and max(curve_one) > 0.6  # learnt (predicting the majority gives 0.18)
    # Same global batches; only the averaging of the loss over the two halves differs.
    assert max(abs(a - b) for a, b in zip(curve_two, curve_one)) < 0.1, (curve_two, curve_one)
    # both ranks wrote their RNG state into the checkpoint
    checkpoint = sorted((tmp_path / "two" / "checkpoints").glob("step_*"))[-1]
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    with pytest.warns(UncalibratedWarning):  # train.calibrate=false: and the loader says so
        assert not Classifier.from_pretrained(tmp_path / "two" / "best", device="cpu").calibrated
    assert list((tmp_path / "two" / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs through accelerate"


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
