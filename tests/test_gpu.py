"""GPU paths (bf16 training and scoring). Skipped cleanly where there is no CUDA device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference import Classifier
from tests.conftest import corpus_overrides, run, train_command

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_training_and_scoring_on_gpu(small_corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = run(train_command("configs/tiny.yaml", *corpus_overrides(small_corpus, out), "train.epochs=1",
                               "train.mixed_precision=auto"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mixed precision bf16" in result.stdout
    clf = Classifier.from_pretrained(out / "best", device="cuda")
    assert clf.model.dtype == torch.bfloat16
    [pred] = clf.predict(["اشتباكات جنوب طرابلس"])
    assert pred["topic"]["label"] in clf.labels("topic")
