"""Record files: every format and compression reads the same records with line numbers."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.records import RecordFileError, detect_format, iter_records

ROWS = [
    {"id": "a1", "title": "عنوان", "text": "نص أول، فيه \"اقتباس\"\nوسطر ثان"},
    {"id": "a2", "title": "", "text": "نص ثان"},
]


def write(path: Path, fmt: str, gz: bool | str) -> Path:
    if fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode()
    elif fmt == "csv":
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["id", "title", "text"])
        writer.writeheader()
        writer.writerows(ROWS)
        data = buf.getvalue().encode()
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(ROWS), sink)
        data = sink.getvalue().to_pybytes()
    if gz == "zst":
        import zstandard

        half = len(data) // 2  # two frames, as `cat a.zst b.zst` makes: both must be read
        data = zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    elif gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("gz", [False, True, "zst"])
def test_all_formats_read_the_same(tmp_path: Path, fmt: str, gz: bool | str) -> None:
    suffix = {False: "", True: ".gz", "zst": ".zst"}[gz]
    path = write(tmp_path / f"d.{fmt}{suffix}", fmt, gz)
    records = list(iter_records(path))
    assert [r.data for r in records] == ROWS
    assert all(r.error is None for r in records)


def test_csv_line_numbers_count_embedded_newlines(tmp_path: Path) -> None:
    records = list(iter_records(write(tmp_path / "d.csv", "csv", False)))
    assert [r.line for r in records] == [2, 4]  # record 1 spans lines 2-3


def test_jsonl_bad_lines_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "1", "text": "x"}\n\n{"id": 2,\n[1, 2]\n\xff\xfe{"id": "3"}\n')
    got = [(r.line, r.error) for r in iter_records(path)]
    assert got[0] == (1, None)
    assert got[1][0] == 3 and got[1][1].startswith("invalid JSON")
    assert got[2] == (4, "not a JSON object (got list)")
    assert got[3][0] == 5 and got[3][1].startswith("invalid UTF-8")


def test_skip_resumes_after_records(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", "jsonl", False)
    assert [r.data["id"] for r in iter_records(path, skip=1)] == ["a2"]


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match="cannot tell the format"):
        detect_format("dump.txt")
    with pytest.raises(RecordFileError, match="no such file"):
        list(iter_records(tmp_path / "missing.jsonl"))


def test_expand_inputs_takes_a_file_a_glob_or_a_folder(tmp_path: Path) -> None:
    from model.records import expand_inputs

    (tmp_path / "in").mkdir()
    a = write(tmp_path / "in" / "a.jsonl", "jsonl", False)
    b = write(tmp_path / "in" / "b.csv.zst", "csv", "zst")
    (tmp_path / "in" / "README.md").write_text("not data", encoding="utf-8")
    (tmp_path / "in" / ".b.csv.zst.tmp.jsonl").write_text("", encoding="utf-8")  # a writer's hidden temp file
    assert expand_inputs(a) == [a]
    assert expand_inputs(tmp_path / "in") == [a, b]
    assert expand_inputs(str(tmp_path / "in" / "*.zst")) == [b]
