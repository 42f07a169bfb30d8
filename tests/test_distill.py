"""Distillation (training/distill.py): soft labels, the soft loss and a student run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import run, seed_records, write_jsonl

from model.modeling import MultiTaskClassifier
from model.schema import Task
from training.config import DataArgs
from training.data import Collator, DataError, article_dataset, load_labelled, window_dataset
from training.distill import student_layer_ids
from training.train import batch_loss

TASKS = [Task("topic", ("a", "b", "c")), Task("stance", ("x", "y"))]


class _Pre:
    """Preprocessing stand-in: the tests here read soft labels, not text."""

    aggregation = "mean"

    def prepare(self, text: str, title: str | None = None) -> str:
        return text

    def windows(self, tokenizer, texts, training):  # noqa: ANN001 - test double
        return [[[5, 6, 7]] * (1 + len(t) % 2) for t in texts]


def test_student_keeps_the_fine_tuned_top_and_the_lowest_pretrained_layers():
    assert student_layer_ids(12, 6, 9) == ([0, 1, 2, 9, 10, 11], 3)
    assert student_layer_ids(12, 6, 6) == ([6, 7, 8, 9, 10, 11], 0)  # all six fine-tuned ones
    assert student_layer_ids(12, 12, 9) == (list(range(12)), 9)
    with pytest.raises(ValueError, match="between 1 and"):
        student_layer_ids(12, 13, 9)


def test_soft_labels_are_read_beside_gold_and_may_stand_alone(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "1", "text": "one", "topic": "a", "stance": "x", "teacher": {"topic": [0.7, 0.2, 0.1], "stance": [0.5, 0.5]}},
        {"id": "2", "text": "two", "teacher": {"topic": [0.1, 0.1, 0.8]}},  # soft only, one task
    ])
    articles = load_labelled(str(path), DataArgs(soft_label_field="teacher"), TASKS, _Pre())
    assert articles[0].soft == [0.7, 0.2, 0.1, 0.5, 0.5]
    assert articles[1].soft == [0.1, 0.1, 0.8, -1.0, -1.0]
    assert articles[1].labels == [-100, -100]
    rows = window_dataset(articles, None, _Pre(), training=True)
    assert len(rows) == 4  # two windows each, every one carrying its article's soft labels
    assert all(r["soft"] == articles[r["article"]].soft for r in rows)


def test_bad_soft_labels_name_the_file_line_and_field(tmp_path: Path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "1", "text": "one", "topic": "a", "stance": "y"},
        {"id": "2", "text": "two", "teacher": {"topic": [0.5, 0.6, 0.1]}},
        {"id": "3", "text": "three", "teacher": {"topik": [1, 0, 0]}},
        {"id": "4", "text": "four"},
    ])
    with pytest.raises(DataError) as err:
        load_labelled(str(path), DataArgs(soft_label_field="teacher"), TASKS, _Pre())
    message = str(err.value)
    assert f"{path}:2: field 'teacher': task 'topic': expected 3 probabilities summing to 1" in message
    assert f"{path}:3: field 'teacher': unknown task 'topik'" in message
    assert f"{path}:4: no label for any task" in message


def _model() -> MultiTaskClassifier:
    torch.manual_seed(0)
    from transformers import BertConfig

    from model.modeling import MultiTaskConfig

    encoder = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)
    return MultiTaskClassifier(MultiTaskConfig.from_tasks(encoder, TASKS, pooling="mean"))


def test_soft_loss_is_smallest_at_the_teacher_and_skips_records_without_soft_labels():
    model = _model()
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    soft = torch.cat([teacher, torch.tensor([[0.5, 0.5], [-1.0, -1.0]])], dim=1)
    at_teacher = {"topic": teacher.log().requires_grad_(), "stance": torch.zeros(2, 2, requires_grad=True)}
    loss = model.soft_loss(at_teacher, soft)
    loss.backward()
    assert at_teacher["topic"].grad.abs().max() < 1e-6  # the teacher's own scores: nothing to learn
    assert at_teacher["stance"].grad[1].abs().max() == 0  # no soft label for record 2's stance
    elsewhere = {"topic": torch.zeros(2, 3), "stance": torch.zeros(2, 2)}
    assert model.soft_loss(elsewhere, soft) > model.soft_loss({k: v.detach() for k, v in at_teacher.items()}, soft)


def test_distill_weight_mixes_soft_and_gold_losses():
    model = _model()
    articles = [type("A", (), {"prepared": "ab", "labels": [0, -100], "soft": [0.1, 0.8, 0.1, 0.5, 0.5]})(),
                type("A", (), {"prepared": "abc", "labels": [-100, -100], "soft": [0.2, 0.2, 0.6, -1.0, -1.0]})()]

    class Tok:
        pad_token_id = 0

        def pad(self, enc, pad_to_multiple_of, return_tensors):  # noqa: ANN001 - test double
            ids = torch.tensor(enc["input_ids"])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    rows = article_dataset(articles, None, _Pre(), training=True)
    batch = Collator(Tok())([rows[0], rows[1]])
    model.eval()
    gold_only = batch_loss(model, batch, "mean", (0.0, 1.0))
    soft_only = batch_loss(model, batch, "mean", (1.0, 2.0))
    half = batch_loss(model, batch, "mean", (0.5, 2.0))
    assert torch.isclose(half, 0.5 * gold_only + 0.5 * soft_only)
    assert not torch.isclose(gold_only, soft_only)


def test_a_student_with_fewer_layers_trains_from_the_teacher_and_loads(trained_run: Path, tmp_path: Path):
    dev = seed_records("dev", 24)
    dump = [{"id": f"u{i}", "title": r.get("title", ""), "text": r["text"]} for i, r in enumerate(seed_records("train", 120)[48:])]
    dump += [{"id": "leak", "title": "", "text": dev[0]["text"]}, {"id": "u0", "text": "repeated id"}]
    dump_path = write_jsonl(tmp_path / "dump.jsonl", dump)
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "training.distill", "--teacher", str(trained_run / "best"), "--layers", "1",
           "--unlabelled", str(dump_path), "--output", str(out), "train.epochs=2"]
    result = run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]

    soft = [json.loads(line) for line in (out / "distill" / "soft_labels.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in soft]
    assert len(ids) == 48 + 72 and "leak" not in ids and ids.count("u0") == 1  # dev text and repeated id left out
    assert all(abs(sum(r["teacher"]["topic"]) - 1) < 1e-3 for r in soft)

    from inference import Classifier

    teacher = Classifier.from_pretrained(trained_run / "best", dtype="fp32")
    student = Classifier.from_pretrained(out / "best", dtype="fp32")
    assert student.model.encoder.config.num_hidden_layers == 1
    assert teacher.model.encoder.config.num_hidden_layers == 2
    assert student.task_names == teacher.task_names and student.calibrated
    assert (student.pre.normalizer, student.pre.text_prefix, student.pre.predict_max_windows) == \
        (teacher.pre.normalizer, teacher.pre.text_prefix, teacher.pre.predict_max_windows)
    texts = [r["text"] for r in dev]
    predictions = student.predict(texts)
    assert len(predictions) == len(texts)
    assert set(predictions[0]["topic"]) >= {"label", "score"}
    # Re-running reuses the soft labels and backbone; an existing run needs --resume, as training says.
    again = run(cmd)
    assert again.returncode != 0 and "already holds a run" in again.stderr + again.stdout
