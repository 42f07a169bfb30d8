"""inference.select: uncertainty, diversity, --k, --task, determinism, outputs for Label Studio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference import Classifier
from inference.select import (
    SelectArgs,
    main,
    pick_diverse,
    run_select,
    select_indices,
    sidecar_paths,
    uncertainty,
)
from tests.conftest import seed_records, write_jsonl


def test_uncertainty_margin_and_entropy() -> None:
    probs = {"a": np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]]),
             "b": np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])}
    margin = uncertainty(probs, "margin")
    assert margin == pytest.approx([(1.0 + 0.0) / 2, (0.15 + 1.0) / 2, 1.0])
    assert uncertainty(probs, "margin", ["a"]) == pytest.approx([1.0, 0.15, 1.0])
    entropy = uncertainty(probs, "entropy", ["a"])
    assert entropy[2] == pytest.approx(1.0) and entropy[0] == pytest.approx(np.log(2) / np.log(3))
    with pytest.raises(ValueError, match="strategy"):
        uncertainty(probs, "random")


def three_stories(per_story: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty and embeddings of 3 stories; story 0 holds all the most uncertain copies."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3) * 10
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (per_story, 3)) for c in centres])
    scores = np.concatenate([0.9 + rng.uniform(0, 0.05, per_story), 0.5 + rng.uniform(0, 0.05, per_story),
                             0.4 + rng.uniform(0, 0.05, per_story)])
    return scores, embeddings


def test_picks_spread_over_stories_not_copies_of_one() -> None:
    scores, embeddings = three_stories()
    picks = pick_diverse(scores, embeddings, k=3, seed=0)
    assert sorted(p // 20 for p in picks) == [0, 1, 2]  # one per story
    # ... and from each story its most uncertain copy, most uncertain first.
    assert picks == [int(np.argmax(np.where(np.arange(60) // 20 == s, scores, -1))) for s in (0, 1, 2)]


def test_duplicates_never_picked_twice_and_k_respected() -> None:
    scores = np.array([0.9, 0.9, 0.9, 0.8, 0.1])
    embeddings = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]])  # four copies of one text
    for k in range(1, 6):
        picks = pick_diverse(scores, embeddings, k=k, seed=3)
        assert len(picks) == k and len(set(picks)) == k
    assert set(pick_diverse(scores, embeddings, k=2, seed=3)) == {0, 4}


def test_select_indices_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(1)
    probs = {"t": rng.dirichlet(np.ones(3), size=400)}
    embeddings = rng.normal(size=(400, 8))
    runs = [select_indices(probs, lambda idx: embeddings[idx], k=30, seed=7)[0] for _ in range(2)]
    assert runs[0] == runs[1] and len(set(runs[0])) == 30
    other = select_indices(probs, lambda idx: embeddings[idx], k=30, seed=8)[0]
    assert other != runs[0]
    with pytest.raises(ValueError, match="at least 1"):
        select_indices(probs, lambda idx: embeddings[idx], k=0)


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 unlabelled seeds articles, one id repeated and one text copied under a new id."""
    records = [{k: r[k] for k in ("id", "title", "text", "date")} for r in seed_records("train", 40)]
    records.append({**records[3], "text": records[3]["text"]})  # same id again
    records.append({**records[5], "id": "copy-of-5"})  # same story, new id
    records.append({"id": "empty", "title": "", "text": "   "})  # cannot be scored
    return write_jsonl(tmp_path_factory.mktemp("dump") / "dump.jsonl", records)


@pytest.fixture(scope="module")
def clf(trained_run: Path) -> Classifier:
    return Classifier.from_pretrained(trained_run / "best", device="cpu")


def test_select_writes_k_distinct_picks_with_guesses(clf: Classifier, dump: Path, tmp_path: Path,
                                                     trained_run: Path) -> None:
    out = tmp_path / "to_label.jsonl"
    args = SelectArgs(model=str(trained_run / "best"), input=str(dump), out=str(out), k=12, seed=1,
                      show_progress=False)
    rows = run_select(args, clf)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written == rows and len(rows) == 12
    assert len({r["id"] for r in rows}) == 12 and "empty" not in {r["id"] for r in rows}
    assert [r["rank"] for r in rows] == list(range(1, 13))
    assert [r["uncertainty"] for r in rows] == sorted((r["uncertainty"] for r in rows), reverse=True)
    # The guesses are what the model predicts for that article.
    preds = clf.predict([{"text": r["text"], "title": r["title"]} for r in rows])
    for row, pred in zip(rows, preds):
        assert row["guess"] == {t: p["label"] for t, p in pred.items()}
        assert row["scores"] == {t: pytest.approx(p["score"], abs=1e-5) for t, p in pred.items()}
        assert row["date"]  # the article's own fields are kept
    import_file, config_file = sidecar_paths(out)
    tasks = json.loads(import_file.read_text(encoding="utf-8"))
    assert [t["data"]["id"] for t in tasks] == [r["id"] for r in rows]
    first = tasks[0]["predictions"][0]["result"]
    assert {(r["from_name"], r["value"]["choices"][0]) for r in first} == set(rows[0]["guess"].items())
    assert '<Choices name="stance_haftar" toName="text" choice="single"' in config_file.read_text(encoding="utf-8")
    # Same seed, same picks.
    again = run_select(SelectArgs(**{**vars(args), "out": str(tmp_path / "again.jsonl")}), clf)
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def test_task_focus_and_k_larger_than_dump(clf: Classifier, dump: Path, tmp_path: Path, trained_run: Path) -> None:
    base = {"model": str(trained_run / "best"), "input": str(dump), "show_progress": False}
    rows = run_select(SelectArgs(**base, out=str(tmp_path / "a.jsonl"), k=5, task="stance_gna"), clf)
    margins = [1 - abs(sorted(r["probs"]["stance_gna"].values())[-1] - sorted(r["probs"]["stance_gna"].values())[-2])
               for r in rows]
    assert [r["uncertainty"] for r in rows] == pytest.approx(margins, abs=1e-5)
    everything = run_select(SelectArgs(**base, out=str(tmp_path / "b.jsonl"), k=500), clf)
    assert len(everything) == 41  # 40 + the copied story; the repeated id and the empty text are left out


def test_command_line_errors(dump: Path, tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--model", str(trained_run / "best"), "--input", str(dump), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "x.jsonl"), "--task", "sentiment"]) == 2
    assert "--task 'sentiment' is not a task" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .jsonl" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
