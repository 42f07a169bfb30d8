"""Article-level training: batches of whole articles, loss on aggregated window logits,
frozen layers out of dropout, and the precision that ``auto`` picks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from model.hardware import auto_uses_bf16
from model.modeling import MultiTaskClassifier
from model.preprocess import Preprocessing, aggregate_windows
from model.schema import Task
from model.tiny import build_tiny_backbone
from training.data import Article, Collator, article_dataset, window_dataset
from training.train import batch_loss, freeze, mixed_precision_for, train_mode

TASKS = [Task("topic", ("military", "politics")), Task("stance", ("favor", "against", "none"))]
PRE = Preprocessing(max_length=16, stride=2, max_windows=3, predict_max_windows=3)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    texts = ["اشتباكات في جنوب طرابلس", "جلسة للبرلمان في طبرق", "ارتفاع أسعار الوقود في سبها"] * 10
    return build_tiny_backbone(texts, tmp_path_factory.mktemp("bb") / "tiny", vocab_size=150)


def articles() -> list[Article]:
    long = " ".join(["اشتباكات في جنوب طرابلس"] * 12)  # several 16-token windows
    return [Article("a", "", long, [0, 1], 1), Article("b", "", "جلسة للبرلمان في طبرق", [1, 2], 2)]


def test_article_batch_keeps_each_article_once_with_its_windows(backbone: str) -> None:
    tok = AutoTokenizer.from_pretrained(backbone)
    rows = article_dataset(articles(), tok, PRE, training=True)
    windows = window_dataset(articles(), tok, PRE, training=True)
    batch = Collator(tok)([rows[0], rows[1]])
    assert batch["labels"].tolist() == [[0, 1], [1, 2]]  # one label row per article
    n_long = len(rows[0]["windows"])
    assert n_long == 3  # capped by max_windows
    assert batch["window_article"].tolist() == [0] * n_long + [1]
    assert batch["input_ids"].shape[0] == len(windows) == n_long + 1


def test_article_loss_scores_the_aggregated_prediction(backbone: str) -> None:
    """The loss is the cross-entropy of the article's aggregated logits, i.e. of what
    inference predicts: an article with three windows weighs as much as one with one."""
    tok = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(backbone, TASKS, pooling="mean").eval()
    batch = Collator(tok)(list(article_dataset(articles(), tok, PRE, training=True)))
    loss = batch_loss(model, batch, PRE.aggregation)
    window_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = sum(
        torch.nn.functional.cross_entropy(aggregate_windows(window_logits[t.name], batch["window_article"], 2, "mean"),
                                          batch["labels"][:, i])
        for i, t in enumerate(TASKS)
    )
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_frozen_layers_stay_out_of_dropout(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS, pooling="mean")
    freeze(model, embeddings=True, layers=1)
    train_mode(model)
    layers = model.encoder.encoder.layer
    assert not model.encoder.embeddings.training and not layers[0].training
    assert layers[1].training and model.heads.training
    torch.manual_seed(0)
    ids = torch.randint(5, model.config.encoder_config.vocab_size, (2, 12))
    frozen = lambda: layers[0](model.encoder.embeddings(input_ids=ids))  # noqa: E731
    assert torch.equal(frozen(), frozen())  # deterministic: no dropout in frozen parts


def test_auto_precision_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NABAA_CPU_BF16", "0")
    assert not auto_uses_bf16("cpu")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert mixed_precision_for("auto") == "no"
    assert mixed_precision_for("bf16") == "bf16"
