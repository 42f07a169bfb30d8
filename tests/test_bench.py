"""The benchmark harness (bench/): accounting, formulas, docs tables and the memory child.

No timing is asserted anywhere: the machine is shared, and speed is what bench/ reports,
not what tests check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import common, run, scoring
from inference import Classifier
from tests.conftest import run as run_cmd
from tests.conftest import seed_records


@pytest.fixture(scope="module")
def clf(trained_run: Path) -> Classifier:
    return Classifier.from_pretrained(trained_run / "best", device="cpu")


def test_flops_formula() -> None:
    sizes = {"params_nonembedding": 1000, "layers": 2, "hidden": 4}
    # 2·P·B·L + 4·layers·d·B·L² for one batch of 3 windows of 5 tokens
    assert scoring.flops([(3, 5)], sizes) == 2 * 1000 * 3 * 5 + 4 * 2 * 4 * 3 * 25
    assert scoring.flops([], sizes) == 0


def test_token_accounting_matches_batching(clf: Classifier) -> None:
    records = [{"id": r["id"], "title": r["title"], "text": r["text"]} for r in seed_records("dev", 6)]
    ours = scoring.nabaa_tokens(clf, records)
    prepared = [clf._prepare(r, i) for i, r in enumerate(records)]
    windows = [w for article in clf.pre.windows(clf.tokenizer, prepared) for w in article]
    assert ours["windows"] == len(windows) == sum(b for b, _ in ours["shapes"])
    assert ours["real_tokens"] == sum(map(len, windows)) <= ours["padded_tokens"]
    naive = scoring.baseline_tokens(clf.tokenizer, clf.pre, records, pad_to_max=True, passes=1)
    three = scoring.baseline_tokens(clf.tokenizer, clf.pre, records, pad_to_max=False, passes=3)
    assert naive["padded_tokens"] == len(records) * clf.pre.max_length
    assert three["real_tokens"] == 3 * naive["real_tokens"] and three["windows"] == 3 * len(records)


def test_naive_twins_make_nabaas_predictions(trained_run: Path) -> None:
    """(b) equals nabaa with one window, (b′) equals nabaa as shipped: each ratio in the scoring
    table compares two ways of doing the same work."""
    records = [{"id": r["id"], "title": r["title"], "text": r["text"]} for r in seed_records("dev", 5)]
    diffs = scoring.agreement(trained_run / "best", records)
    assert diffs["max_abs_logit_diff_1window_vs_naive"] < 1e-4
    assert diffs["max_abs_logit_diff_shipped_vs_naive_windows"] < 1e-4


def test_naive_window_shapes_cover_every_window() -> None:
    assert scoring.naive_window_shapes(19, 256) == [(8, 256), (8, 256), (3, 256)]
    assert scoring.naive_window_shapes(16, 128) == [(8, 128), (8, 128)]


def test_interleaved_rotates_and_keeps_reported_seconds() -> None:
    calls: list[str] = []

    def make(name: str, seconds: float | None = None):
        def contender(work: object) -> dict | None:
            calls.append(name)
            return {"seconds": seconds} if seconds is not None else None

        return contender

    timings = common.interleaved({"a": make("a"), "b": make("b", 7.0)}, None, rounds=2, warm=None, log=None)
    assert calls == ["a", "b", "b", "a"]
    assert timings["b"].seconds == [7.0, 7.0] and len(timings["a"].seconds) == 2


def test_peak_rss_is_read_from_proc() -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc")
    assert common.peak_rss_mib() > 1


def test_docs_tables_are_rewritten_between_markers(tmp_path: Path) -> None:
    results = {
        "machine": {"cpu": "X", "usable_cpus": 2, "logical_cpus": 2, "torch_threads": 2, "torch": "t",
                    "transformers": "5", "python": "3", "cuda": False, "model": "m", "trained_model": True,
                    "mode": "quick", "date": "d"},
        "memory": {"mode": "quick", "date": "d", "torch_threads": 2, "model": "tiny", "sizes": [10, 100],
                   "ratio": 1.05, "rows": {"10": {"articles": 10, "peak_rss_mib": 100.0, "seconds": 1.0,
                                                  "articles_per_s": 10.0},
                                           "100": {"articles": 100, "peak_rss_mib": 105.0, "seconds": 9.0,
                                                   "articles_per_s": 11.0}}},
        "gpu": {"skipped": "no CUDA device", "date": "d"},
    }
    doc = tmp_path / "b.md"
    doc.write_text("intro\n<!-- bench:memory:begin -->\nold\n<!-- bench:memory:end -->\nmiddle\n"
                   "<!-- bench:gpu:begin -->\n<!-- bench:gpu:end -->\n<!-- bench:scoring:begin -->\nkeep\n"
                   "<!-- bench:scoring:end -->\nend\n", encoding="utf-8")
    done = run.render_docs(results, doc)
    text = doc.read_text(encoding="utf-8")
    assert set(done) == {"memory", "gpu"}
    assert "old" not in text and "| 100 | 105 |" in text and "**1.05**" in text and "met" in text
    assert "keep" in text  # no scoring results: that block is left alone
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
    assert "GPU row skipped" in text


@pytest.mark.slow
def test_memory_child_scores_and_reports_peak(trained_run: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps({"id": r["id"], "title": r["title"], "text": r["text"]}, ensure_ascii=False)
                            + "\n" for r in seed_records("test", 12)), encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    result = run_cmd([sys.executable, "-m", "bench.memory", "--model", str(trained_run / "best"), "--input",
                      str(dump), "--output", str(out), "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0 and report["peak_rss_mib"] > 1
    assert len(out.read_text(encoding="utf-8").splitlines()) == 12


def test_gpu_check_script_runs_the_named_steps_and_reports_each(tmp_path: Path) -> None:
    """The prepared GPU script (bench/gpu_check.sh) on a machine without a GPU: the named steps run
    within the deadline, each leaves its log and a summary line; unnamed steps do not run."""
    import os

    out = tmp_path / "gc"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SECONDS": "120",
           "GPU_CHECK_RUNS": str(tmp_path / "runs"), "NABAA_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cmd(["bash", "bench/gpu_check.sh", str(out), "env"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (out / "summary.txt").read_text(encoding="utf-8").splitlines()
    assert len(summary) == 1 and summary[0].startswith("env rc=0 ")
    env_log = (out / "env.log").read_text(encoding="utf-8")
    assert "torch" in env_log and "gpu None" in env_log  # no CUDA here: said, not failed
    assert not (out / "pytest.log").exists() and (out / "logs.tar.gz").exists()
    # a failing step fails the script, and says which
    env["PYTHON"] = "false"
    failed = run_cmd(["bash", "bench/gpu_check.sh", str(tmp_path / "gc2"), "env"], env=env)
    assert failed.returncode == 1 and "failed: env" in failed.stdout


def test_lexical_share_caps_only_the_named_tasks(trained_run: Path, small_corpus: dict[str, Path],
                                                 tmp_path: Path) -> None:
    from bench.lexical_share import main

    out = tmp_path / "share.json"
    main([str(trained_run / "best"), "--dev", str(small_corpus["dev"]), "--test", str(small_corpus["test"]),
          "--ceilings", "1.0,0", "--out", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["capped"] == ["stance_gna", "stance_haftar"]
    free, none = result["ceilings"]
    assert free["tasks"]["topic"]["weight"] == none["tasks"]["topic"]["weight"]  # topic is not capped
    for task in ("stance_gna", "stance_haftar"):
        capped = none["tasks"][task]
        assert capped["weight"] == 0.0
        assert capped["macro_f1"] == result["alone"][task]  # weight 0: the transformer's own labels
        assert capped["sides_with_tfidf"] in (None, 0.0)


def test_real_news_check_counts_only_articles_naming_no_libyan_actor(trained_run: Path, tmp_path: Path) -> None:
    from bench.real_news_check import main

    records = [{"id": f"l{i}", "title": "قوات حفتر تتقدم", "text": "اشتباكات جنوب العاصمة.", "topic": "economy"}
               for i in range(3)]
    records += [{"id": f"o{i}", "title": "موازنة مصر", "text": f"ارتفع عجز الموازنة {i} بالمئة هذا العام.",
                 "topic": "economy" if i < 2 else "sport"} for i in range(4)]
    records.append({"id": "empty", "text": "  ", "topic": "economy"})  # no text: left out, not an error
    file = tmp_path / "real.jsonl"
    file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "check.json"
    main([str(trained_run / "best"), "--file", str(file), "--topic-map", "economy=economy", "--out", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["articles"] == 7 and result["naming_no_libyan_actor"] == 4
    assert set(result["false_stance"]) == {"stance_gna", "stance_haftar"}
    for row in result["false_stance"].values():
        assert set(row) == {"alone", "tfidf", "shipped", "ceiling 0.7", "ceiling 0.5", "ceiling 0.3"}
        assert all(share in (0.0, 0.25, 0.5, 0.75, 1.0) for share in row.values())  # shares of 4 articles
    for row in result["topic"].values():
        assert row["all mapped"] == row["economy→economy"]  # the sport article has no counterpart
    with pytest.raises(SystemExit, match="expected FILE_LABEL=MODEL_LABEL"):
        main([str(trained_run / "best"), "--file", str(file), "--topic-map", "economy"])


def test_real_libya_joins_labels_by_id_and_scores_each_system(trained_run: Path, small_corpus: dict[str, Path],
                                                              tmp_path: Path) -> None:
    from bench.real_libya import main

    source = [{"id": r["id"], "title": r.get("title"), "text": r["text"]} for r in seed_records("test", 24)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "dev.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in source), encoding="utf-8")
    labels = [{"id": r["id"], "about_libya": i != 0, **{k: r[k] for k in ("topic", "stance_gna", "stance_haftar")}}
              for i, r in enumerate(seed_records("test", 24))]
    labels_file = tmp_path / "labels.jsonl"
    labels_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels), encoding="utf-8")
    out = tmp_path / "real.json"
    main([str(trained_run / "best"), "--source", str(tmp_path / "src"), "--labels", str(labels_file),
          "--out", str(out), "--baseline", str(trained_run / "best")])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["articles"] == 23  # the one not about Libya is left out
    assert result["shipped − baseline"]["mean"]["diff"] == 0.0  # a model against itself
    for task in ("topic", "stance_gna", "stance_haftar"):
        sweep = result["weight_sweep"][task]
        assert sweep["0.0"] == result["alone"][task] and sweep["1.0"] == result["tfidf"][task]
        assert result["shipped"][task] == sweep[str(result["weights"][task])]
        assert sum(result["gold_counts"][task].values()) == 23
    assert (tmp_path / "real" / "confusion_topic.png").stat().st_size > 0
    labels_file.write_text(json.dumps({**labels[0], "id": "nowhere"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"labels.jsonl:1: id 'nowhere' is in none of"):
        main([str(trained_run / "best"), "--source", str(tmp_path / "src"), "--labels", str(labels_file)])
    labels_file.write_text(json.dumps({"id": labels[0]["id"], "about_libya": True, "topic": "politics"}) + "\n",
                           encoding="utf-8")
    with pytest.raises(SystemExit, match=r"labels.jsonl:1: field 'stance_gna' missing"):
        main([str(trained_run / "best"), "--source", str(tmp_path / "src"), "--labels", str(labels_file)])
    labels_file.write_text(json.dumps(labels[1]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"labels.jsonl:2: not a JSON object"):
        main([str(trained_run / "best"), "--source", str(tmp_path / "src"), "--labels", str(labels_file)])


def test_label_agreement_counts_disputes_and_adjudicates(trained_run: Path, small_corpus: dict[str, Path],
                                                         tmp_path: Path) -> None:
    from bench.label_agreement import main

    tasks = ("topic", "stance_gna", "stance_haftar")
    gold = seed_records("test", 24)
    readings = [{"id": r["id"], "annotator": a, **{t: r[t] for t in tasks}} for r in gold[:10] for a in "XY"]
    other = next(label for label in ("politics", "society") if label != gold[0]["topic"])
    readings[0]["topic"] = readings[1]["topic"] = other  # both readers disagree with the file: disputed
    readings[2]["stance_gna"] = "favor" if gold[1]["stance_gna"] != "favor" else "none"  # one reader only
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in readings), encoding="utf-8")
    out = tmp_path / "agreement.json"
    main([str(trained_run / "best"), "--data", str(small_corpus["test"]), "--second", str(second), "--out", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["read_again"] == 10
    groups = {t: result["tasks"][t]["groups"] for t in tasks}
    assert sum(g.get("disputed", 0) for g in groups["topic"].values()) == 1
    assert sum(g.get("disputed", 0) for g in groups["stance_gna"].values()) == 0  # the readers split
    assert sum(g.get("items", 0) for g in groups["topic"].values()) == 24
    assert sum(g.get("readings", 0) for g in groups["topic"].values()) == 20
    assert result["tasks"]["stance_gna"]["reader_pair_agreement"] == 0.9
    assert result["reader's ceiling"]["topic"] < 1.0 == result["reader's ceiling"]["stance_gna"]
    assert result["adjudicated"]["tfidf"]["stance_gna"] == result["file labels"]["tfidf"]["stance_gna"]
    reader = result["second reader as a system"]
    assert reader["stance_haftar"]["second reader (estimated)"] == 1.0  # every reading is the file's label
    assert reader["topic"]["second reader (estimated)"] < 1.0
    assert reader["topic"]["shipped (exact)"] == result["file labels"]["shipped"]["topic"]
    low, high = reader["intervals"]["second reader"]
    assert low <= reader["mean"]["second reader (estimated)"] <= high
    partial = [dict(r) for r in gold]
    del partial[5]["stance_gna"]  # a file with a task unlabelled on one article: left out of that task only
    partial_file = tmp_path / "partial.jsonl"
    partial_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in partial), encoding="utf-8")
    main([str(trained_run / "best"), "--data", str(partial_file), "--second", str(second), "--out", str(out)])
    groups = json.loads(out.read_text(encoding="utf-8"))["tasks"]
    assert sum(g.get("items", 0) for g in groups["stance_gna"]["groups"].values()) == 23
    assert sum(g.get("items", 0) for g in groups["topic"]["groups"].values()) == 24
    everyone = [{"id": r["id"], "annotator": "Z", **{t: r[t] for t in tasks if t in r}, "stance_gna": "none"}
                for r in partial]  # every article read: the estimates are the exact scores
    second.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in everyone), encoding="utf-8")
    main([str(trained_run / "best"), "--data", str(partial_file), "--second", str(second), "--out", str(out)])
    reader = json.loads(out.read_text(encoding="utf-8"))["second reader as a system"]
    for task in tasks:
        for system in ("shipped", "tfidf"):
            assert reader[task][f"{system} (estimated)"] == pytest.approx(reader[task][f"{system} (exact)"], abs=1e-3)
    assert reader["topic"]["second reader (estimated)"] == 1.0
    second.write_text(json.dumps({**readings[0], "topic": "sport"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"second.jsonl:1: topic = 'sport'"):
        main([str(trained_run / "best"), "--data", str(small_corpus["test"]), "--second", str(second)])
    second.write_text(json.dumps(readings[0]) + "\n" + json.dumps({**readings[0], "id": "nowhere"}) + "\n",
                      encoding="utf-8")
    with pytest.raises(SystemExit, match="1 ids are not in"):
        main([str(trained_run / "best"), "--data", str(small_corpus["test"]), "--second", str(second)])
    second.write_text(json.dumps(readings[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"second.jsonl:2: not JSON"):
        main([str(trained_run / "best"), "--data", str(small_corpus["test"]), "--second", str(second)])
    second.write_text("", encoding="utf-8")
    with pytest.raises(SystemExit, match="no article of .* is read again"):
        main([str(trained_run / "best"), "--data", str(small_corpus["test"]), "--second", str(second)])
