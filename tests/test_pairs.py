"""(target, article) pairs (training/pairs.py, model.preprocess.with_target)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run, seed_records, write_jsonl

from model.preprocess import Preprocessing, with_target
from model.schema import Task
from training.config import DataArgs
from training.data import load_labelled
from training.pairs import PairError, pair_records, parse_target, write_pairs

TARGETS = {"stance_gna": "حكومة الوفاق الوطني", "stance_haftar": "خليفة حفتر"}


def test_each_labelled_target_becomes_one_pair_that_names_its_actor():
    record = {"id": "a1", "title": "عنوان", "text": "نص الخبر", "topic": "politics",
              "stance_gna": "favor", "stance_haftar": "against"}
    pairs = list(pair_records([(3, record)], TARGETS))
    assert [(p["id"], p["stance"], p["target"]) for p in pairs] == [
        ("a1::stance_gna", "favor", "stance_gna"), ("a1::stance_haftar", "against", "stance_haftar")]
    assert pairs[1]["title"] == "خليفة حفتر\nعنوان"
    assert pairs[0]["text"] == "نص الخبر" and pairs[0]["topic"] == "politics"
    # The per-target labels do not travel: a pair carries only its own stance.
    assert not {"stance_gna", "stance_haftar"} & set(pairs[0])


def test_a_target_without_a_label_gives_no_pair_rather_than_a_guessed_none():
    record = {"id": 7, "text": "نص", "stance_gna": "", "stance_haftar": "none"}
    assert [p["id"] for p in pair_records([(1, record)], TARGETS)] == ["7::stance_haftar"]


def test_with_target_opens_the_article_the_model_reads():
    pre = Preprocessing(text_prefix="passage: ")
    record = with_target({"title": "عنوان", "text": "نص"}, "حفتر")
    assert pre.prepare(record["text"], record["title"]) == "passage: حفتر\nعنوان\nنص"
    assert with_target("نص فقط", "حفتر") == {"text": "نص فقط", "title": "حفتر"}
    assert with_target({"text": "نص", "title": "  "}, "حفتر")["title"] == "حفتر"


def test_pair_files_load_as_a_single_stance_task(tmp_path: Path):
    src = write_jsonl(tmp_path / "train.jsonl", seed_records("train", 12))
    n = write_pairs(src, tmp_path / "pairs" / "train.jsonl", TARGETS)
    assert n == 24  # every seed article is labelled for both camps
    stance = Task("stance", ("favor", "against", "none"))
    articles = load_labelled(str(tmp_path / "pairs" / "train.jsonl"), DataArgs(), [stance], Preprocessing())
    assert len(articles) == 24 and len({a.id for a in articles}) == 24
    assert articles[1].prepared.startswith("خليفة حفتر\n")
    assert not list(tmp_path.glob("pairs/*.tmp"))


def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path: Path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "x", "stance_gna": "favor"}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(PairError, match=r"bad\.jsonl:2"):
        write_pairs(src, tmp_path / "out.jsonl", TARGETS)
    unlabelled = write_jsonl(tmp_path / "none.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(PairError, match="no record has a label"):
        write_pairs(unlabelled, tmp_path / "out.jsonl", TARGETS)
    assert not list(tmp_path.glob("out.jsonl*"))
    with pytest.raises(PairError, match="FIELD=PHRASE"):
        parse_target("stance_gna")


def test_command_line_writes_pairs(tmp_path: Path):
    src = write_jsonl(tmp_path / "dev.jsonl", seed_records("dev", 3))
    out = tmp_path / "pairs.jsonl"
    done = run([sys.executable, "-m", "training.pairs", str(src), "--out", str(out),
                "--target", "stance_haftar=خليفة حفتر"])
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(r["target"] == "stance_haftar" for r in rows)
    failed = run([sys.executable, "-m", "training.pairs", str(src), "--out", str(out), "--target", "oops"])
    assert failed.returncode == 2 and "FIELD=PHRASE" in failed.stderr
