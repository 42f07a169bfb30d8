"""training.finalize on a finished run: the user's own labelled articles choose the TF-IDF mix and
the temperatures, and the trained weights are left as they were."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from model.schema import Task
from tests.conftest import run, seed_records, write_jsonl
from training.finalize import calibrate


def test_refinalising_on_own_labelled_articles_refits_mix_and_temperatures_only(trained_run: Path,
                                                                                tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    best = copy / "best"
    weights_before = (best / "model.safetensors").read_bytes()
    before = json.loads((best / "calibration.json").read_text(encoding="utf-8"))
    # "their own" articles: a labelled set the run never used (seeds test articles past the corpus)
    own = write_jsonl(tmp_path / "own_labelled.jsonl", seed_records("test", 80)[40:])

    result = run([sys.executable, "-m", "training.finalize", "--config", str(copy / "config.yaml"),
                  f"output_dir={copy}", f"data.dev_file={own}", "data.test_file=null",
                  "train.max_lexical_weight={stance_gna: 0.0}"])
    assert result.returncode == 0, result.stderr[-3000:]

    after = json.loads((best / "calibration.json").read_text(encoding="utf-8"))
    assert set(after) == set(before)
    for task, fitted in after.items():
        assert fitted["fitted_on"] == str(own) and fitted["n"] == 40, task
        assert fitted["temperature"] > 0 and 0.0 <= fitted["lexical_weight"] < 1.0
    assert any(after[t]["temperature"] != before[t]["temperature"] for t in after)
    assert after["stance_gna"]["lexical_weight"] == 0.0  # the ceiling given for this task holds
    assert (best / "model.safetensors").read_bytes() == weights_before
    assert (copy / "report" / "dev" / "report.md").exists()
    assert "own_labelled.jsonl" in (best / "README.md").read_text(encoding="utf-8")


def test_the_ceiling_bounds_the_lexical_weight_chosen_on_dev() -> None:
    """A lexical model that is right where the transformer is wrong would take a large weight; a
    task given a ceiling gets no more than it, the others are untouched."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, size=200)
    wrong = rng.random(200) < 0.4  # the transformer is wrong on 40 % of the articles, more or less sure
    sure = rng.uniform(0.1, 3.0, size=200)
    logits = (np.where((gold == 1) ^ wrong, 1.0, -1.0) * sure)[:, None] * np.array([[-1.0, 1.0]])
    lexical = np.log(np.where(gold[:, None] == np.arange(2), 0.8, 0.2))  # right, but less sure
    tasks = [Task("topic", ("a", "b")), Task("stance", ("a", "b"))]
    dev = [SimpleNamespace(labels=[g, g]) for g in gold]
    fitted = calibrate(SimpleNamespace(tasks=tasks), dev, {"topic": logits, "stance": logits}, "dev.jsonl",
                       {"topic": lexical, "stance": lexical}, max_lexical_weight={"stance": 0.3})
    assert fitted["topic"]["lexical_weight"] > 0.5
    assert fitted["stance"]["lexical_weight"] == 0.3
