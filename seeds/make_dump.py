"""Build an unlabelled article dump of any size by recombining the seeds corpus's paragraphs.

    python -m seeds.make_dump --n 1000000 --out dump.jsonl.gz            # seed 0, seeds/articles.jsonl
    python -m seeds.make_dump --n 2000 --out seeds/dump.jsonl.gz --seed 0
    python -m seeds.make_dump --n 50000 --out dump.parquet --seed 3 --corpus seeds/articles.jsonl
    python -m seeds.make_dump --n 10000 --out dump.csv.gz

Each generated article is ``{"id", "title", "text", "source", "date", "url"}`` and carries no
labels. The title is the title of a random corpus article; the text
opens with a random corpus *lead* paragraph (the first paragraph of some article) and
continues with random non-lead paragraphs (no paragraph twice in one article) until
it is as close as it can get to a target length drawn from the corpus's own article
lengths, so the dump's length distribution follows the corpus's. Lengths are counted
in whitespace-separated words of ``text`` (the title is not counted).

The metadata follow the lead paragraph's article, so a dump can be read by outlet and
week: ``source`` is one of a few fictional outlets chosen from that article's
``outlet_style`` (:data:`OUTLETS`, :func:`outlet_for`), ``date`` is its ``date`` moved
by up to ±3 days, and ``url`` is ``https://<outlet>.example/<yyyy>/<mm>/<id>``. They
come from their own random stream, so the texts are those of the same seed before
metadata were added. A corpus without ``outlet_style``/``date`` gets a random outlet
and an empty date.

The format follows the output name (``.jsonl``, ``.jsonl.gz``, ``.csv``, ``.csv.gz``,
``.parquet``, ``.parquet.gz``; ``--format`` overrides the name). Output is streamed
(constant memory: the corpus pool plus a few chunks), written to a temporary file
next to ``--out`` and renamed when complete. Gzip is level 1 by default (the
bottleneck; ``--gzip-level 6`` is ~30% smaller and ~4x slower) and compressed on a
thread pool as consecutive gzip members, which every gzip reader reads as one
stream. The same seed and corpus always give the same content, and the same bytes
at the same gzip level (gzip headers carry no name or time). At the end the word-length
distribution of the dump is printed beside the corpus's, with the generation rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT / "seeds" / "articles.jsonl"
FORMATS = ("jsonl", "csv", "parquet")
COLUMNS = ("id", "title", "text", "source", "date", "url")
DATE_JITTER_DAYS = 3
# Fictional outlets (none is a real Libyan outlet's name), each standing for a family of the
# corpus's free-text outlet styles; ``outlet_for`` picks by the first rule that matches.
OUTLETS = ("Sahara Wire", "Eastern Dawn", "Cyrene TV", "Tripoli Voice", "Capital Channel",
           "Coastal Radio", "Libya Ledger")
_OUTLET_RULES = (
    (("wire",), "Sahara Wire"),
    (("pro-lna tv", "pro-lna television"), "Cyrene TV"),
    (("pro-lna", "eastern", "pro-east"), "Eastern Dawn"),
    (("pro-gna tv",), "Capital Channel"),
    (("radio",), "Coastal Radio"),
    (("pro-gna", "misrata"), "Tripoli Voice"),
    (("pan-arab",), "Capital Channel"),
)
CHUNK = 4096  # articles per write / progress update
PARQUET_ROWS = 16384  # rows per Parquet row group
MAX_REDRAWS = 8  # tries to find a paragraph not already in the article


@dataclass
class Pool:
    """What the generator draws from: titles, lead and body paragraphs (with their word
    counts) and the corpus's article lengths in words."""

    titles: list[str]
    leads: list[str]
    lead_words: list[int]
    bodies: list[str]
    body_words: list[int]
    lengths: list[int]
    lead_outlets: list[str | None]
    lead_dates: list[dt.date | None]


@dataclass
class LengthStats:
    """Summary of a word-length distribution."""

    count: int
    min: int
    p10: int
    median: int
    p90: int
    max: int
    mean: float

    @classmethod
    def from_histogram(cls, hist: Counter[int]) -> LengthStats:
        count = sum(hist.values())
        if count == 0:
            return cls(0, 0, 0, 0, 0, 0, 0.0)
        keys = sorted(hist)

        def quantile(q: float) -> int:  # nearest rank
            rank, seen = max(1, round(q * count)), 0
            for k in keys:
                seen += hist[k]
                if seen >= rank:
                    return k
            return keys[-1]

        mean = sum(k * v for k, v in hist.items()) / count
        return cls(count, keys[0], quantile(0.10), quantile(0.50), quantile(0.90), keys[-1], mean)


@dataclass
class DumpResult:
    path: Path
    format: str
    gzipped: bool
    n: int
    seconds: float
    cpu_seconds: float
    bytes: int
    lengths: LengthStats
    corpus_lengths: LengthStats

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


def load_pool(corpus: str | os.PathLike) -> Pool:
    """Read a corpus JSONL file (``title`` and ``text`` with ``\\n`` between paragraphs)."""
    titles: list[str] = []
    leads: list[str] = []
    bodies: list[str] = []
    lengths: list[int] = []
    outlets: list[str | None] = []
    dates: list[dt.date | None] = []
    with open(corpus, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{corpus}:{line_no}: record has no text")
            paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
            leads.append(paragraphs[0])
            style = record.get("outlet_style")
            outlets.append(outlet_for(style) if isinstance(style, str) and style.strip() else None)
            dates.append(_parse_date(record.get("date"), corpus, line_no))
            bodies.extend(paragraphs[1:])
            lengths.append(sum(len(p.split()) for p in paragraphs))
            title = record.get("title")
            if isinstance(title, str) and title.strip():
                titles.append(" ".join(title.split()))
    if not leads:
        raise ValueError(f"{corpus}: no articles")
    if not bodies:
        raise ValueError(f"{corpus}: every article is a single paragraph; nothing to recombine")
    if not titles:
        raise ValueError(f"{corpus}: no titles")
    return Pool(titles, leads, [len(p.split()) for p in leads], bodies, [len(p.split()) for p in bodies], lengths,
                outlets, dates)


def outlet_for(style: str) -> str:
    """The fictional outlet standing for a corpus ``outlet_style``.

    >>> outlet_for("pro-LNA news site"), outlet_for("wire"), outlet_for("independent daily")
    ('Eastern Dawn', 'Sahara Wire', 'Libya Ledger')
    """
    text = style.lower()
    for needles, outlet in _OUTLET_RULES:
        if any(needle in text for needle in needles):
            return outlet
    return "Libya Ledger"  # independent dailies, explainers, features, opinion, economic desks


def _parse_date(value: Any, corpus: str | os.PathLike, line_no: int) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(f"{corpus}:{line_no}: field 'date': expected an ISO date, got {value!r}") from None


def plan_metadata(pool: Pool, plans: Iterator[tuple[int, int, list[int], int]], n: int,
                  seed: int) -> Iterator[tuple[int, int, list[int], int, tuple[str, str, str]]]:
    """Add ``(source, date, url)`` to each plan, from its lead article (own random stream)."""
    rng = random.Random(f"metadata-{seed}")
    width = _id_width(n)
    for i, (title, lead, body, words) in enumerate(plans, 1):
        outlet = pool.lead_outlets[lead] or OUTLETS[int(rng.random() * len(OUTLETS))]
        day = pool.lead_dates[lead]
        jitter = int(rng.random() * (2 * DATE_JITTER_DAYS + 1)) - DATE_JITTER_DAYS
        date = "" if day is None else (day + dt.timedelta(days=jitter)).isoformat()
        slug = outlet.lower().replace(" ", "-")
        when = date[:7].replace("-", "/") if date else "undated"
        url = f"https://{slug}.example/{when}/d{str(i).zfill(width)}"
        yield title, lead, body, words, (outlet, date, url)


def plan_articles(pool: Pool, n: int, seed: int) -> Iterator[tuple[int, int, list[int], int]]:
    """Yield ``(title index, lead index, body indices, words)`` for ``n`` articles.

    The target length is drawn from the corpus lengths; body paragraphs are added
    while the total is short of it, and the last one is kept only if that brings
    the total closer to the target than stopping would (or if the article is still
    shorter than the shortest corpus article).
    """
    rng = random.Random(seed)
    rand = rng.random
    lengths, lead_words, body_words = pool.lengths, pool.lead_words, pool.body_words
    n_titles, n_leads, n_bodies, n_lengths = len(pool.titles), len(pool.leads), len(pool.bodies), len(lengths)
    max_body, floor = min(n_bodies, 64), min(lengths)
    for _ in range(n):
        target = lengths[int(rand() * n_lengths)]
        title = int(rand() * n_titles)
        lead = int(rand() * n_leads)
        total = lead_words[lead]
        body: list[int] = []
        while total < target and len(body) < max_body:
            p = int(rand() * n_bodies)
            redraws = 0
            while p in body and redraws < MAX_REDRAWS:
                p = int(rand() * n_bodies)
                redraws += 1
            if p in body:
                break
            w = body_words[p]
            if total >= floor and total + w - target > target - total:
                break  # overshooting by more than we fall short: stop here
            body.append(p)
            total += w
        yield title, lead, body, total


def _id_width(n: int) -> int:
    return max(7, len(str(n)))


def detect_format(out: str | os.PathLike, fmt: str | None = None) -> tuple[str, bool]:
    """``(format, gzipped)`` for an output name; ``fmt`` overrides the format."""
    name = Path(out).name.lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    if fmt is None:
        suffix = Path(stem).suffix
        fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(suffix)
        if fmt is None:
            raise ValueError(f"{out}: cannot tell the format from the name; use .jsonl, .csv or .parquet (optionally .gz)")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} unknown; choose one of {FORMATS}")
    return fmt, gzipped


class ParallelGzipWriter(io.RawIOBase):
    """A write-only binary stream that gzips blocks of ``block`` bytes on a thread pool
    (zlib releases the GIL) and writes them, in order, as consecutive gzip members.

    A multi-member gzip file is a valid gzip file (``gzip``, ``zcat``, pandas and
    :func:`model.records.iter_records` read it whole). Members carry no name and
    ``mtime=0``, so the bytes depend only on the content, the level and ``block``.
    At most ``2 * workers`` blocks are in flight: memory stays bounded.
    """

    def __init__(self, raw: IO[bytes], level: int = 1, block: int = 8 << 20, workers: int | None = None):
        super().__init__()
        self.raw, self.level, self.block = raw, level, block
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.workers)
        self.pending: deque[Future[bytes]] = deque()
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        if len(self.buffer) >= self.block:
            self._submit()
        return len(data)

    def _submit(self) -> None:
        data, self.buffer = bytes(self.buffer), bytearray()
        self.pending.append(self.pool.submit(gzip.compress, data, self.level, mtime=0))
        while len(self.pending) > 2 * self.workers:
            self.raw.write(self.pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.buffer:
                self._submit()
            while self.pending:
                self.raw.write(self.pending.popleft().result())
        finally:
            self.pool.shutdown(cancel_futures=True)
            super().close()


def _open_binary(stack: ExitStack, tmp: Path, gzipped: bool, level: int) -> IO[bytes]:
    raw = stack.enter_context(open(tmp, "wb"))
    if not gzipped:
        return raw
    return stack.enter_context(ParallelGzipWriter(raw, level))


def _json_escape(text: str) -> bytes:
    """The inside of a JSON string literal for ``text``, UTF-8 encoded."""
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


def _csv_escape(text: str) -> bytes:
    """The inside of a double-quoted CSV field for ``text`` (RFC 4180), UTF-8 encoded."""
    return text.replace('"', '""').encode("utf-8")


# Per text format: how a string is escaped, and the byte templates of a row around
# ``id``, ``title`` and ``text`` (which are always quoted), and the paragraph separator.
_TEMPLATES: dict[str, dict[str, Any]] = {
    "jsonl": {
        "escape": _json_escape, "header": b"", "head": b'{"id": "d', "title": b'", "title": "',
        "text": b'", "text": "', "tail": '", "source": "{}", "date": "{}", "url": "{}"}}\n', "newline": b"\\n",
    },
    "csv": {
        "escape": _csv_escape, "header": (",".join(COLUMNS) + "\r\n").encode(), "head": b"d",
        "title": b',"', "text": b'","', "tail": '",{},{},{}\r\n', "newline": b"\n",
    },
}


def _write_text(fmt: str, f: IO[bytes], pool: Pool, plans: Iterator[Any], n: int, bar: tqdm,
                hist: Counter[int]) -> None:
    """JSONL or CSV rows assembled from pre-escaped byte fragments (no per-row encoding)."""
    t = _TEMPLATES[fmt]
    escape = t["escape"]
    titles = [escape(x) for x in pool.titles]
    leads = [escape(x) for x in pool.leads]
    bodies = [escape(x) for x in pool.bodies]
    width = _id_width(n)
    head, mid_title, mid_text, tail, newline = t["head"], t["title"], t["text"], t["tail"], t["newline"]
    f.write(t["header"])
    buf: list[bytes] = []
    # Outlet names, ISO dates and URLs need no escaping in either format.
    for i, (title, lead, body, words, meta) in enumerate(plans, 1):
        hist[words] += 1
        parts = [leads[lead]]
        parts.extend(bodies[p] for p in body)
        buf.append(head + str(i).zfill(width).encode() + mid_title + titles[title] + mid_text
                   + newline.join(parts) + tail.format(*meta).encode())
        if len(buf) == CHUNK:
            f.write(b"".join(buf))
            bar.update(len(buf))
            buf.clear()
    if buf:
        f.write(b"".join(buf))
        bar.update(len(buf))


def _rows(pool: Pool, plans: Iterator[Any], n: int, hist: Counter[int]) -> Iterator[tuple[str, ...]]:
    width = _id_width(n)
    for i, (title, lead, body, words, meta) in enumerate(plans, 1):
        hist[words] += 1
        text = "\n".join([pool.leads[lead], *(pool.bodies[p] for p in body)])
        yield f"d{str(i).zfill(width)}", pool.titles[title], text, *meta


def _write_parquet(tmp: Path, gzipped: bool, pool: Pool, plans: Iterator[Any], n: int, bar: tqdm,
                   hist: Counter[int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    sink = pa.CompressedOutputStream(str(tmp), "gzip") if gzipped else str(tmp)
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        columns: list[list[str]] = [[] for _ in COLUMNS]
        for row in _rows(pool, plans, n, hist):
            for column, value in zip(columns, row, strict=True):
                column.append(value)
            if len(columns[0]) == PARQUET_ROWS:
                writer.write_table(pa.table(columns, schema=schema))
                bar.update(PARQUET_ROWS)
                columns = [[] for _ in COLUMNS]
        if columns[0]:
            writer.write_table(pa.table(columns, schema=schema))
            bar.update(len(columns[0]))
    if gzipped:
        sink.close()


def make_dump(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    corpus: str | os.PathLike = DEFAULT_CORPUS,
    fmt: str | None = None,
    gzip_level: int = 1,
    progress: bool = True,
) -> DumpResult:
    """Write ``n`` synthetic articles to ``out`` (atomically) and describe what was written."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fmt, gzipped = detect_format(out, fmt)
    out = Path(out)
    pool = load_pool(corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    hist: Counter[int] = Counter()
    plans = plan_metadata(pool, plan_articles(pool, n, seed), n, seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with tqdm(total=n, unit="art", unit_scale=True, disable=not progress, desc=out.name) as bar:
            if fmt == "parquet":
                _write_parquet(tmp, gzipped, pool, plans, n, bar, hist)
            else:
                with ExitStack() as stack:
                    f = _open_binary(stack, tmp, gzipped, gzip_level)
                    _write_text(fmt, f, pool, plans, n, bar, hist)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return DumpResult(out, fmt, gzipped, n, seconds, cpu_seconds, out.stat().st_size, LengthStats.from_histogram(hist),
                      LengthStats.from_histogram(Counter(pool.lengths)))


def format_report(result: DumpResult) -> str:
    """The end-of-run summary: rate, size and the two length distributions side by side."""
    fields = ("min", "p10", "median", "p90", "max", "mean")
    lines = [
        f"wrote {result.n:,} articles to {result.path} ({result.format}{', gzip' if result.gzipped else ''}, "
        f"{result.bytes / 1e6:.2f} MB) in {result.seconds:.2f} s = {result.rate:,.0f} articles/s "
        f"({result.cpu_seconds:.2f} s CPU, all threads)",
        "length in words   " + " ".join(f"{f:>7}" for f in fields) + "       n",
    ]
    for name, stats in (("dump", result.lengths), ("corpus", result.corpus_lengths)):
        values = [getattr(stats, f) for f in fields]
        cells = " ".join(f"{v:7.1f}" if isinstance(v, float) else f"{v:7d}" for v in values)
        lines.append(f"  {name:<16}{cells} {stats.count:7d}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seeds.make_dump", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of articles (default 1000)")
    parser.add_argument("--out", required=True, help="output file: .jsonl, .csv or .parquet, optionally .gz")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="labelled corpus to recombine")
    parser.add_argument("--format", choices=FORMATS, default=None, help="override the format given by --out")
    parser.add_argument("--gzip-level", type=int, default=1, choices=range(1, 10), metavar="1-9",
                        help="gzip compression level for .gz outputs (default 1: fastest; 6 is ~30%% smaller, ~4x slower)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = make_dump(args.out, args.n, seed=args.seed, corpus=args.corpus, fmt=args.format,
                           gzip_level=args.gzip_level, progress=not args.quiet)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
