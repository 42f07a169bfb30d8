"""training.import_labels: the Label Studio round trip gives back the same labels, validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.select import SelectArgs, label_studio_tasks
from model.preprocess import build_preprocessing
from tests.conftest import TASKS, seed_records
from training.config import load_config
from training.data import DataArgs, load_labelled
from training.import_labels import ExportError, import_labels, main

CONFIG = "configs/tiny.yaml"


@pytest.fixture(scope="module")
def schema() -> tuple:
    cfg = load_config(CONFIG)
    return cfg.tasks, build_preprocessing(cfg.model)


def picked_rows(n: int) -> list[dict]:
    """Rows as inference.select writes them, for seeds articles (guesses = a wrong label)."""
    rows = []
    for rank, record in enumerate(seed_records("dev", n), start=1):
        article = {k: v for k, v in record.items() if k not in TASKS}
        guess = {task: labels[-1] for task, labels in TASKS.items()}
        rows.append({**article, "guess": guess, "scores": dict.fromkeys(TASKS, 0.4), "uncertainty": 0.8,
                     "rank": rank})
    return rows


def annotate(import_tasks: list[dict], labels: list[dict], start_id: int = 100) -> list[dict]:
    """What Label Studio's JSON export holds after an annotator chose ``labels`` for each task."""
    exported = []
    for k, (task, chosen) in enumerate(zip(import_tasks, labels)):
        result = [{"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [label]}}
                  for name, label in chosen.items()]
        exported.append({"id": start_id + k, "data": task["data"], "predictions": task["predictions"],
                         "annotations": [{"id": k, "result": result, "was_cancelled": False,
                                          "updated_at": "2026-12-03T10:00:00Z"}]})
    return exported


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def test_round_trip_gives_back_the_labels(tmp_path: Path, schema: tuple) -> None:
    tasks, pre = schema
    gold = seed_records("dev", 8)
    import_tasks = label_studio_tasks(picked_rows(8), SelectArgs(model="m", input="i", out="o.jsonl"), "nabaa:test")
    export = write_json(tmp_path / "export.json", annotate(import_tasks, [{t: r[t] for t in TASKS} for r in gold]))
    summary = import_labels(export, tmp_path / "labels.jsonl", tasks, pre)
    assert (summary.written, summary.unlabelled) == (8, 0)
    back = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    for record, original in zip(back, gold):
        assert {k: record[k] for k in ("id", "title", "text", *TASKS)} == {k: original[k] for k in
                                                                          ("id", "title", "text", *TASKS)}
        assert "uncertainty" not in record
    # ... and the file is accepted by training's validation as is.
    articles = load_labelled(str(tmp_path / "labels.jsonl"), DataArgs(), tasks, pre)
    assert [a.id for a in articles] == [r["id"] for r in gold]


def test_latest_annotation_wins_cancelled_and_unlabelled_left_out(tmp_path: Path, schema: tuple) -> None:
    tasks, pre = schema
    import_tasks = label_studio_tasks(picked_rows(3), SelectArgs(model="m", input="i", out="o.jsonl"), "v")
    exported = annotate(import_tasks, [{"topic": "military"}, {"topic": "economy"}, {"topic": "health"}])
    newer = {"id": 9, "was_cancelled": False, "updated_at": "2026-12-04T00:00:00Z",
             "result": [{"from_name": "topic", "type": "choices", "value": {"choices": ["politics"]}}]}
    exported[0]["annotations"].insert(0, newer)
    exported[1]["annotations"][0]["was_cancelled"] = True
    exported[2]["annotations"] = []
    summary = import_labels(write_json(tmp_path / "e.json", exported), tmp_path / "l.jsonl", tasks, pre)
    assert (summary.written, summary.unlabelled) == (1, 2)
    [record] = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()]
    # Partially annotated: only topic; training masks the stance heads for this record.
    assert record["topic"] == "politics" and "stance_gna" not in record


def test_bad_label_reported_per_label_studio_task_and_nothing_written(tmp_path: Path, schema: tuple,
                                                                     capsys: pytest.CaptureFixture) -> None:
    tasks, pre = schema
    import_tasks = label_studio_tasks(picked_rows(3), SelectArgs(model="m", input="i", out="o.jsonl"), "v")
    exported = annotate(import_tasks, [{"topic": "military"}, {"topic": "sports"}, {"stance_gna": "favor"}])
    export = write_json(tmp_path / "e.json", exported)
    out = tmp_path / "l.jsonl"
    with pytest.raises(ExportError) as err:
        import_labels(export, out, tasks, pre)
    message = str(err.value)
    assert "task #2 (Label Studio id 101): field 'topic': unknown label 'sports'" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json"]  # nothing written, no temp file left
    exported[0]["annotations"][0]["result"][0]["from_name"] = "mood"
    assert main(["--export", str(write_json(tmp_path / "e2.json", exported)), "--config", CONFIG,
                 "--out", str(out)]) == 2
    assert "task #1 (Label Studio id 100): choices control 'mood' is not a task" in capsys.readouterr().err
    assert main(["--export", str(write_json(tmp_path / "min.json", [{"text": "x", "topic": "military"}])),
                 "--config", CONFIG, "--out", str(out)]) == 2
    assert "JSON-MIN" in capsys.readouterr().err
