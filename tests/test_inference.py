"""The Classifier API and the batch scorer, with the session's tiny trained model."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import inference.score as score
from inference import Classifier
from inference.writers import json_line
from tests.conftest import ROOT, run, seed_records, write_jsonl


@pytest.fixture(scope="module")
def model_dir(trained_run: Path) -> Path:
    return trained_run / "best"


@pytest.fixture(scope="module")
def clf(model_dir: Path) -> Classifier:
    return Classifier.from_pretrained(model_dir, device="cpu")


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [{"id": r["id"], "title": r["title"], "text": r["text"]} for r in seed_records("test", 40)]
    return write_jsonl(tmp_path_factory.mktemp("dump") / "dump.jsonl", records)


def score_cli(*args: str) -> subprocess.CompletedProcess:  # noqa: F821
    return run([sys.executable, "-m", "inference.score", *args])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predict_shape_labels_and_scores(clf: Classifier) -> None:
    out = clf.predict(["اشتباكات عنيفة جنوب طرابلس", {"title": "النفط", "text": "استئناف الإنتاج في حقل الشرارة"}])
    assert len(out) == 2
    for row in out:
        assert set(row) == {"topic", "stance_gna", "stance_haftar"}
        for task, pred in row.items():
            assert pred["label"] in clf.labels(task)
            assert pred["score"] == max(pred["probs"].values())
            assert sum(pred["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert clf.predict([]) == []
    assert clf.predict_proba([])["topic"].shape == (0, 5)


def test_batching_does_not_change_results(model_dir: Path) -> None:
    # fp32, where this holds to float noise; bf16 kernels may round one step apart per shape.
    texts = [r["text"] for r in seed_records("dev", 12)] + ["خبر قصير"]
    wide = Classifier.from_pretrained(model_dir, device="cpu", dtype="fp32", batch_size=64).predict_proba(texts)
    narrow = Classifier.from_pretrained(model_dir, device="cpu", dtype="fp32", batch_size=1,
                                        max_batch_tokens=64).predict_proba(texts)
    for task in wide:
        np.testing.assert_allclose(wide[task], narrow[task], atol=1e-5)


def test_long_article_uses_windows(clf: Classifier) -> None:
    long_text = " ".join(r["text"] for r in seed_records("train", 6))
    [windows] = clf.pre.windows(clf.tokenizer, [clf.prepare(long_text)])
    assert len(windows) == clf.pre.predict_max_windows > 1
    assert clf.predict([long_text])[0]["topic"]["label"] in clf.labels("topic")


def test_empty_text_is_a_clear_error(clf: Classifier) -> None:
    with pytest.raises(ValueError, match="text #1: text is empty"):
        clf.predict(["نص", "   \n\t "])


def test_cli_matches_api(model_dir: Path, clf: Classifier, dump: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    result = score_cli("--model", str(model_dir), "--input", str(dump), "--output", str(out), "--probs")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_jsonl(out)
    records = read_jsonl(dump)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    api = clf.predict(records)
    for row, pred in zip(rows, api):
        for task in clf.task_names:
            assert row[task] == pred[task]["label"]
            assert row[f"{task}_score"] == pytest.approx(pred[task]["score"], abs=1e-5)
            assert set(row[f"{task}_probs"]) == set(clf.labels(task))
    assert read_jsonl(out.with_name("scores.jsonl.errors.jsonl")) == []
    assert "articles/s" in result.stdout


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_output_formats(model_dir: Path, dump: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"scores.{fmt}"
    args = score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(out), "--probs"])
    summary, code = score.run_scoring(args)
    assert code == 0 and summary.scored == 40
    if fmt == "csv":
        with open(out, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(dump)]
    assert "topic_prob_military" in rows[0] and "stance_haftar_score" in rows[0]


BAD_LINES = [
    (b'{"id": "x1", "text": "\xd8\xa8\xff"}', "invalid UTF-8"),
    (b'{"id": "x2", "text": "unterminated', "invalid JSON"),
    (b'["a", "list"]', "not a JSON object"),
    (b'{"id": "x3"}', "missing text field 'text'"),
    (b'{"id": "x4", "text": "   "}', "empty text field 'text'"),
    (b'{"id": "x5", "text": 42}', "must be a string, got int"),
    ('{"text": "نص بلا معرف"}'.encode(), "missing id field 'id'"),
    ('{"id": [1], "text": "نص"}'.encode(), "must be a non-empty string or integer, got list"),
]


def test_each_bad_record_kind_goes_to_the_errors_file(model_dir: Path, tmp_path: Path) -> None:
    good = [json.dumps({"id": f"g{i}", "text": "خبر عن الاقتصاد الليبي"}, ensure_ascii=False).encode() for i in range(3)]
    dup = json.dumps({"id": "g0", "text": "نص آخر بالمعرف نفسه"}, ensure_ascii=False).encode()
    lines = [good[0], *[b for b, _ in BAD_LINES], good[1], dup, good[2]]
    dump = tmp_path / "bad.jsonl"
    dump.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    result = score_cli("--model", str(model_dir), "--input", str(dump), "--output", str(out))
    assert result.returncode == score.EXIT_BAD_RECORDS
    errors = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    for i, (_, reason) in enumerate(BAD_LINES):
        assert errors[i]["line"] == i + 2 and reason in errors[i]["reason"], errors[i]
    assert errors[-1]["id"] == "g0" and "duplicate id (first on line 1)" in errors[-1]["reason"]
    assert [r["id"] for r in read_jsonl(out)] == ["g0", "g1", "g0", "g2"]  # duplicates reported, not merged
    assert "8 error(s), 1 duplicate id(s)" in result.stdout


def test_resume_after_torn_journal_equals_uninterrupted(model_dir: Path, dump: Path, tmp_path: Path) -> None:
    full = tmp_path / "full.jsonl"
    score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(full)]))
    # An interrupted run: 2 buffers journalled, then a kill tore the third write.
    out = tmp_path / "part.jsonl"
    args = score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(out),
                             "--buffer-size", "8"])
    clf = Classifier.from_pretrained(model_dir, device="cpu")
    assert score.check_start(args, 1) is None
    journal = score.journal_path(out, 0, 1)
    records = list(score.iter_records(dump))
    entries = score.score_buffer(records[:16], args, clf)
    journal.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries) + '{"line": 17, "id"',
                       encoding="utf-8")
    refused = score.run_scoring(args)
    assert refused[1] == score.EXIT_USAGE  # journals exist: --resume required
    args.resume = True
    summary, code = score.run_scoring(args)
    assert code == 0 and summary.scored == 40 and summary.scored_this_run == 24
    assert out.read_bytes() == full.read_bytes()
    assert not journal.exists()
    again, code = score.run_scoring(args)  # resuming a finished run is a no-op
    assert code == 0 and again.files_skipped == 1 and again.scored_this_run == 0 and again.scored == 40


def write_shard_journals(args: score.ScoreArgs, clf: Classifier, n: int) -> list[int]:
    """Journals as ``n`` processes leave them when every shard is done; return each shard's size."""
    sizes = []
    for k in range(n):
        records = list(score.iter_records(args.input, shard=(k, n)))
        entries = score.score_buffer(records, args, clf)
        score.journal_path(Path(args.output), k, n).write_text("".join(json_line(e) for e in entries),
                                                              encoding="utf-8")
        sizes.append(len(records))
    return sizes


def test_merge_of_uneven_shards_equals_one_process(model_dir: Path, clf: Classifier, dump: Path,
                                                   tmp_path: Path) -> None:
    full, three = tmp_path / "full.jsonl", tmp_path / "three.jsonl"
    score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(full)]))
    args = score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(three)])
    sizes = write_shard_journals(args, clf, 3)
    assert sizes == [14, 13, 13]
    summary = score.merge(args, clf, 3, read=sizes)
    assert summary.scored == 40 and three.read_bytes() == full.read_bytes()
    assert not list(tmp_path.glob("three.jsonl.part-*"))


def test_merge_refuses_a_short_journal_and_keeps_the_journals(model_dir: Path, clf: Classifier, dump: Path,
                                                              tmp_path: Path) -> None:
    """A short journal used to end the merge early, then every journal was deleted: records of
    every shard were lost without a word."""
    out = tmp_path / "out.jsonl"
    args = score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(out)])
    sizes = write_shard_journals(args, clf, 3)
    short = score.journal_path(out, 1, 3)
    short.write_text("".join(short.read_text(encoding="utf-8").splitlines(keepends=True)[:5]), encoding="utf-8")
    journals = {p: p.read_bytes() for p in tmp_path.glob("out.jsonl.part-*")}
    with pytest.raises(score.MergeError, match=r"out.jsonl.part-1-of-3.journal holds 5 record\(s\) but its "
                                               r"shard has 13 in the input.*journals are kept"):
        score.merge(args, clf, 3, read=sizes)
    # Without the shards' counts, the lengths alone give it away.
    with pytest.raises(score.MergeError, match=r"journal lengths \[14, 5, 13\]"):
        score.merge(args, clf, 3)
    assert {p: p.read_bytes() for p in tmp_path.glob("out.jsonl.part-*")} == journals
    assert not out.exists() and not score.errors_path(out).exists()


def _retrain_in_place(model: Path) -> None:
    """What training does to best/ at a better epoch: same path, same header, new weights."""
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, model / "model.safetensors",
              metadata={"format": "pt"})


def _append_record(dump: Path) -> None:
    with open(dump, "a", encoding="utf-8") as f:
        f.write('{"id": "late", "text": "خبر وصل متأخرا"}\n')


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda args: _retrain_in_place(Path(args.model)), "model folder contents"),
        (lambda args: (Path(args.model) / "calibration.json").write_text('{"topic": {"temperature": 2.0}}'),
         "model folder contents"),
        (lambda args: setattr(args, "dtype", "bf16"), "precision (--dtype): was 'float32', now 'bfloat16'"),
        (lambda args: setattr(args, "quantize", "int8"), "quantisation (--quantize): was None, now 'int8'"),
        (lambda args: _append_record(Path(args.input)), "input file contents"),
    ],
    ids=["weights-replaced", "recalibrated", "dtype", "quantize", "input-appended"],
)
def test_resume_refuses_a_different_model_precision_or_input(model_dir: Path, dump: Path, tmp_path: Path,
                                                             change, named: str) -> None:
    """The journals of one run must not be continued by another: mixing two models or two
    precisions in one output was silently possible (only the paths were compared)."""
    import shutil

    model, data = tmp_path / "best", tmp_path / "dump.jsonl"
    shutil.copytree(model_dir, model)
    shutil.copy(dump, data)
    args = score.parse_args(["--model", str(model), "--input", str(data), "--output", str(tmp_path / "out.jsonl"),
                             "--dtype", "fp32", "--device", "cpu"])
    assert score.check_start(args, 1) is None  # the run starts (and is killed)
    args.resume = True
    assert score.check_start(args, 1) is None  # resuming the same run is fine
    change(args)
    problem = score.check_start(args, 1)
    assert problem is not None and named in problem, problem
    assert "differs from the interrupted one" in problem


def test_field_names_come_from_the_model_folder(model_dir: Path, clf: Classifier, dump: Path,
                                                tmp_path: Path) -> None:
    """A model trained on `headline`/`body` used to be scored with `title`/`text`: the title was
    silently dropped (and the text missing). The names are in preprocess.json now."""
    import shutil

    renamed = tmp_path / "headline_model"
    shutil.copytree(model_dir, renamed)
    pre = json.loads((renamed / "preprocess.json").read_text(encoding="utf-8"))
    pre.update(text_field="body", title_field="headline", id_field="uid")
    (renamed / "preprocess.json").write_text(json.dumps(pre), encoding="utf-8")
    records = read_jsonl(dump)
    ours = Classifier.from_pretrained(renamed, device="cpu")
    got = ours.predict_proba([{"headline": r["title"], "body": r["text"]} for r in records[:6]])
    want = clf.predict_proba([{"title": r["title"], "text": r["text"]} for r in records[:6]])
    without_title = clf.predict_proba([{"text": r["text"]} for r in records[:6]])
    for task in want:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)
    assert any(not np.allclose(want[t], without_title[t], atol=1e-4) for t in want)  # the title matters
    # the scorer reads the same fields, and its flags still override them
    renamed_dump = write_jsonl(tmp_path / "renamed.jsonl",
                               [{"uid": r["id"], "headline": r["title"], "body": r["text"]} for r in records])
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert score.run_scoring(score.parse_args(["--model", str(renamed), "--input", str(renamed_dump),
                                               "--output", str(a)]))[1] == 0
    score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(b)]))
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.jsonl"
    assert score.run_scoring(score.parse_args(["--model", str(renamed), "--input", str(dump), "--output", str(c),
                                               "--text-field", "text", "--title-field", "title",
                                               "--id-field", "id"]))[1] == 0
    assert c.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_two_processes_equal_one(model_dir: Path, dump: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(one)]))
    accelerate = ROOT / ".venv/bin/accelerate"
    cmd = [str(accelerate) if accelerate.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "inference.score",
           "--model", str(model_dir), "--input", str(dump), "--output", str(two), "--buffer-size", "7"]
    result = run(cmd, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(shard" in result.stderr or "scored 40" in result.stdout
    assert two.read_bytes() == one.read_bytes()


SLOW_RANK = """
import sys, time
sys.path.insert(0, {root!r})
import inference.score as score

real = score.score_shard


def slow_second_shard(clf, args, k, n, show_progress):
    done = real(clf, args, k, n, show_progress)
    if k == 1:
        time.sleep({delay})  # this shard finishes long after the other
    return done


score.score_shard = slow_second_shard
sys.exit(score.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_process_group_timeout_is_configurable(model_dir: Path, dump: Path, tmp_path: Path) -> None:
    """Shards finishing far apart wait for each other at the final gather. The wait is bounded by
    --process-group-timeout: too short fails the run (journals kept), long enough completes it."""
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump), "--output", str(one)]))
    accelerate = ROOT / ".venv/bin/accelerate"
    launch = [str(accelerate) if accelerate.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes",
              "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    args = ["--model", str(model_dir), "--input", str(dump), "--output", str(two)]
    short = tmp_path / "short.py"
    short.write_text(SLOW_RANK.format(root=str(ROOT), delay=10), encoding="utf-8")
    failed = run([*launch, str(short), *args, "--process-group-timeout", "3"], env=env)
    assert failed.returncode != 0 and not two.exists()
    assert "Timed out" in failed.stderr and "raise --process-group-timeout (now 3 s)" in failed.stderr
    assert sorted(p.name for p in tmp_path.glob("two.jsonl.part-*")) == ["two.jsonl.part-0-of-2.journal",
                                                                         "two.jsonl.part-1-of-2.journal"]
    patient = tmp_path / "patient.py"
    patient.write_text(SLOW_RANK.format(root=str(ROOT), delay=4), encoding="utf-8")
    done = run([*launch, str(patient), *args, "--resume", "--process-group-timeout", "120"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()


def test_memory_is_bounded_by_the_buffer(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20k records stream through: never more than --buffer-size records held between read and journal."""
    dump = tmp_path / "big.jsonl"
    with open(dump, "w", encoding="utf-8") as f:
        for i in range(20_000):
            f.write(json.dumps({"id": i, "text": f"خبر رقم {i} من طرابلس"}, ensure_ascii=False) + "\n")
    read, held = {"n": 0}, []
    real_iter, real_score = score.iter_records, score.score_buffer

    def counting_iter(*a, **k):
        for rec in real_iter(*a, **k):
            read["n"] += 1
            yield rec

    def watching_score(records, *a, **k):
        held.append(len(records))
        assert read["n"] - sum(held[:-1]) <= 500
        return real_score(records, *a, **k)

    monkeypatch.setattr(score, "iter_records", counting_iter)
    monkeypatch.setattr(score, "score_buffer", watching_score)
    out = tmp_path / "big-out.jsonl"
    summary, code = score.run_scoring(score.parse_args(
        ["--model", str(model_dir), "--input", str(dump), "--output", str(out), "--buffer-size", "500"]))
    assert code == 0 and summary.scored == 20_000
    assert max(held) == 500 and sum(held) == 20_000
    assert sum(1 for _ in open(out, encoding="utf-8")) == 20_000


def test_output_keeps_one_record_per_line_for_every_reader(model_dir: Path, tmp_path: Path) -> None:
    """U+0085 and U+2028 are line breaks to str.splitlines(): the output escapes them."""
    dump = write_jsonl(tmp_path / "odd.jsonl", [{"id": "a\x85b", "text": "خبر\u2028سطر"}, {"id": "c", "text": "خبر"}])
    out = tmp_path / "odd-out.jsonl"
    summary, code = score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump),
                                                        "--output", str(out)]))
    assert code == 0
    assert [json.loads(x)["id"] for x in out.read_text(encoding="utf-8").splitlines()] == ["a\x85b", "c"]


def test_identical_texts_are_scored_once_and_rows_stay_the_same(model_dir: Path, dump: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    records = read_jsonl(dump)[:20]
    copies = [dict(r, id=f"wire-{i}") for i, r in enumerate(records[:5])]  # 20 % wire copies
    wired = write_jsonl(tmp_path / "wired.jsonl", records + copies)
    scored_texts = []
    real = Classifier.predict_proba_prepared
    monkeypatch.setattr(Classifier, "predict_proba_prepared",
                        lambda self, texts: scored_texts.extend(texts) or real(self, texts))
    runs = {}
    for name, extra in (("dedup", []), ("every", ["--no-dedup"])):
        out = tmp_path / f"{name}.jsonl"
        scored_texts.clear()
        summary, code = score.run_scoring(score.parse_args(
            ["--model", str(model_dir), "--input", str(wired), "--output", str(out), "--dtype", "fp32", *extra]))
        runs[name] = (summary, len(scored_texts), read_jsonl(out))
    (dedup, n_dedup, rows), (every, n_every, rows_every) = runs["dedup"], runs["every"]
    assert (dedup.repeated_texts, n_dedup, every.repeated_texts, n_every) == (5, 20, 0, 25)
    assert dedup.scored == every.scored == 25
    assert [r["id"] for r in rows] == [r["id"] for r in rows_every]
    for row, other in zip(rows, rows_every):
        assert {k: v for k, v in row.items() if not k.endswith("_score")} == \
               {k: v for k, v in other.items() if not k.endswith("_score")}
    assert rows[20]["topic"] == rows[0]["topic"] and rows[20]["topic_score"] == rows[0]["topic_score"]


def test_a_folder_of_inputs_scores_each_file_once(model_dir: Path, dump: Path, tmp_path: Path) -> None:
    import zstandard

    records = [dict(r, source="Sahara Wire", date=f"2020-05-0{i % 9 + 1}") for i, r in enumerate(read_jsonl(dump))]
    folder = tmp_path / "in"
    (folder / "2020").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", records[:10])
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[10:20]) + "not json\n"
    (folder / "2020" / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data.encode()))
    out = tmp_path / "out"
    cmd = ["--model", str(model_dir), "--input", str(folder), "--output", str(out), "--keep", "source,date"]
    result = score_cli(*cmd)
    assert result.returncode == score.EXIT_BAD_RECORDS, result.stderr[-2000:]
    assert "files: 2 (0 already complete, skipped)" in result.stdout
    b = pq.read_table(out / "2020" / "b.parquet").to_pylist()
    assert [r["id"] for r in b] == [r["id"] for r in records[10:20]]
    assert b[0]["source"] == "Sahara Wire" and b[0]["date"] == records[10]["date"]
    assert read_jsonl(out / "2020" / "b.parquet.errors.jsonl")[0]["line"] == 11
    before = (out / "a.parquet").stat().st_mtime_ns
    again = score_cli(*cmd)  # the same command: nothing left to do, same exit status
    assert again.returncode == score.EXIT_BAD_RECORDS and "files: 2 (2 already complete, skipped)" in again.stdout
    assert (out / "a.parquet").stat().st_mtime_ns == before
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["scored"] == 20
    other = score_cli(*cmd, "--quantize", "int8")  # another quantisation: refuse to mix, keep the old outputs
    assert other.returncode == score.EXIT_USAGE and "different run" in other.stderr
    assert (out / "a.parquet").stat().st_mtime_ns == before


def test_summary_says_whether_the_scores_are_calibrated(model_dir: Path, dump: Path, tmp_path: Path) -> None:
    """An uncalibrated folder's scores are raw softmax: the summary (and its rerun) must say so."""
    import shutil

    from inference.classifier import UncalibratedWarning

    raw = tmp_path / "raw"
    shutil.copytree(model_dir, raw)
    (raw / "calibration.json").unlink()
    out = tmp_path / "raw.jsonl"
    args = ["--model", str(raw), "--input", str(dump), "--output", str(out)]
    with pytest.warns(UncalibratedWarning):
        summary, code = score.run_scoring(score.parse_args(args))
    assert code == 0 and summary.calibrated is False
    assert json.loads(out.with_name("raw.jsonl.summary.json").read_text(encoding="utf-8"))["calibrated"] is False
    rerun, _ = score.run_scoring(score.parse_args(args))  # skipped as complete: still uncalibrated
    assert rerun.files_skipped == 1 and rerun.calibrated is False
    calibrated, _ = score.run_scoring(score.parse_args(["--model", str(model_dir), "--input", str(dump),
                                                        "--output", str(tmp_path / "cal.jsonl")]))
    assert calibrated.calibrated is True


def test_an_article_that_never_names_the_target_reads_none(model_dir: Path, clf: Classifier, tmp_path: Path) -> None:
    """A task's ``mentions`` (saved in config.json) make ``none`` certain where the target is never
    named, through every way of scoring; articles that name it keep the network's reading."""
    import shutil

    gated = tmp_path / "gated"
    shutil.copytree(model_dir, gated)
    config = json.loads((gated / "config.json").read_text(encoding="utf-8"))
    for task in config["tasks"]:
        if task["name"] == "stance_haftar":
            task["mentions"] = ["حفتر"]
    (gated / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    gated_clf = Classifier.from_pretrained(gated, device="cpu")

    texts = ["قوات حفتر تتقدم نحو العاصمة", "مباراة الأهلي والزمالك تنتهي بالتعادل"]
    plain, after = clf.predict_proba(texts), gated_clf.predict_proba(texts)
    none = clf.labels("stance_haftar").index("none")
    assert after["stance_haftar"][1].tolist() == [1.0 if j == none else 0.0 for j in range(3)]
    np.testing.assert_allclose(after["stance_haftar"][0], plain["stance_haftar"][0], rtol=1e-6)
    np.testing.assert_allclose(after["stance_gna"], plain["stance_gna"], rtol=1e-6)  # no mentions: unchanged
    assert gated_clf.predict(texts)[1]["stance_haftar"] == {"label": "none", "score": 1.0,
                                                           "probs": {"favor": 0.0, "against": 0.0, "none": 1.0}}

    prepared = [gated_clf.prepare(t) for t in texts]
    windows = gated_clf.pre.windows(gated_clf.tokenizer, prepared)
    by_windows = gated_clf.predict_proba_windows(windows, prepared=prepared)
    np.testing.assert_allclose(by_windows["stance_haftar"], after["stance_haftar"], rtol=1e-6)
    with pytest.raises(ValueError, match="prepared texts"):
        gated_clf.predict_proba_windows(windows)
