"""Validation of labelled files: every problem named with file:line, field and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.modeling import IGNORE_INDEX
from model.preprocess import Preprocessing
from model.schema import Task
from training.config import DataArgs
from training.data import DataError, load_labelled

TASKS = [Task("topic", ("politics", "economy")), Task("stance", ("favor", "against", "none"))]
PRE = Preprocessing(normalizer="arabert_v02")


def load(tmp_path: Path, lines: list[str]) -> list:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_labelled(str(path), DataArgs(), TASKS, PRE)


def problems(tmp_path: Path, lines: list[str]) -> str:
    with pytest.raises(DataError) as err:
        load(tmp_path, lines)
    return str(err.value)


GOOD = '{"id": "1", "text": "خبر عن الاقتصاد", "topic": "economy", "stance": "none"}'


def test_valid_file_and_masked_labels(tmp_path: Path) -> None:
    articles = load(tmp_path, [GOOD, '{"id": "2", "text": "خبر سياسي", "topic": "politics"}'])
    assert [a.labels for a in articles] == [[1, 2], [0, IGNORE_INDEX]]


def test_unknown_label_names_line_field_and_allowed(tmp_path: Path) -> None:
    msg = problems(tmp_path, [GOOD, '{"id": "2", "text": "نص", "topic": "sport", "stance": "none"}'])
    assert "train.jsonl:2: field 'topic': unknown label 'sport'; allowed: politics, economy" in msg


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "2", "topic": "economy", "stance": "none"}', "train.jsonl:2: field 'text': missing"),
        ('{"id": "2", "text": "   ", "topic": "economy", "stance": "none"}', "train.jsonl:2: field 'text': empty text"),
        ('{"id": "2", "text": 5, "topic": "economy", "stance": "none"}', "field 'text': must be a string, got int"),
        ('{"id": "2", "text": "ًٌٍَُِّْـ", "topic": "economy"}', "text is empty after normalisation"),
        ('{"id": "1", "text": "نص", "topic": "economy"}', "train.jsonl:2: field 'id': duplicate id '1' (first on line 1)"),
        ('{"text": "نص", "topic": "economy"}', "train.jsonl:2: field 'id': missing or empty id"),
        ('{"id": "2", "text": "نص"', "train.jsonl:2: invalid JSON"),
    ],
)
def test_each_problem_kind(tmp_path: Path, line: str, expected: str) -> None:
    assert expected in problems(tmp_path, [GOOD, line])


def test_missing_column_is_reported(tmp_path: Path) -> None:
    msg = problems(tmp_path, ['{"id": "1", "text": "نص", "topic": "economy"}'])
    assert "no record has a label for task(s) ['stance']" in msg


def test_all_problems_listed_at_once(tmp_path: Path) -> None:
    msg = problems(tmp_path, [GOOD, '{"id": "2", "text": ""}', '{"id": "3", "text": "x", "topic": "bad"}'])
    assert "2 problem(s)" in msg and ":2:" in msg and ":3:" in msg


def test_skip_invalid_trains_on_the_valid_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(GOOD + '\n{"id": "2", "text": ""}\n', encoding="utf-8")
    articles = load_labelled(str(path), DataArgs(skip_invalid=True), TASKS, PRE)
    assert [a.id for a in articles] == ["1"]
    assert "train.jsonl:2: field 'text': empty text" in capsys.readouterr().err


def test_record_with_no_label_for_any_task_is_an_error(tmp_path: Path) -> None:
    msg = problems(tmp_path, [GOOD, '{"id": "2", "text": "خبر بلا تصنيف", "topic": "", "stance": null}'])
    assert "train.jsonl:2: no label for any task (fields 'topic', 'stance' are all missing or empty)" in msg


def test_skip_invalid_drops_records_with_no_label(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(GOOD + '\n{"id": "2", "text": "خبر بلا تصنيف"}\n', encoding="utf-8")
    articles = load_labelled(str(path), DataArgs(skip_invalid=True), TASKS, PRE)
    assert [a.id for a in articles] == ["1"]
    assert "train.jsonl:2: no label for any task" in capsys.readouterr().err
