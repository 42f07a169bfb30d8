"""training.finalize on a finished run: the user's own labelled articles choose the TF-IDF mix and
the temperatures, and the trained weights are left as they were."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tests.conftest import run, seed_records, write_jsonl


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
                  f"output_dir={copy}", f"data.dev_file={own}", "data.test_file=null"])
    assert result.returncode == 0, result.stderr[-3000:]

    after = json.loads((best / "calibration.json").read_text(encoding="utf-8"))
    assert set(after) == set(before)
    for task, fitted in after.items():
        assert fitted["fitted_on"] == str(own) and fitted["n"] == 40, task
        assert fitted["temperature"] > 0 and 0.0 <= fitted["lexical_weight"] < 1.0
    assert any(after[t]["temperature"] != before[t]["temperature"] for t in after)
    assert (best / "model.safetensors").read_bytes() == weights_before
    assert (copy / "report" / "dev" / "report.md").exists()
    assert "own_labelled.jsonl" in (best / "README.md").read_text(encoding="utf-8")
