"""Streaming readers for article files: JSONL, CSV and Parquet, optionally gzipped or zstd-compressed.

Both training (validation with exact error locations) and batch scoring (bounded
memory over millions of articles) read through :func:`iter_records`, so a record
has the same line number everywhere. Readers never raise on a bad record: they
yield it with an ``error`` so callers decide whether to stop (training) or log
and continue (scoring).

    >>> for rec in iter_records("seeds/dump.jsonl.gz"):  # doctest: +SKIP
    ...     print(rec.line, rec.error or rec.data["id"])
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMATS = ("jsonl", "csv", "parquet")
_UTF8_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
_GLOB_CHARS = set("*?[")


class RecordFileError(ValueError):
    """A file cannot be read at all (unknown format, missing file, bad header)."""


@dataclass
class RawRecord:
    """One record as read: ``line`` is the 1-based line (JSONL/CSV) or row (Parquet)
    where it starts; exactly one of ``data`` and ``error`` is set."""

    line: int
    data: dict[str, Any] | None = None
    error: str | None = None


def detect_format(path: str | os.PathLike) -> tuple[str, bool]:
    """Return ``(format, compressed)`` from a file name (``.gz`` or ``.zst``).

    >>> detect_format("dump.jsonl.gz")
    ('jsonl', True)
    """
    name = Path(path).name.lower()
    compression = compression_of(name)
    if compression:
        name = name.rsplit(".", 1)[0]
    fmt = _SUFFIXES.get(Path(name).suffix)
    if fmt is None:
        raise RecordFileError(
            f"{path}: cannot tell the format from the name; use .jsonl, .csv or .parquet (optionally .gz or .zst)"
        )
    return fmt, compression is not None


def compression_of(path: str | os.PathLike) -> str | None:
    """``"gzip"``, ``"zstd"`` or ``None`` from a file name.

    >>> compression_of("a.csv.zst")
    'zstd'
    """
    return COMPRESSIONS.get(Path(str(path).lower()).suffix)


def is_record_file(path: str | os.PathLike) -> bool:
    """True if the name is one :func:`iter_records` reads (``x.jsonl``, ``x.csv.zst``, ...)."""
    try:
        detect_format(path)
    except RecordFileError:
        return False
    return True


def expand_inputs(spec: str | os.PathLike) -> list[Path]:
    """The record files named by ``spec``: a file, a glob or a folder (searched recursively).

    Files come back sorted, so every run (and every machine) sees them in the same order.
    Hidden files (``.name``, such as a writer's temp files) are never inputs.

    >>> expand_inputs("seeds/dump.jsonl.gz")  # doctest: +SKIP
    [PosixPath('seeds/dump.jsonl.gz')]
    """
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and is_record_file(p)]
    elif _GLOB_CHARS & set(text):
        anchor = Path(text).anchor or "."
        pattern = text[len(anchor):] if path.is_absolute() else text
        found = [p for p in Path(anchor).glob(pattern) if p.is_file() and is_record_file(p)]
    else:
        raise RecordFileError(f"{spec}: no such file or folder")
    root = input_root(path, text)
    found = sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise RecordFileError(f"{spec}: no .jsonl, .csv or .parquet files (optionally .gz or .zst) found")
    return found


def input_root(path: Path, text: str) -> Path:
    """The folder an input spec starts from: the folder itself, or the part of a glob above its
    first wildcard (outputs mirror the inputs' paths below it)."""
    if path.is_dir():
        return path
    parts = []
    for part in path.parts:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """Open a file for binary reading, transparently decompressing ``*.gz`` and ``*.zst``."""
    if not Path(path).exists():
        raise RecordFileError(f"{path}: no such file")
    compression = compression_of(path)
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        import zstandard

        # A stream reader decodes frame after frame, as `zstd -d` does for concatenated frames.
        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, 1 << 20)  # the bare reader cannot iterate lines
    return open(path, "rb")


@dataclass
class ShardCount:
    """Filled in by :func:`iter_records`: how many records of the shard the input holds
    (skipped ones included), known for sure once the iteration has ended."""

    records: int = 0


def iter_records(
    path: str | os.PathLike, skip: int = 0, shard: tuple[int, int] = (0, 1), count: ShardCount | None = None
) -> Iterator[RawRecord]:
    """Yield every record of ``path`` in file order, bad ones with an ``error``.

    ``shard=(k, n)`` keeps records whose 0-based index ``i`` has ``i % n == k`` (one
    process's share of a dump); ``skip`` then passes over that many of the kept
    records, which is how a resumed scoring run continues. Records that are not
    kept are not decoded where the format allows. ``count`` receives the number of
    records in the shard, the skipped ones included.

    >>> count = ShardCount()
    >>> done = sum(1 for _ in iter_records("seeds/dump.jsonl.gz", skip=10, count=count))  # doctest: +SKIP
    >>> count.records == done + 10  # doctest: +SKIP
    True
    """
    fmt, _ = detect_format(path)
    reader = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet}[fmt]
    yield from reader(path, _Selector(skip, shard, count if count is not None else ShardCount()))


def file_fingerprint(path: str | os.PathLike, head: int = 1 << 20) -> dict[str, Any]:
    """Size and a hash of the first ``head`` bytes (and of the last ones) of a file: enough to
    tell a resumed scoring run that its input was replaced, cut or appended to, without
    reading a multi-GB dump.

    >>> file_fingerprint("seeds/dump.jsonl.gz")  # doctest: +SKIP
    {'bytes': 1048576, 'sha256_ends': '9a1f...'}
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(head))
        if size > head:
            f.seek(max(head, size - head))
            digest.update(f.read(head))
    return {"bytes": size, "sha256_ends": digest.hexdigest()[:16]}


class _Selector:
    """Decides, record by record, which ones this reader yields (shard, then skip)."""

    def __init__(self, skip: int, shard: tuple[int, int], count: ShardCount):
        self.skip, (self.k, self.n) = skip, shard
        if not 0 <= self.k < self.n:
            raise ValueError(f"shard {shard}: expected (k, n) with 0 <= k < n")
        self.index, self.count = -1, count
        self.count.records = 0

    def take(self) -> bool:
        """Call once per record, in order; True if that record is to be yielded."""
        self.index += 1
        if self.index % self.n != self.k:
            return False
        self.count.records += 1
        return self.count.records > self.skip


def _iter_jsonl(path: str | os.PathLike, select: _Selector) -> Iterator[RawRecord]:
    with open_binary(path) as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]  # editors on Windows start files with a BOM; the CSV reader drops it too
            if not raw.strip():
                continue  # blank lines are not records
            if select.take():
                yield _decode_json_line(raw, line_no)


def _decode_json_line(raw: bytes, line_no: int) -> RawRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawRecord(line_no, error=f"invalid UTF-8 at byte {e.start}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return RawRecord(line_no, error=f"invalid JSON: {e.msg} (column {e.colno})")
    except RecursionError:
        return RawRecord(line_no, error="invalid JSON: nested too deeply")
    except ValueError as e:  # e.g. an integer longer than Python's int_max_str_digits
        return RawRecord(line_no, error=f"invalid JSON: {str(e).split(':')[0]}")
    if not isinstance(data, dict):
        return RawRecord(line_no, error=f"not a JSON object (got {type(data).__name__})")
    if _SURROGATE_ESCAPE.search(text) and _has_surrogates(json.dumps(data, ensure_ascii=False)):
        # "\ud800" is valid JSON but not a character: it cannot be tokenised or written back as UTF-8.
        return RawRecord(line_no, error="invalid UTF-8: lone surrogate escape (\\ud800-\\udfff) in a string")
    return RawRecord(line_no, data=data)


def _iter_csv(path: str | os.PathLike, select: _Selector) -> Iterator[RawRecord]:
    # Articles routinely exceed csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open_binary(path) as raw:
        # surrogateescape keeps reading past bad bytes; we flag them per record below.
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise RecordFileError(f"{path}: line 1: unreadable CSV header: {e}") from e
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        if len(set(header)) != len(header):
            raise RecordFileError(f"{path}: line 1: duplicate column names in header {header}")
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if select.take():
                    yield RawRecord(start, error=f"unreadable CSV row: {e}")
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if row and select.take():
                yield _csv_record(header, row, line)


def _csv_record(header: list[str], row: list[str], line: int) -> RawRecord:
    if len(row) != len(header):
        return RawRecord(line, error=f"row has {len(row)} fields but the header has {len(header)}")
    if any(_has_surrogates(value) for value in row):
        return RawRecord(line, error="invalid UTF-8")
    return RawRecord(line, data=dict(zip(header, row)))


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _iter_parquet(path: str | os.PathLike, select: _Selector) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    with _seekable_copy(path) as local:
        try:
            pf = pq.ParquetFile(local)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise RecordFileError(f"{path}: not a readable Parquet file: {e}") from e
        row = 0
        for batch in pf.iter_batches(batch_size=2048):
            for data in batch.to_pylist():
                row += 1
                if select.take():
                    yield RawRecord(row, data=data)


class _seekable_copy:
    """Parquet needs random access: decompress ``*.parquet.gz`` / ``*.parquet.zst`` to a temp file first."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.tmp = path, None

    def __enter__(self) -> str:
        if compression_of(self.path) is None:
            return str(self.path)
        fd, self.tmp = tempfile.mkstemp(suffix=".parquet")
        with os.fdopen(fd, "wb") as out, open_binary(self.path) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return self.tmp

    def __exit__(self, *exc: object) -> None:
        if self.tmp:
            os.unlink(self.tmp)
