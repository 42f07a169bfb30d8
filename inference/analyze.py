"""Analytics over a scored dump: who said what, when, and when it changed.

    python -m inference.analyze --scores runs/demo/dump_scores.jsonl --out runs/demo/analysis
    python -m inference.analyze --scores scores_dir/ --by source --every week --out analysis/

Reads the output of ``inference.score`` (JSONL, CSV or Parquet; one file or a folder of them,
e.g. the Ray engine's) with DuckDB, which streams the files and spills to disk, so memory stays
bounded however many rows there are. The scored rows need a group column (``--by``, default
``source``) and a date column (``--date-field``, default ``date``): score with
``--keep source,date`` to carry them through.

Writes into ``--out``:

- ``counts.csv``: articles per group × period;
- ``shares_<task>.csv``: per group × period × label, the count, the share of articles given that
  label with a Wilson 95 % interval, and (when the scores carry probabilities, ``--probs``) the
  expected share, i.e. the mean calibrated probability of the label;
- ``changes.csv``: change points, i.e. consecutive periods of a group whose share intervals do
  not overlap (both periods with at least ``--min-count`` articles);
- ``stance_over_time.png``, ``stance_heatmap.png``, ``topic_mix.png``;
- ``report.md`` and a static ``report.html`` showing all of it.

    >>> result = analyze("scores.parquet", "analysis/", every="week")  # doctest: +SKIP
    >>> result.report_html  # doctest: +SKIP
    PosixPath('analysis/report.html')
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from inference import analyze_plots as plots
from inference.analyze_report import AnalysisResult, AnalyzeOptions, render_html, render_markdown
from inference.shares import change_points, share_table

PERIODS = ("day", "week", "month", "quarter", "year")
_SCORE_SUFFIXES = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}


class AnalyzeError(ValueError):
    """The scores cannot be analysed (missing file, missing column, no tasks)."""


# --------------------------------------------------------------------------- input
@dataclass
class ScoreColumns:
    """What a scored file holds: its tasks, their labels, and where probabilities live."""

    tasks: list[str]
    labels: dict[str, list[str]] = field(default_factory=dict)
    prob_sql: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> label -> SQL expression
    used: list[str] = field(default_factory=list)  # the file's columns the analysis reads


def score_files(path: str | os.PathLike) -> tuple[str, list[str]]:
    """The DuckDB reader (``json``, ``csv``, ``parquet``) and the files of a scored file or folder.

    A folder must hold files of one format (e.g. the Parquet parts of a Ray run).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _reader_for(p) and not p.name.startswith("."))
        if not files:
            raise AnalyzeError(f"{path}: no .jsonl, .csv or .parquet files in this folder")
        readers = {_reader_for(p) for p in files}
        if len(readers) > 1:
            raise AnalyzeError(f"{path}: the folder mixes formats ({sorted(readers)}); keep one format per folder")
        return readers.pop(), [str(p) for p in files]
    if not path.exists():
        raise AnalyzeError(f"{path}: no such file or folder")
    reader = _reader_for(path)
    if reader is None:
        raise AnalyzeError(f"{path}: expected a .jsonl, .csv or .parquet file (optionally .gz) or a folder of them")
    return reader, [str(path)]


def _reader_for(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".errors.jsonl", ".summary.json", ".journal-meta.json")):
        return None  # the scorer's side files, not scores
    return _SCORE_SUFFIXES.get(Path(name).suffix)


def _source_sql(reader: str, files: Sequence[str]) -> str:
    listed = "[" + ", ".join(_quote_literal(f) for f in files) + "]"
    if reader == "parquet":
        return f"read_parquet({listed}, union_by_name = true)"
    if reader == "csv":
        return f"read_csv({listed}, header = true, union_by_name = true)"
    return f"read_json({listed}, format = 'newline_delimited', union_by_name = true)"


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def discover_columns(columns: Sequence[str], types: Sequence[Any]) -> ScoreColumns:
    """Tasks are the columns ``X`` that come with ``X_score``; probabilities are read from a
    ``X_probs`` object (JSONL) or ``X_prob_<label>`` columns (CSV, Parquet) when present."""
    names = list(columns)
    tasks = [c for c in names if f"{c}_score" in names and not c.endswith("_score")]
    found = ScoreColumns(tasks=tasks, used=list(tasks))
    for task in tasks:
        nested = f"{task}_probs"
        flat = [c for c in names if c.startswith(f"{task}_prob_")]
        if nested in names:
            kind = types[names.index(nested)]
            labels = [name for name, _ in getattr(kind, "children", [])]
            found.prob_sql[task] = {lab: f"struct_extract({_quote_ident(nested)}, {_quote_literal(lab)})"
                                    for lab in labels}
            found.used.append(nested)
        elif flat:
            found.prob_sql[task] = {c[len(task) + 6:]: _quote_ident(c) for c in flat}
            found.used += flat
        found.labels[task] = list(found.prob_sql.get(task, {}))
    return found


# --------------------------------------------------------------------------- analysis
def analyze(scores: str | os.PathLike, out: str | os.PathLike, **options: Any) -> AnalysisResult:
    """Aggregate a scored dump into tables, figures and a report (see the module docstring).

    >>> analyze("runs/demo/dump_scores.parquet", "runs/demo/analysis", by="source", every="month")  # doctest: +SKIP
    """
    opts = AnalyzeOptions(**options)
    if opts.every not in PERIODS:
        raise AnalyzeError(f"--every must be one of {', '.join(PERIODS)}; got {opts.every!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reader, files = score_files(scores)
    steps = tqdm(total=5, desc="analyze", unit="step", disable=not opts.show_progress, dynamic_ncols=True)
    con = _connect(out, opts)
    try:
        columns = _prepare_view(con, reader, files, scores, opts)
        steps.update(1)
        shares, rows, skipped = {}, 0, 0
        for task in columns.tasks:
            steps.set_postfix_str(task)
            shares[task], rows, skipped = _task_shares(con, task, columns, opts)
        steps.update(1)
    finally:
        con.close()
    counts = _counts_table(shares[columns.tasks[0]])
    changes = change_points(shares, _stance_tasks(columns.tasks, opts.topic_task), opts.min_count)
    _write_tables(out, counts, shares, changes)
    steps.update(1)
    figures = _figures(out, shares, columns.tasks, opts)
    steps.update(1)
    result = AnalysisResult(out, rows, skipped, columns.tasks, counts, shares, changes, figures,
                            out / "report.md", out / "report.html")
    write_reports(result, str(scores), opts)
    steps.update(1)
    steps.close()
    return result


def _connect(out: Path, opts: AnalyzeOptions) -> Any:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = {_quote_literal(opts.memory_limit)}")
    # Spill to the output folder rather than /tmp, which may be small; insertion order is not
    # needed by a GROUP BY and keeping it costs memory.
    con.execute(f"SET temp_directory = {_quote_literal(str(out / '.duckdb_tmp'))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    if opts.threads:
        con.execute(f"SET threads = {int(opts.threads)}")
    return con


def _prepare_view(con: Any, reader: str, files: list[str], scores: Any, opts: AnalyzeOptions) -> ScoreColumns:
    """A view ``scored`` with ``grp``, ``period`` and the score columns; checks the columns."""
    rel = con.sql(f"SELECT * FROM {_source_sql(reader, files)}")
    names, types = list(rel.columns), list(rel.types)
    missing = [(flag, name) for flag, name in (("--by", opts.by), ("--date-field", opts.date_field))
               if name and name not in names]
    if missing:
        what = ", ".join(f"'{name}' ({flag})" for flag, name in missing)
        raise AnalyzeError(f"{scores}: no column {what}; columns are {names}. Score with "
                           f"`inference.score --keep {','.join(n for _, n in missing)}` (or name the right "
                           f"column with {' / '.join(flag for flag, _ in missing)})")
    columns = discover_columns(names, types)
    if not columns.tasks:
        raise AnalyzeError(f"{scores}: no scored task columns (a label column X with X_score); columns are {names}")
    date = f"try_cast(left(CAST({_quote_ident(opts.date_field)} AS VARCHAR), 10) AS DATE)"
    group = f"CAST({_quote_ident(opts.by)} AS VARCHAR)" if opts.by else "'all'"
    # Only the columns used, under names a scored file cannot already hold (it may have a 'period').
    keep = ", ".join(_quote_ident(c) for c in columns.used)
    con.execute(f"CREATE TEMP VIEW scored AS SELECT {keep}, {group} AS grp, "
                f"date_trunc('{opts.every}', {date}) AS period FROM {_source_sql(reader, files)}")
    return columns


def _task_shares(con: Any, task: str, columns: ScoreColumns, opts: AnalyzeOptions) -> tuple[pd.DataFrame, int, int]:
    """One scan: per group × period × predicted label, the count and the summed probabilities."""
    probs = columns.prob_sql.get(task, {})
    sums = "".join(f", sum({expr}) AS {_quote_ident('p_' + lab)}" for lab, expr in probs.items())
    raw = con.execute(f"SELECT grp, period, CAST({_quote_ident(task)} AS VARCHAR) AS label, count(*) AS n{sums} "
                      "FROM scored GROUP BY ALL").df()
    usable = raw["grp"].notna() & raw["period"].notna() & raw["label"].notna()
    rows, skipped = int(raw["n"].sum()), int(raw.loc[~usable, "n"].sum())
    return share_table(raw[usable], columns.labels.get(task) or None, bool(probs)), rows, skipped


def _counts_table(shares: pd.DataFrame) -> pd.DataFrame:
    return shares.drop_duplicates(["group", "period"])[["group", "period", "articles"]].reset_index(drop=True)


def _stance_tasks(tasks: Sequence[str], topic_task: str | None) -> list[str]:
    others = [t for t in tasks if t != topic_task]
    return others or list(tasks)


# --------------------------------------------------------------------------- outputs
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_tables(out: Path, counts: pd.DataFrame, shares: dict[str, pd.DataFrame], changes: pd.DataFrame) -> None:
    _atomic_write_text(out / "counts.csv", counts.to_csv(index=False))
    for task, table in shares.items():
        _atomic_write_text(out / f"shares_{task}.csv", table.to_csv(index=False, float_format="%.6g"))
    _atomic_write_text(out / "changes.csv", changes.to_csv(index=False, float_format="%.6g"))


def _top_groups(shares: pd.DataFrame, max_groups: int) -> list[str]:
    volume = shares.drop_duplicates(["group", "period"]).groupby("group")["articles"].sum()
    return list(volume.sort_values(ascending=False).index[:max_groups])


def _figures(out: Path, shares: dict[str, pd.DataFrame], tasks: list[str], opts: AnalyzeOptions) -> list[Path]:
    stance = _stance_tasks(tasks, opts.topic_task)
    groups = _top_groups(shares[tasks[0]], opts.max_groups)
    made = [plots.stance_over_time_png(out / "stance_over_time.png", {t: shares[t] for t in stance}, groups),
            plots.stance_heatmap_png(out / "stance_heatmap.png", {t: shares[t] for t in stance}, groups)]
    if opts.topic_task in shares:
        made.append(plots.topic_mix_png(out / "topic_mix.png", shares[opts.topic_task], opts.topic_task))
    return made


def write_reports(result: AnalysisResult, source: str, opts: AnalyzeOptions) -> None:
    """``report.md`` and a static ``report.html`` (no scripts; figures are the PNGs beside it)."""
    _atomic_write_text(result.report_md, render_markdown(result, source, opts))
    _atomic_write_text(result.report_html, render_html(result, source, opts))


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference.analyze", description="Analytics over a scored dump.")
    p.add_argument("--scores", required=True, help="scored .jsonl/.csv/.parquet (optionally .gz) or a folder of them")
    p.add_argument("--out", required=True, help="output folder for tables, figures and the report")
    p.add_argument("--by", default="source", help="group column (default: source; '' for one group)")
    p.add_argument("--date-field", default="date", help="date column, ISO dates (default: date)")
    p.add_argument("--every", default="month", choices=PERIODS, help="period length (default: month)")
    p.add_argument("--topic-task", default="topic", help="the task shown as topic mix (others: stances)")
    p.add_argument("--min-count", type=int, default=10, help="fewest articles for a period in change points")
    p.add_argument("--max-groups", type=int, default=12, help="most groups drawn in figures (by volume)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit; it spills to --out beyond it")
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = analyze(args.scores, args.out, by=args.by, date_field=args.date_field, every=args.every,
                         topic_task=args.topic_task or None, min_count=args.min_count, max_groups=args.max_groups,
                         memory_limit=args.memory_limit, threads=args.threads, show_progress=not args.no_progress)
    except AnalyzeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"analysed {result.rows} row(s) ({result.skipped} without a group or a valid date), "
          f"{result.counts['group'].nunique()} group(s), {result.counts['period'].nunique()} period(s), "
          f"{len(result.changes)} change point(s)")
    print(f"report: {result.report_html} (and {result.report_md.name}, CSV tables, PNG figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
