"""inference.analyze: aggregates checked against hand-computed values, inputs in every format,
clear errors, the report files, and the HTML report in a real (headless) browser."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.analyze import AnalyzeError, analyze, main
from tests.conftest import run

STANCE = ("favor", "against", "none")


def scored_row(i: int, source: str | None, date: str | None, stance: str, p_against: float = 0.5,
               topic: str = "politics") -> dict:
    """A row shaped like inference.score's JSONL output with --probs and --keep source,date."""
    rest = (1 - p_against) / 2
    probs = {"favor": rest, "against": p_against, "none": rest}
    return {"id": f"r{i}", "source": source, "date": date, "topic": topic, "topic_score": 0.9,
            "stance_haftar": stance, "stance_haftar_score": probs[stance], "stance_haftar_probs": probs}


def hand_rows() -> list[dict]:
    # Weeks start on Monday: Sun 2020-12-27 is in the week of 2020-12-21; Mon 2020-12-28 to
    # Sun 2021-01-03 is one week across the new year; Mon 2021-01-04 starts the next.
    return [
        scored_row(0, "a", "2020-12-27", "favor", 0.1),
        scored_row(1, "a", "2020-12-28", "against", 0.9),
        scored_row(2, "a", "2020-12-31T23:59:00Z", "against", 0.8),
        scored_row(3, "a", "2021-01-01", "against", 0.7),
        scored_row(4, "a", "2021-01-03", "favor", 0.1, topic="economy"),
        scored_row(5, "a", "2021-01-04", "none", 0.2),
        scored_row(6, "b", "2021-01-02", "none", 0.3),
        scored_row(7, "b", "not a date", "none", 0.3),  # left out: no valid date
        scored_row(8, None, "2021-01-02", "none", 0.3),  # left out: no group
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def flat(row: dict) -> dict:
    """The CSV/Parquet shape: <task>_prob_<label> columns instead of a nested object."""
    row = dict(row)
    for label, value in row.pop("stance_haftar_probs").items():
        row[f"stance_haftar_prob_{label}"] = value
    return row


def cell(table: pd.DataFrame, group: str, period: str, label: str) -> pd.Series:
    rows = table[(table["group"] == group) & (table["period"].astype(str) == period) & (table["label"] == label)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_weekly_shares_match_hand_computed_values(tmp_path: Path) -> None:
    result = analyze(write_jsonl(tmp_path / "s.jsonl", hand_rows()), tmp_path / "out", every="week",
                     show_progress=False)
    assert (result.rows, result.skipped) == (9, 2)
    counts = {(r.group, str(r.period)): r.articles for r in result.counts.itertuples()}
    assert counts == {("a", "2020-12-21"): 1, ("a", "2020-12-28"): 4, ("a", "2021-01-04"): 1, ("b", "2020-12-28"): 1}
    stance = result.shares["stance_haftar"]
    against = cell(stance, "a", "2020-12-28", "against")
    assert (against["count"], against["articles"], against["share"]) == (3, 4, 0.75)
    # Wilson 95 % for 3/4 and 0/4, worked by hand: (0.3006, 0.9544) and (0, z²/(n+z²) = 0.4899).
    assert against["ci_low"] == pytest.approx(0.3006, abs=1e-4)
    assert against["ci_high"] == pytest.approx(0.9544, abs=1e-4)
    none = cell(stance, "a", "2020-12-28", "none")
    assert (none["count"], none["share"], none["ci_low"]) == (0, 0.0, 0.0)
    assert none["ci_high"] == pytest.approx(0.4899, abs=1e-4)
    # Expected share = mean calibrated probability: (0.9 + 0.8 + 0.7 + 0.1) / 4.
    assert against["expected_share"] == pytest.approx(0.625)
    topic = result.shares["topic"]
    assert cell(topic, "a", "2020-12-28", "economy")["share"] == 0.25


def test_monthly_buckets_and_labels_in_model_order(tmp_path: Path) -> None:
    result = analyze(write_jsonl(tmp_path / "s.jsonl", hand_rows()), tmp_path / "out", every="month",
                     show_progress=False)
    counts = {(r.group, str(r.period)): r.articles for r in result.counts.itertuples()}
    assert counts == {("a", "2020-12-01"): 3, ("a", "2021-01-01"): 3, ("b", "2021-01-01"): 1}
    labels = list(dict.fromkeys(result.shares["stance_haftar"]["label"]))
    assert labels == list(STANCE)  # the order of the probability columns, not alphabetical


def test_parquet_folder_and_csv_give_the_same_tables_as_jsonl(tmp_path: Path) -> None:
    rows = hand_rows()
    reference = analyze(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "ref", every="week", show_progress=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, part in enumerate((rows[:4], rows[4:])):
        pq.write_table(pa.Table.from_pylist([flat(r) for r in part]), folder / f"part-{k:05d}.parquet")
    from_parquet = analyze(folder, tmp_path / "pq", every="week", show_progress=False)
    pd.DataFrame([flat(r) for r in rows]).to_csv(tmp_path / "s.csv", index=False)
    from_csv = analyze(tmp_path / "s.csv", tmp_path / "csv", every="week", show_progress=False)
    for other in (from_parquet, from_csv):
        for task in ("topic", "stance_haftar"):
            pd.testing.assert_frame_equal(other.shares[task], reference.shares[task], check_dtype=False)


def test_columns_named_like_internal_ones_do_not_clash(tmp_path: Path) -> None:
    rows = [{**r, "period": "Q4", "grp": 7} for r in hand_rows()]
    result = analyze(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "out", every="week", show_progress=False)
    assert (result.rows, result.skipped) == (9, 2) and set(result.counts["group"]) == {"a", "b"}


def test_change_point_found_where_intervals_separate(tmp_path: Path) -> None:
    rows, i = [], 0
    for month, share_against in (("2020-01-15", 0.1), ("2020-02-15", 0.1), ("2020-03-15", 0.9)):
        for k in range(40):
            for source, s in (("moves", share_against), ("steady", 0.5)):
                rows.append(scored_row(i, source, month, "against" if k < 40 * s else "none"))
                i += 1
    result = analyze(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "out", show_progress=False)
    changes = result.changes
    assert set(changes["group"]) == {"moves"}
    moved = changes[changes["label"] == "against"].iloc[0]
    assert (str(moved["from"]), str(moved["to"])) == ("2020-02-01", "2020-03-01")
    assert moved["share_from"] == pytest.approx(0.1) and moved["share_to"] == pytest.approx(0.9)
    # The topic task never counts as a stance change.
    assert "topic" not in set(changes["task"])


def test_outputs_written_and_report_shows_figures_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = analyze(write_jsonl(tmp_path / "s.jsonl", hand_rows()), out, every="week", show_progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"counts.csv", "shares_topic.csv", "shares_stance_haftar.csv", "changes.csv", "stance_over_time.png",
            "stance_heatmap.png", "topic_mix.png", "report.md", "report.html"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for figure in result.figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "![stance_over_time](stance_over_time.png)" in md
    assert "| a | 6 |" in md  # group a: 6 articles over all weeks
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 3 and "<script" not in page


def test_missing_columns_fail_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{k: v for k, v in r.items() if k != "source"} for r in hand_rows()]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    assert main(["--scores", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'source' (--by)" in err and "--keep source" in err
    with pytest.raises(AnalyzeError, match="'published' \\(--date-field\\)"):
        analyze(path, tmp_path / "out", by="", date_field="published", show_progress=False)
    with pytest.raises(AnalyzeError, match="no such file"):
        analyze(tmp_path / "missing.jsonl", tmp_path / "out", show_progress=False)


def test_no_group_column_needed_with_empty_by(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "source"} for r in hand_rows()]
    result = analyze(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "out", by="", show_progress=False)
    assert set(result.counts["group"]) == {"all"} and result.skipped == 1


@pytest.mark.slow
def test_command_line_writes_report(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", hand_rows())
    result = run([sys.executable, "-m", "inference.analyze", "--scores", str(path), "--out", str(tmp_path / "out"),
                  "--every", "week"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "analysed 9 row(s) (2 without a group or a valid date)" in result.stdout
    assert (tmp_path / "out" / "report.html").exists()


# --------------------------------------------------------------------------- browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_html_report_opens_in_chromium_without_errors(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test-browser)")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test-browser)")
    result = analyze(write_jsonl(tmp_path / "s.jsonl", hand_rows()), tmp_path / "out", every="week",
                     show_progress=False)
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
            page.goto(result.report_html.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            heading = page.inner_text("h1")
            tables = page.locator("table").count()
        finally:
            browser.close()
    assert problems == []
    assert sorted(src for src, _, _ in images) == ["stance_heatmap.png", "stance_over_time.png", "topic_mix.png"]
    assert all(done and width > 100 for _, done, width in images), images
    assert heading == "Analysis of scored articles" and tables >= 2
