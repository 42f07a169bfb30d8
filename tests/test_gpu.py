"""GPU paths (bf16 training and scoring). Skipped cleanly where there is no CUDA device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import Classifier
from model.preprocess import Preprocessing
from tests.conftest import corpus_overrides, run, seed_records, train_command
from tests.test_quantize import reading_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_training_on_gpu_gives_a_model_cuda_and_cpu_score_alike(small_corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = run(train_command("configs/tiny.yaml", *corpus_overrides(small_corpus, out), "train.epochs=1",
                               "train.mixed_precision=auto"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mixed precision bf16" in result.stdout
    texts = [json.loads(x)["text"] for x in small_corpus["dev"].read_text(encoding="utf-8").splitlines()]
    cuda = Classifier.from_pretrained(out / "best", device="cuda", dtype="fp32").predict_proba(texts)
    cpu = Classifier.from_pretrained(out / "best", device="cpu", dtype="fp32").predict_proba(texts)
    for task in cpu:
        np.testing.assert_allclose(cuda[task], cpu[task], atol=1e-4)


def test_bf16_scoring_keeps_fp32_scores_and_labels(tmp_path: Path) -> None:
    """bf16 on CUDA against fp32 on CUDA, on a model whose labels vary from text to text."""
    texts = [r["text"] for r in seed_records("dev", 48)]
    model, tokenizer = reading_model(texts, outlier=0.0, folder=tmp_path)
    pre = Preprocessing(max_length=128, stride=16, predict_max_windows=2)
    fp32 = Classifier(model.to("cuda"), tokenizer, pre, {}, "cuda").predict_proba(texts)
    bf16_model = Classifier(model.to(device="cuda", dtype=torch.bfloat16), tokenizer, pre, {}, "cuda")
    assert bf16_model.model.dtype == torch.bfloat16
    bf16 = bf16_model.predict_proba(texts)
    for task in fp32:
        assert len(set(fp32[task].argmax(1))) >= 3  # labels vary: agreement means something
        assert np.abs(bf16[task] - fp32[task]).max() <= 0.05
        top2 = np.sort(fp32[task], axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.05  # bf16 rounding may flip a near tie, nothing else
        assert (bf16[task].argmax(1) == fp32[task].argmax(1))[clear].all()
