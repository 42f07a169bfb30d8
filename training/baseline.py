"""A classical baseline: TF-IDF (word 1-2-grams + character 2-5-grams) and logistic
regression, one per task, trained on the same split as the transformer. Reports
show it side by side so users see what fine-tuning buys.

    python -m training.baseline --config configs/demo.yaml            # train split → dev (and test)
    python -m training.baseline --config configs/ant.yaml data.train_file=... data.dev_file=...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from model.arabic import normalize_arabert_v02
from model.modeling import IGNORE_INDEX
from model.schema import Task
from training.data import Article
from training.metrics import mean_macro_f1, task_metrics


def _text(article: Article) -> str:
    # The transformer's prefix ("passage: ") would only add a constant feature.
    return normalize_arabert_v02(article.prepared)


def make_pipeline(seed: int = 0) -> Pipeline:
    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=300_000,
                                  sublinear_tf=True)),
    ])
    # balanced class weights: stance labels are skewed and macro-F1 is the metric.
    clf = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced", random_state=seed)
    return Pipeline([("tfidf", features), ("lr", clf)])


class Baseline:
    """One TF-IDF + logistic-regression pipeline per task."""

    def __init__(self, tasks: Sequence[Task], seed: int = 0):
        self.tasks, self.seed = list(tasks), seed
        self.pipelines: dict[str, Pipeline] = {}

    def fit(self, train: Sequence[Article]) -> Baseline:
        texts = [_text(a) for a in train]
        for column, task in enumerate(self.tasks):
            keep = [i for i, a in enumerate(train) if a.labels[column] != IGNORE_INDEX]
            y = [train[i].labels[column] for i in keep]
            if len(set(y)) < 2:
                continue  # a single observed class: nothing to learn; predict() falls back to it
            self.pipelines[task.name] = make_pipeline(self.seed).fit([texts[i] for i in keep], y)
        return self

    def predict_proba(self, articles: Sequence[Article]) -> dict[str, np.ndarray]:
        texts = [_text(a) for a in articles]
        out = {}
        for task in self.tasks:
            probs = np.zeros((len(articles), len(task.labels)))
            pipe = self.pipelines.get(task.name)
            if pipe is not None and texts:
                probs[:, pipe.classes_] = pipe.predict_proba(texts)
            else:
                probs[:, 0] = 1.0
            out[task.name] = probs
        return out

    def evaluate(self, articles: Sequence[Article]) -> dict[str, dict[str, Any]]:
        probs = self.predict_proba(articles)
        results = {}
        for column, task in enumerate(self.tasks):
            keep = [i for i, a in enumerate(articles) if a.labels[column] != IGNORE_INDEX]
            gold = [articles[i].labels[column] for i in keep]
            p = probs[task.name][keep]
            results[task.name] = task_metrics(gold, p.argmax(axis=1).tolist(), task.labels, p)
        return results


def main(argv: Sequence[str] | None = None) -> int:
    from model.preprocess import build_preprocessing
    from training.config import ConfigError, load_config
    from training.data import DataError, load_labelled, load_train_split

    parser = argparse.ArgumentParser(prog="python -m training.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        pre = build_preprocessing(cfg.model)
        train = load_train_split(cfg.data, cfg.tasks, pre)
        start = time.time()
        baseline = Baseline(cfg.tasks, cfg.train.seed).fit(train)
        print(f"trained on {len(train)} articles in {time.time() - start:.1f}s")
        for split in ("dev_file", "test_file"):
            path = getattr(cfg.data, split)
            if not path:
                continue
            results = baseline.evaluate(load_labelled(path, cfg.data, cfg.tasks, pre))
            summary = {t: {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
                       for t, m in results.items()}
            print(json.dumps({"split": split[:-5], "file": path, "mean_macro_f1": round(mean_macro_f1(results), 4),
                              "tasks": summary}, ensure_ascii=False))
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
