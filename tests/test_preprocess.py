"""Windowing and window→article aggregation: one implementation for train, eval and inference."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model.preprocess import (
    ARABERT_TOKENS,
    EmptyTextError,
    Preprocessing,
    TokenizerVersionError,
    aggregate_windows,
    build_preprocessing,
    default_preprocessing,
)
from model.tiny import build_tiny_backbone

WORDS = "قالت مصادر في طرابلس إن الحكومة بحثت ملف الكهرباء والوقود مع البلديات".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    folder = build_tiny_backbone([" ".join(WORDS)] * 20, tmp_path_factory.mktemp("tiny") / "bb", vocab_size=200)
    return AutoTokenizer.from_pretrained(folder)


def test_long_article_is_windowed_with_overlap(tokenizer) -> None:
    pre = Preprocessing(max_length=32, stride=8, max_windows=3, predict_max_windows=50)
    text = " ".join(WORDS * 30)  # ~390 words
    [windows] = pre.windows(tokenizer, [text])
    assert len(windows) > 10
    assert all(len(w) <= 32 for w in windows)
    body = [w[1:-1] for w in windows]  # strip [CLS] ... [SEP]
    assert body[0][-8:] == body[1][:8], "consecutive windows overlap by `stride` tokens"
    # training keeps only max_windows per article; short articles stay one window
    [train_windows, short] = pre.windows(tokenizer, [text, "خبر قصير"], training=True)
    assert len(train_windows) == 3 and len(short) == 1


def test_tokenizers_release_that_loses_windows_is_refused(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """tokenizers 0.23.1/0.23.2 return one short overflow window: a long article would be read in
    part without a word. Windowed reading refuses them, naming the fix; one window needs no overflow."""
    import tokenizers

    monkeypatch.setattr(tokenizers, "__version__", "0.23.2")
    pre = Preprocessing(max_length=32, stride=8, max_windows=1, predict_max_windows=4)
    with pytest.raises(TokenizerVersionError, match=r"tokenizers>=0\.23\.3"):
        pre.windows(tokenizer, [" ".join(WORDS * 30)])
    [[one]] = pre.windows(tokenizer, ["خبر قصير"], training=True)
    assert one[0] == tokenizer.cls_token_id


def test_aggregations() -> None:
    logits = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 9.0], [5.0, 5.0]])
    owner = torch.tensor([0, 0, 1, 0])
    assert torch.allclose(aggregate_windows(logits, owner, 2, "mean"), torch.tensor([[3.0, 3.0], [0.0, 9.0]]))
    assert torch.allclose(aggregate_windows(logits, owner, 2, "max"), torch.tensor([[5.0, 5.0], [0.0, 9.0]]))
    assert torch.allclose(aggregate_windows(logits, owner, 2, "first"), torch.tensor([[1.0, 0.0], [0.0, 9.0]]))


def test_prepare_normalises_and_refuses_empty() -> None:
    pre = Preprocessing(normalizer="arabert_v02", text_prefix="passage: ")
    assert pre.prepare("مَرْحَبًا", title="عـــاجل") == "passage: عاجل مرحبا"
    with pytest.raises(EmptyTextError):
        pre.prepare("  ـــ  ")


def test_preprocess_json_round_trip(tmp_path: Path) -> None:
    pre = Preprocessing(normalizer="arabert_v02", max_length=100, stride=10, aggregation="max")
    pre.save(tmp_path)
    assert Preprocessing.load(tmp_path) == pre


def test_defaults_follow_the_backbone() -> None:
    assert default_preprocessing("aubmindlab/bert-base-arabertv02")["normalizer"] == "arabert_v02"
    assert default_preprocessing("embedded:multilingual-e5-small")["text_prefix"] == "passage: "


def test_auto_normaliser_reads_the_tokenizer_not_the_folder_name(tmp_path: Path) -> None:
    """A local AraBERT copy in a folder without "arabert" in its name used to get no normalisation."""
    from transformers import AutoTokenizer

    folder = build_tiny_backbone([" ".join(WORDS)] * 20, tmp_path / "encoder", vocab_size=200)
    plain = AutoTokenizer.from_pretrained(folder)
    assert default_preprocessing(folder, plain)["normalizer"] == "none"
    arabert_like = AutoTokenizer.from_pretrained(folder)
    arabert_like.add_tokens(list(ARABERT_TOKENS))
    arabert_like.save_pretrained(folder)
    decided = default_preprocessing(folder, AutoTokenizer.from_pretrained(folder))
    assert decided["normalizer"] == "arabert_v02" and "[رابط]" in decided["reason"]
    args = SimpleNamespace(backbone=folder, normalizer="auto", text_prefix=None, max_length=64, stride=8,
                           max_windows=2, predict_max_windows=4, aggregation="mean")
    assert build_preprocessing(args, tokenizer=AutoTokenizer.from_pretrained(folder)).normalizer == "arabert_v02"
    assert build_preprocessing(SimpleNamespace(**{**vars(args), "normalizer": "none"}),
                               tokenizer=arabert_like).normalizer == "none"  # an explicit choice wins


def test_field_names_are_saved_with_the_preprocessing(tmp_path: Path) -> None:
    args = SimpleNamespace(backbone="tiny", normalizer="auto", text_prefix=None, max_length=64, stride=8,
                           max_windows=2, predict_max_windows=4, aggregation="mean")
    data = SimpleNamespace(text_field="body", title_field="headline", id_field="uid")
    build_preprocessing(args, data).save(tmp_path)
    saved = json.loads((tmp_path / "preprocess.json").read_text(encoding="utf-8"))
    assert (saved["text_field"], saved["title_field"], saved["id_field"]) == ("body", "headline", "uid")


def test_folders_saved_without_field_names_still_load(tmp_path: Path) -> None:
    old = {"normalizer": "none", "text_prefix": "", "title_separator": "\n", "max_length": 64, "stride": 8,
           "max_windows": 2, "predict_max_windows": 4, "aggregation": "mean"}
    (tmp_path / "preprocess.json").write_text(json.dumps(old), encoding="utf-8")
    pre = Preprocessing.load(tmp_path)
    assert (pre.text_field, pre.title_field, pre.id_field) == ("text", "title", "id")
    # ... and take them from their run config where it says more
    (tmp_path / "run_config.yaml").write_text("data:\n  title_field: headline\n  text_field: body\n",
                                              encoding="utf-8")
    pre = Preprocessing.load(tmp_path)
    assert (pre.text_field, pre.title_field, pre.id_field) == ("body", "headline", "id")
