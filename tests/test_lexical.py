"""model/lexical.py: the TF-IDF scorer saved in model folders reproduces the fitted baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.lexical import LEXICAL_CONFIG, LexicalModel, fuse
from model.preprocess import Preprocessing
from model.schema import Task
from training.baseline import Baseline
from training.config import load_config
from training.data import load_labelled

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seeds():
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    pre = Preprocessing(text_prefix="passage: ")
    train = load_labelled(str(ROOT / "seeds" / "train.jsonl"), cfg.data, cfg.tasks, pre)[:150]
    dev = load_labelled(str(ROOT / "seeds" / "dev.jsonl"), cfg.data, cfg.tasks, pre)
    return cfg.tasks, train, dev


def test_saved_lexical_model_gives_the_baselines_probabilities(seeds, tmp_path: Path) -> None:
    tasks, train, dev = seeds
    baseline = Baseline(tasks).fit(train)
    baseline.to_lexical().save(tmp_path)
    assert (tmp_path / LEXICAL_CONFIG).exists()
    loaded = LexicalModel.load(tmp_path)
    expected = baseline.predict_proba(dev)
    got = loaded.log_proba([a.prepared for a in dev])
    for task in tasks:
        np.testing.assert_allclose(np.exp(got[task.name]), expected[task.name], atol=1e-4)
        assert (got[task.name].argmax(1) == expected[task.name].argmax(1)).mean() > 0.98


def test_two_seen_classes_and_an_unseen_label_round_trip(seeds, tmp_path: Path) -> None:
    _, train, dev = seeds
    # a 3-label task whose training data only ever has labels 0 and 1: a binary regression inside
    task = Task("military_or_politics", ("military", "politics", "never"))
    keep = [a for a in train if a.labels[0] in (0, 1)]
    for a in keep:
        a.labels = [a.labels[0]]
    baseline = Baseline([task]).fit(keep)
    lexical = baseline.to_lexical()
    lexical.save(tmp_path)
    got = np.exp(LexicalModel.load(tmp_path).log_proba([a.prepared for a in dev])[task.name])
    np.testing.assert_allclose(got, baseline.predict_proba(dev)[task.name], atol=1e-4)
    assert got[:, 2].max() < 1e-6, "a label never seen in training gets no probability"


def test_fuse_leaves_logits_alone_without_a_lexical_part() -> None:
    logits = np.array([[1.0, -2.0, 0.5]])
    assert fuse(logits, None, 0.7) is logits
    assert fuse(logits, np.log(np.full((1, 3), 1 / 3)), 0.0) is logits
    lexical = np.log(np.array([[0.1, 0.1, 0.8]]))
    fused = fuse(logits, lexical, 1.0)
    np.testing.assert_allclose(fused, lexical)
    half = fuse(logits, lexical, 0.5)
    assert half.argmax() == 2  # the lexical part moved the decision


def test_a_folder_without_lexical_files_loads_none(tmp_path: Path) -> None:
    assert LexicalModel.load(tmp_path) is None


def test_classifier_scores_are_the_dev_chosen_mix(trained_run: Path, small_corpus) -> None:
    import json

    from inference import Classifier
    from inference.classifier import _softmax

    best = trained_run / "best"
    calibration = json.loads((best / "calibration.json").read_text(encoding="utf-8"))
    assert (best / LEXICAL_CONFIG).exists() and all("lexical_weight" in c for c in calibration.values())
    clf = Classifier.from_pretrained(best, device="cpu", dtype="fp32")
    texts = [json.loads(line) for line in small_corpus["test"].read_text(encoding="utf-8").splitlines()][:6]
    prepared = [clf.prepare(t["text"], t["title"]) for t in texts]
    raw = clf.logits_prepared(prepared)
    lexical = LexicalModel.load(best).log_proba(prepared)
    got = clf.predict_proba(texts)
    for task in clf.tasks:
        c = calibration[task.name]
        expected = _softmax(fuse(raw[task.name], lexical[task.name], c["lexical_weight"]) / c["temperature"])
        np.testing.assert_allclose(got[task.name], expected, atol=1e-5)
