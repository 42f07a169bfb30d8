"""Does ``inference.select`` pick better articles to label than chance? A simulated loop.

    python -m bench.active_learning --start 100 --step 100 --rounds 4   # the issue's budget (docs/results.md §3)
    python -m bench.active_learning                      # 3 seeds, start 50, 4 rounds of 50
    python -m bench.active_learning --seeds 0 1 2 3 4 --start 50 --step 50 --rounds 4

The annotator is simulated by the seeds corpus's gold labels. The unlabelled pool is the seeds
training split (971 articles in seeds v2); the score is the mean macro-F1 of the three tasks on
dev + test (546 articles). The model is the frozen embedded E5-small encoder (mean-pooled embeddings, computed
once and cached in ``bench/out/``) with one logistic-regression head per task, refitted each round.

Each seed draws a random start set; then every round adds ``--step`` articles chosen by

- ``select``: :func:`inference.select.select_indices` (margin uncertainty over the three heads,
  pool of 3 × step, k-means over the embeddings, the most uncertain per cluster) — what
  ``python -m inference.select`` does;
- ``uncertainty``: the ``step`` most uncertain articles (no spreading);
- ``random``: a seeded random sample.

Writes ``bench/out/active_learning.json`` and ``docs/img/active_learning.png``; numbers in
``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, ROOT, untrained_model

RESULTS = OUT / "active_learning.json"
PLOT = ROOT / "docs" / "img" / "active_learning.png"
STRATEGIES = ("select", "uncertainty", "random")
POOL_FACTOR = 3.0


def embeddings(split: str) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Frozen-encoder embeddings and gold label ids of a seeds split (cached)."""
    from inference import Classifier
    from model.records import iter_records

    cache = OUT / f"al-embeddings-{split}.npz"
    clf = None if cache.exists() else Classifier.from_pretrained(untrained_model(), device="cpu")
    records = [r.data for r in iter_records(ROOT / "seeds" / f"{split}.jsonl")]
    if clf is not None:
        prepared = [clf.prepare(r["text"], r.get("title")) for r in records]
        vectors = np.concatenate([clf.embed_prepared(prepared[i:i + 32]) for i in range(0, len(prepared), 32)])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors)
    vectors = np.load(cache)["vectors"]
    tasks = _tasks()
    gold = {name: np.array([labels.index(r[name]) for r in records]) for name, labels in tasks.items()}
    return vectors, gold, [r["id"] for r in records]


def _tasks() -> dict[str, list[str]]:
    from bench.common import demo_config

    return {t.name: list(t.labels) for t in demo_config().tasks}


def fit_heads(x: np.ndarray, gold: dict[str, np.ndarray], rows: np.ndarray, n_labels: dict[str, int]) -> dict:
    from sklearn.linear_model import LogisticRegression

    heads = {}
    for name, y in gold.items():
        head = LogisticRegression(max_iter=3000, C=10.0, class_weight="balanced")
        head.fit(x[rows], y[rows])
        heads[name] = (head, n_labels[name])
    return heads


def predict_proba(heads: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities over every label of a task, even ones not yet seen in the labelled set."""
    out = {}
    for name, (head, n) in heads.items():
        full = np.zeros((len(x), n))
        full[:, head.classes_] = head.predict_proba(x)
        out[name] = full
    return out


def score(heads: dict, x: np.ndarray, gold: dict[str, np.ndarray]) -> float:
    from sklearn.metrics import f1_score

    probs = predict_proba(heads, x)
    return float(np.mean([f1_score(gold[t], probs[t].argmax(1), average="macro", labels=range(probs[t].shape[1]),
                                   zero_division=0) for t in gold]))


def next_batch(strategy: str, heads: dict, x: np.ndarray, unlabelled: np.ndarray, step: int, seed: int,
               rng: np.random.Generator) -> np.ndarray:
    from inference.select import select_indices, uncertain_pool, uncertainty

    if strategy == "random":
        return rng.choice(unlabelled, size=step, replace=False)
    probs = predict_proba(heads, x[unlabelled])
    if strategy == "uncertainty":
        return unlabelled[uncertain_pool(uncertainty(probs), step)]
    picks, _ = select_indices(probs, lambda idx: x[unlabelled][idx], step, seed=seed, pool_factor=POOL_FACTOR)
    return unlabelled[picks]


def run_curve(strategy: str, seed: int, x: np.ndarray, gold: dict, x_eval: np.ndarray, gold_eval: dict,
              start: int, step: int, rounds: int) -> list[tuple[int, float]]:
    n_labels = {name: len(labels) for name, labels in _tasks().items()}
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(x), size=start, replace=False)  # the same start set for every strategy
    pick_rng = np.random.default_rng(1000 + seed)
    curve = []
    for round_ in range(rounds + 1):
        heads = fit_heads(x, gold, labelled, n_labels)
        curve.append((len(labelled), score(heads, x_eval, gold_eval)))
        if round_ == rounds:
            break
        unlabelled = np.setdiff1d(np.arange(len(x)), labelled)
        batch = next_batch(strategy, heads, x, unlabelled, step, seed, pick_rng)
        assert len(set(batch.tolist())) == step and not set(batch.tolist()) & set(labelled.tolist())
        labelled = np.concatenate([labelled, batch])
    return curve


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def plot(results: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for strategy, curves in results["curves"].items():
        sizes = [n for n, _ in next(iter(curves.values()))]
        values = np.array([[v for _, v in curve] for curve in curves.values()])
        mean, low, high = values.mean(0), values.min(0), values.max(0)
        ax.plot(sizes, mean, marker="o", label=f"{strategy} (mean of {len(values)} seeds)")
        ax.fill_between(sizes, low, high, alpha=0.15)
    ax.set_xlabel("labelled articles")
    ax.set_ylabel("dev+test mean macro-F1 (3 tasks)")
    ax.set_title("Simulated labelling rounds: frozen E5-small + logistic heads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    return PLOT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.active_learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--start", type=int, default=50)
    p.add_argument("--step", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    began = time.time()
    x, gold, _ = embeddings("train")
    dev, gold_dev, _ = embeddings("dev")
    test, gold_test, _ = embeddings("test")
    if args.start + args.step * args.rounds > len(x):
        print(f"error: start + step × rounds exceeds the {len(x)} pool articles", file=sys.stderr)
        return 2
    x_eval = np.concatenate([dev, test])
    gold_eval = {t: np.concatenate([gold_dev[t], gold_test[t]]) for t in gold}
    x, x_eval = normalise(x), normalise(x_eval)
    results = {"settings": vars(args) | {"pool": len(x), "eval": len(x_eval), "pool_factor": POOL_FACTOR},
               "curves": {s: {} for s in STRATEGIES}}
    for strategy in STRATEGIES:
        for seed in args.seeds:
            curve = run_curve(strategy, seed, x, gold, x_eval, gold_eval, args.start, args.step, args.rounds)
            results["curves"][strategy][str(seed)] = curve
            print(strategy, seed, " ".join(f"{n}:{v:.3f}" for n, v in curve), flush=True)
    for strategy, curves in results["curves"].items():
        values = np.array([[v for _, v in c] for c in curves.values()])
        print(f"{strategy:12s} mean " + " ".join(f"{v:.3f}" for v in values.mean(0)))
    results["seconds"] = round(time.time() - began, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS} and {plot(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
