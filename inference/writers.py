"""Output writers for scored dumps: JSONL, CSV and Parquet (JSONL and CSV optionally
``.gz``), each written to a temp file and renamed into place, so a reader never sees
half an output file.

Columns: ``id``, then per task ``<task>`` (label) and ``<task>_score`` (calibrated
probability of that label); with probabilities, JSONL adds ``<task>_probs``
(a label → probability object) and CSV/Parquet add ``<task>_prob_<label>`` columns.
Kept input fields (``--keep source,date,url``, ``--keep-all``) follow. JSONL keeps
their JSON types; CSV and Parquet store them as text (numbers, lists and objects as
their JSON text), so a column never changes type halfway through a file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.schema import Task

OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# What `--format` accepts for a folder of outputs, and the file suffix each one gets.
FOLDER_FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "csv": ".csv",
                  "csv.gz": ".csv.gz"}
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
    """The writer for an output name (``.jsonl``, ``.csv``, ``.parquet``; ``.jsonl.gz`` and ``.csv.gz``).

    >>> output_format("scores.jsonl.gz")
    'jsonl'
    """
    name = Path(path).name.lower()
    gzipped = name.endswith(".gz")
    suffix = Path(name[:-3] if gzipped else name).suffix
    if suffix not in OUTPUT_FORMATS or (gzipped and suffix == ".parquet"):
        raise ValueError(f"{path}: output must end in .jsonl, .jsonl.gz, .csv, .csv.gz or .parquet "
                         "(Parquet is compressed inside)")
    return OUTPUT_FORMATS[suffix]


def output_columns(tasks: Sequence[Task], with_probs: bool) -> list[str]:
    """The scored columns of a flat (CSV/Parquet) output, in order; kept fields come after them."""
    sample = row_fields("", {t.name: [0.0] * len(t.labels) for t in tasks}, tasks, with_probs, False)
    return list(sample) + ([f"{t.name}_probs" for t in tasks] if with_probs else [])


def plain_value(value: Any) -> Any:
    """A kept input value as plain JSON data (Parquet dates and timestamps become ISO text).

    >>> import datetime; plain_value({"d": datetime.date(2020, 1, 2)})
    {'d': '2020-01-02'}
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


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
    """Streams rows into ``path`` via ``path.tmp``; :meth:`commit` renames it into place.

    ``keep`` names the input fields copied into every row (missing ones are empty);
    with ``keep_all`` the kept fields are whatever each record has beyond its text: for
    CSV/Parquet the first row's fields fix the columns, and fields first seen later are
    listed in :attr:`dropped_fields` (JSONL rows carry all of theirs).

    >>> with RowWriter("s.jsonl", tasks, with_probs=False, keep=["date"]) as w:  # doctest: +SKIP
    ...     w.write("a1", {"topic": [0.1, 0.9]}, {"date": "2020-01-02"})
    >>> w.commit()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, tasks: Sequence[Task], with_probs: bool, chunk: int = 4096,
                 keep: Sequence[str] = (), keep_all: bool = False):
        self.path, self.tasks, self.with_probs = Path(path), list(tasks), with_probs
        self.fmt = output_format(path)
        self.gzipped = self.path.name.lower().endswith(".gz")
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.keep: list[str] | None = None if keep_all else list(keep)
        self.keep_all = keep_all
        self.dropped_fields: set[str] = set()
        check_kept_names(self.keep or [], tasks, with_probs)
        self.count, self._chunk, self._pending = 0, chunk, []
        self._raw: Any = None
        self._file: Any = None
        self._writer: Any = None

    def __enter__(self) -> RowWriter:
        if self.fmt != "parquet":
            self._raw = open(self.tmp, "wb")
            # mtime=0: the same rows give the same bytes, run after run.
            stream = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0) if self.gzipped else self._raw
            self._file = io.TextIOWrapper(stream, encoding="utf-8", newline="" if self.fmt == "csv" else "\n",
                                          write_through=False)
        if self.keep is not None:
            self._open_columns()
        return self

    def _open_columns(self) -> None:
        if self.fmt == "csv":
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns())
            self._writer.writeheader()

    def _columns(self) -> list[str]:
        sample = row_fields("", {t.name: [0.0] * len(t.labels) for t in self.tasks}, self.tasks, self.with_probs, False)
        return list(sample) + list(self.keep or [])

    def write(self, record_id: str, probs: dict[str, Sequence[float]], kept: Mapping[str, Any] | None = None) -> None:
        row = row_fields(record_id, probs, self.tasks, self.with_probs, nested=self.fmt == "jsonl")
        kept = kept or {}
        if self.keep is None:  # --keep-all: the first row fixes the flat formats' columns
            reserved = set(row) | set(output_columns(self.tasks, self.with_probs))
            self.keep = [name for name in kept if name not in reserved]
            self._open_columns()
        if self.fmt == "jsonl" and self.keep_all:
            reserved = set(row)
            row.update((k, v) for k, v in kept.items() if k not in reserved)
        else:
            row.update((name, kept.get(name)) for name in self.keep)
            if self.keep_all:
                self.dropped_fields.update(name for name in kept if name not in row)
        self.count += 1
        if self.fmt == "jsonl":
            self._file.write(json_line(row))
        elif self.fmt == "csv":
            self._writer.writerow({k: _as_text(v) if k in self.keep else v for k, v in row.items()})
        else:
            self._pending.append({k: _as_text(v) if k in self.keep else v for k, v in row.items()})
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
        labels = {t.name for t in self.tasks}
        for name in self._columns()[1:]:
            text = name in labels or name in (self.keep or [])
            cols.append(pa.field(name, pa.string() if text else pa.float64()))
        return pa.schema(cols)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.keep is None:  # no row at all under --keep-all
            self.keep = []
            self._open_columns()
        if self.fmt == "parquet":
            self._flush_parquet()
            self._writer.close()
        else:
            self._file.flush()
            self._file.close()  # writes the gzip trailer; a GzipFile leaves its file open
            self._raw.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename must not be durable before the rows are
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)


def check_kept_names(keep: Sequence[str], tasks: Sequence[Task], with_probs: bool) -> None:
    """Refuse ``--keep`` fields that would overwrite a scored column."""
    reserved = set(output_columns(tasks, with_probs))
    clash = [name for name in keep if name in reserved]
    if clash:
        raise ValueError(f"--keep {','.join(clash)}: would overwrite the scored column(s) of the same name")
