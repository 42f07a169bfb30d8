"""Output writers for scored dumps: JSONL, CSV and Parquet, each written to a temp
file and renamed into place, so a reader never sees half an output file.

Columns: ``id``, then per task ``<task>`` (label) and ``<task>_score`` (calibrated
probability of that label); with probabilities, JSONL adds ``<task>_probs``
(a label → probability object) and CSV/Parquet add ``<task>_prob_<label>`` columns.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.schema import Task

OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# Characters json.dumps leaves raw but str.splitlines() (and many JSONL readers) treat as line
# breaks: escaping them keeps one record per physical line for every reader.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_LINE_BREAKS_TABLE = str.maketrans(_LINE_BREAKS)


def json_line(value: Any) -> str:
    """One JSON Lines record: UTF-8 text kept readable, line-breaking characters escaped.

    >>> json_line({"id": "a\u2028b"})
    '{"id": "a\\u2028b"}\n'
    """
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS_TABLE) + "\n"


def output_format(path: str | os.PathLike) -> str:
    """The writer for an output name; compressed outputs are refused (compress afterwards)."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: output must end in .jsonl, .csv or .parquet (compress it afterwards if needed)")
    return OUTPUT_FORMATS[suffix]


def row_fields(record_id: str, probs: dict[str, Sequence[float]], tasks: Sequence[Task], with_probs: bool,
               nested: bool) -> dict[str, Any]:
    """One output row from per-task probability lists."""
    row: dict[str, Any] = {"id": record_id}
    for task in tasks:
        p = probs[task.name]
        best = max(range(len(p)), key=p.__getitem__)
        row[task.name] = task.labels[best]
        row[f"{task.name}_score"] = round(float(p[best]), 6)
        if with_probs and nested:
            row[f"{task.name}_probs"] = {label: round(float(v), 6) for label, v in zip(task.labels, p)}
        elif with_probs:
            row.update({f"{task.name}_prob_{label}": round(float(v), 6) for label, v in zip(task.labels, p)})
    return row


class RowWriter:
    """Streams rows into ``path`` via ``path.tmp``; :meth:`commit` renames it into place."""

    def __init__(self, path: str | os.PathLike, tasks: Sequence[Task], with_probs: bool, chunk: int = 4096):
        self.path, self.tasks, self.with_probs = Path(path), list(tasks), with_probs
        self.fmt = output_format(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count, self._chunk, self._pending = 0, chunk, []
        self._file: Any = None
        self._writer: Any = None

    def __enter__(self) -> RowWriter:
        if self.fmt == "jsonl":
            self._file = open(self.tmp, "w", encoding="utf-8")
        elif self.fmt == "csv":
            self._file = open(self.tmp, "w", encoding="utf-8", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns())
            self._writer.writeheader()
        return self

    def _columns(self) -> list[str]:
        sample = row_fields("", {t.name: [0.0] * len(t.labels) for t in self.tasks}, self.tasks, self.with_probs, False)
        return list(sample)

    def write(self, record_id: str, probs: dict[str, Sequence[float]]) -> None:
        row = row_fields(record_id, probs, self.tasks, self.with_probs, nested=self.fmt == "jsonl")
        self.count += 1
        if self.fmt == "jsonl":
            self._file.write(json_line(row))
        elif self.fmt == "csv":
            self._writer.writerow(row)
        else:
            self._pending.append(row)
            if len(self._pending) >= self._chunk:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending and self._writer is not None:
            return
        table = pa.Table.from_pylist(self._pending, schema=self._schema())
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)
        self._pending = []

    def _schema(self) -> Any:
        import pyarrow as pa

        cols = [pa.field("id", pa.string())]
        for name in self._columns()[1:]:
            cols.append(pa.field(name, pa.string() if name in {t.name for t in self.tasks} else pa.float64()))
        return pa.schema(cols)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.fmt == "parquet":
            self._flush_parquet()
            self._writer.close()
        else:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)
