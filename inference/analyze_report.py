"""``report.md`` and ``report.html`` of :mod:`inference.analyze`: the same tables in both.

The HTML page is static (inline CSS, no scripts, figures are the PNG files beside it), so it opens
from disk in any browser and can be mailed or archived as a folder.

    >>> render_markdown(result, "scores.parquet", options)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from inference.shares import overall_shares

MAX_CHANGES_SHOWN = 30



# The options and result of inference.analyze live here, beside the report that renders them,
# so the two modules import in one direction only.
@dataclass
class AnalyzeOptions:
    by: str = "source"
    date_field: str = "date"
    every: str = "month"
    topic_task: str | None = "topic"
    min_count: int = 10
    max_groups: int = 12
    memory_limit: str = "2GB"
    threads: int | None = None
    show_progress: bool = True


@dataclass
class AnalysisResult:
    """Where everything went, plus the tables (small: one row per group × period × label)."""

    out: Path
    rows: int
    skipped: int
    tasks: list[str]
    counts: pd.DataFrame
    shares: dict[str, pd.DataFrame]
    changes: pd.DataFrame
    figures: list[Path]
    report_md: Path
    report_html: Path


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.0f}%"


def summary_lines(result: AnalysisResult, source: str, opts: AnalyzeOptions) -> list[str]:
    groups = result.counts["group"].nunique()
    periods = result.counts["period"]
    span = f"{periods.min()} to {periods.max()}" if len(periods) else "none"
    with_probs = any("expected_share" in t for t in result.shares.values())
    return [f"scores: `{source}`",
            f"rows: {result.rows:,} ({result.skipped:,} without a group or a valid date, left out)",
            f"grouped by `{opts.by or '(none)'}` per {opts.every}; {groups} group(s); periods {span}",
            f"tasks: {', '.join(result.tasks)}",
            "shares are of articles given each label, with Wilson 95 % intervals"
            + ("; 'expected' is the mean calibrated probability" if with_probs else
               "; score with --probs to also get expected shares (mean calibrated probability)")]


def share_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Per group over all periods: articles, then per label 'share [low–high]' (and expected share)."""
    labels = list(dict.fromkeys(table["label"]))
    overall = overall_shares(table)
    expected = None
    if "expected_share" in table:
        weighted = table.assign(p=table["expected_share"] * table["articles"])
        expected = weighted.groupby(["group", "label"])["p"].sum()
    header = ["group", "articles"] + labels
    rows = []
    for group, part in overall.groupby("group", sort=True):
        cells = [str(group), f"{int(part['articles'].iloc[0]):,}"]
        by_label = part.set_index("label")
        for label in labels:
            r = by_label.loc[label]
            cell = f"{_pct(r['share'])} [{_pct(r['ci_low'])}–{_pct(r['ci_high'])}]"
            if expected is not None:
                cell += f", expected {_pct(expected.loc[(group, label)] / r['articles'])}"
            cells.append(cell)
        rows.append(cells)
    return header, rows


def change_rows(changes: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["group", "task", "label", "from", "to", "share before", "share after", "articles before/after"]
    rows = [[str(r["group"]), r["task"], r["label"], str(r["from"]), str(r["to"]), _pct(r["share_from"]),
             _pct(r["share_to"]), f"{int(r['articles_from'])}/{int(r['articles_to'])}"]
            for _, r in changes.head(MAX_CHANGES_SHOWN).iterrows()]
    return header, rows


def _files(result: AnalysisResult) -> list[str]:
    return ["counts.csv", *[f"shares_{t}.csv" for t in result.tasks], "changes.csv"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def render_markdown(result: AnalysisResult, source: str, opts: AnalyzeOptions) -> str:
    parts = ["# Analysis of scored articles", "", *[f"- {s}" for s in summary_lines(result, source, opts)], ""]
    parts += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in result.figures] + [""]
    for task in result.tasks:
        parts += [f"## {task}: share of articles per group (all periods)", "", _md_table(*share_rows(result.shares[task])),
                  ""]
    parts += [f"## Change points ({len(result.changes)})", "",
              f"Consecutive {opts.every}s of a group whose 95 % intervals do not overlap (each with at least "
              f"{opts.min_count} articles); largest moves first.", ""]
    parts += [_md_table(*change_rows(result.changes)) if len(result.changes) else "None found.", ""]
    parts += ["## Tables", ""] + [f"- [{name}]({name})" for name in _files(result)] + [""]
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee;margin:0.5rem 0}code{background:#f6f6f6}"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(result: AnalysisResult, source: str, opts: AnalyzeOptions) -> str:
    def code(text: str) -> str:
        # The summary lines mark names with backticks; show them as <code>.
        pieces = html.escape(text).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))

    out: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      "<title>nabaa analysis</title>", f"<style>{_CSS}</style>",
                      # An empty icon: without it the browser asks for /favicon.ico and logs a 404.
                      '<link rel="icon" href="data:,">', "</head><body>",
                      "<h1>Analysis of scored articles</h1><ul>"]
    out += [f"<li>{code(s)}</li>" for s in summary_lines(result, source, opts)] + ["</ul><h2>Figures</h2>"]
    out += [f'<figure><img src="{html.escape(f.name)}" alt="{html.escape(f.stem)}"><figcaption>'
            f"{html.escape(f.stem.replace('_', ' '))}</figcaption></figure>" for f in result.figures]
    for task in result.tasks:
        out += [f"<h2>{html.escape(task)}: share of articles per group (all periods)</h2>",
                _html_table(*share_rows(result.shares[task]))]
    out += [f"<h2>Change points ({len(result.changes)})</h2>",
            f"<p>Consecutive {html.escape(opts.every)}s of a group whose 95 % intervals do not overlap (each with "
            f"at least {opts.min_count} articles); largest moves first.</p>",
            _html_table(*change_rows(result.changes)) if len(result.changes) else "<p>None found.</p>",
            "<h2>Tables</h2><ul>"]
    out += [f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in _files(result)]
    out += ["</ul></body></html>", ""]
    return "\n".join(out)
