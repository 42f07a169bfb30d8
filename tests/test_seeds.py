"""The shipped seeds corpus: valid, correctly split, varied enough; and the dump builder."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from model.preprocess import Preprocessing
from model.records import iter_records
from seeds.make_dump import make_dump
from training.config import load_config
from training.data import load_labelled

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "seeds"
FILES = ("articles", "train", "dev", "test")
SPLITS = ("train", "dev", "test")
LABEL_FIELDS = ("topic", "stance_gna", "stance_haftar", "difficulty", "hard_kind")


def read(name: str) -> list[dict]:
    text = (SEEDS / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def seeds() -> dict[str, list[dict]]:
    return {name: read(name) for name in FILES}


@pytest.fixture(scope="module")
def make_splits() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seeds_make_splits", SEEDS / "make_splits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", FILES)
def test_every_record_is_valid_for_the_default_schema(name: str) -> None:
    config = load_config(ROOT / "configs" / "demo.yaml")
    articles = load_labelled(str(SEEDS / f"{name}.jsonl"), config.data, config.tasks, Preprocessing())
    assert len(articles) == len(read(name))
    assert all(label >= 0 for a in articles for label in a.labels), "every seed article is fully labelled"


def test_ids_unique_and_splits_partition_the_corpus(seeds: dict[str, list[dict]]) -> None:
    ids = [r["id"] for s in SPLITS for r in seeds[s]]
    assert len(ids) == len(set(ids)), "an id occurs twice across train/dev/test"
    corpus = {r["id"]: r for r in seeds["articles"]}
    assert len(corpus) == len(seeds["articles"]), "duplicate id in articles.jsonl"
    assert set(ids) == set(corpus)
    for s in SPLITS:
        for r in seeds[s]:
            assert r == corpus[r["id"]], f"{s}: {r['id']} differs from articles.jsonl"


def test_split_is_reproducible(seeds: dict[str, list[dict]], make_splits: ModuleType) -> None:
    shipped = {r["id"]: s for s in SPLITS for r in seeds[s]}
    assert make_splits.split_of(seeds["articles"]) == shipped


def test_corpus_is_varied_enough(seeds: dict[str, list[dict]]) -> None:
    records = seeds["articles"]
    topics = Counter(r["topic"] for r in records)
    assert set(topics) == {"military", "politics", "economy", "health", "society"}
    assert min(topics.values()) >= 60, topics
    hard = sum(r["difficulty"] == "hard" for r in records)
    assert hard >= 0.2 * len(records), f"only {hard} hard articles"
    assert all(r["hard_kind"] for r in records if r["difficulty"] == "hard")
    long = sum(len(r["text"].split()) > 430 for r in records)  # > 430 words: over 512 tokens, no model needed
    assert long >= 30, f"only {long} articles over 430 words"
    for task in ("stance_gna", "stance_haftar"):
        assert set(Counter(r[task] for r in records)) == {"favor", "against", "none"}


def test_make_dump_is_unlabelled_unique_and_deterministic(tmp_path: Path) -> None:
    first = make_dump(tmp_path / "a.jsonl.gz", 300, seed=7, progress=False)
    again = make_dump(tmp_path / "b.jsonl.gz", 300, seed=7, progress=False)
    other = make_dump(tmp_path / "c.jsonl.gz", 300, seed=8, progress=False)
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.path.read_bytes() != other.path.read_bytes()
    records = [rec.data for rec in iter_records(first.path)]
    assert len(records) == 300 and all(r is not None for r in records)
    assert len({r["id"] for r in records}) == 300
    assert all(set(r) == {"id", "title", "text", "source", "date", "url"} for r in records)
    assert not any(field in r for r in records for field in LABEL_FIELDS)
    assert all(r["text"].strip() and r["title"].strip() for r in records)
    assert first.lengths.count == 300 and first.lengths.min >= first.corpus_lengths.min
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("name", ["d.csv", "d.parquet"])
def test_make_dump_formats_hold_the_same_articles(tmp_path: Path, name: str) -> None:
    jsonl = make_dump(tmp_path / "d.jsonl", 50, seed=1, progress=False)
    other = make_dump(tmp_path / name, 50, seed=1, progress=False)
    assert [r.data for r in iter_records(other.path)] == [r.data for r in iter_records(jsonl.path)]


def test_splits_are_big_enough_to_decide_and_keep_v1_in_place(seeds: dict[str, list[dict]],
                                                             make_splits: ModuleType) -> None:
    assert len(seeds["test"]) >= 300 and len(seeds["dev"]) >= 200
    v1 = [r for r in seeds["articles"] if make_splits.generation(r) == "v1"]
    assert len(v1) == 420
    # v1 is dealt alone, exactly as before v2 existed: its 60 dev / 60 test articles stay put
    assert make_splits._deal(v1, make_splits.SHARES) == {
        r["id"]: s for s in SPLITS for r in seeds[s] if make_splits.generation(r) == "v1"}
    assert Counter(make_splits._deal(v1, make_splits.SHARES).values()) == {"train": 300, "dev": 60, "test": 60}


def test_v2_label_shares_are_close_to_real_coverage(seeds: dict[str, list[dict]]) -> None:
    records = seeds["articles"]
    none_none = sum(r["stance_gna"] == r["stance_haftar"] == "none" for r in records) / len(records)
    assert 0.3 <= none_none <= 0.45
    words = [len(r["text"].split()) for r in records]
    assert min(words) <= 80 and max(words) >= 800, "lengths spread from briefs to long analyses"
    assert sum(w > 700 for w in words) >= 50
    kinds = Counter(r["hard_kind"] for r in records)
    assert kinds["war_as_background"] >= 50 and kinds["quiet_framing"] >= 50


def test_make_dump_metadata_follow_the_lead_article(tmp_path: Path) -> None:
    """source/date/url come from the article whose lead opens the text: outlet by style, date ±3 days."""
    import datetime as dt

    from seeds.make_dump import DEFAULT_CORPUS, OUTLETS, outlet_for

    corpus = [json.loads(line) for line in DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_lead = {r["text"].split("\n")[0].strip(): r for r in corpus}
    result = make_dump(tmp_path / "m.jsonl", 200, seed=3, progress=False)
    records = [rec.data for rec in iter_records(result.path)]
    for r in records:
        origin = by_lead[r["text"].split("\n")[0]]
        assert r["source"] == outlet_for(origin["outlet_style"]) and r["source"] in OUTLETS
        shift = dt.date.fromisoformat(r["date"]) - dt.date.fromisoformat(origin["date"])
        assert abs(shift.days) <= 3
        slug = r["source"].lower().replace(" ", "-")
        assert r["url"] == f"https://{slug}.example/{r['date'][:4]}/{r['date'][5:7]}/{r['id']}"
    assert len({r["source"] for r in records}) >= 5  # enough outlets to compare
    assert len({r["date"] for r in records}) > 50


def test_growing_the_corpus_moves_no_article_between_splits(seeds: dict[str, list[dict]],
                                                            make_splits: ModuleType) -> None:
    """Each generation is dealt alone: v1-v3 articles keep their split now that v4 exists."""
    older = [r for r in seeds["articles"] if make_splits.generation(r) != "v4"]
    assert len(older) == 1717 and len(seeds["articles"]) - len(older) >= 150
    assert sum(make_splits.generation(r) == "v3" for r in older) == 200
    after = make_splits.split_of(seeds["articles"])
    assert {i: after[i] for i in make_splits.split_of(older)} == make_splits.split_of(older)
