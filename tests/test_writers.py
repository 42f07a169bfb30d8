"""Output writers: kept input fields, compressed outputs, atomic commit."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from inference.writers import RowWriter, output_format
from model.schema import Task

TASKS = [Task(name="topic", labels=("military", "politics"))]
PROBS = {"topic": [0.25, 0.75]}


def write_rows(path: Path, rows: list[dict], **kwargs) -> RowWriter:
    with RowWriter(path, TASKS, with_probs=False, **kwargs) as writer:
        for i, kept in enumerate(rows):
            writer.write(f"a{i}", PROBS, kept)
        assert not path.exists()  # nothing visible before the commit
    writer.commit()
    return writer


def test_keep_copies_named_fields_in_every_format(tmp_path: Path) -> None:
    rows = [{"source": "Sahara Wire", "date": "2020-01-02", "url": "https://x.example/1"},
            {"source": "Eastern Dawn", "date": None, "url": "https://x.example/2"}]
    keep = ["source", "date", "url"]
    write_rows(tmp_path / "s.jsonl.gz", rows, keep=keep)
    with gzip.open(tmp_path / "s.jsonl.gz", "rt", encoding="utf-8") as f:
        jsonl = [json.loads(line) for line in f]
    write_rows(tmp_path / "s.csv", rows, keep=keep)
    with open(tmp_path / "s.csv", encoding="utf-8", newline="") as f:
        flat_csv = list(csv.DictReader(f))
    write_rows(tmp_path / "s.parquet", rows, keep=keep)
    parquet = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["source"] for r in jsonl] == [r["source"] for r in flat_csv] == [r["source"] for r in parquet] == \
           ["Sahara Wire", "Eastern Dawn"]
    assert jsonl[1]["date"] is None and parquet[1]["date"] is None and flat_csv[1]["date"] == ""
    assert jsonl[0]["topic"] == parquet[0]["topic"] == "politics"


def test_keep_all_fixes_flat_columns_from_the_first_row(tmp_path: Path) -> None:
    rows = [{"source": "A", "views": 12}, {"source": "B", "views": 3, "extra": [1, 2]}]
    writer = write_rows(tmp_path / "s.parquet", rows, keep_all=True)
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names[-2:] == ["source", "views"] and table.column("views").to_pylist() == ["12", "3"]
    assert writer.dropped_fields == {"extra"}
    write_rows(tmp_path / "s.jsonl", rows, keep_all=True)
    last = json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert last["extra"] == [1, 2] and last["views"] == 3  # JSONL keeps every field and its JSON type


def test_keep_refuses_a_field_that_would_overwrite_a_score(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--keep topic: would overwrite"):
        RowWriter(tmp_path / "s.jsonl", TASKS, with_probs=False, keep=["topic"])


def test_output_names(tmp_path: Path) -> None:
    assert output_format("a.csv.gz") == "csv"
    for bad in ("a.parquet.gz", "a.txt", "a.jsonl.zst"):
        with pytest.raises(ValueError, match="output must end in"):
            output_format(bad)


def test_plain_values_from_parquet_inputs() -> None:
    from inference.writers import plain_value

    assert plain_value({"when": dt.datetime(2020, 1, 2, 3, 4), "tags": ("a",)}) == \
           {"when": "2020-01-02T03:04:00", "tags": ["a"]}
