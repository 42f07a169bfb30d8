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
from sklearn.pipeline import FeatureUnion

from model.lexical import FEATURE_SETS, LexicalModel, lexical_text
from model.modeling import IGNORE_INDEX
from model.schema import Task
from training.data import Article
from training.metrics import mean_macro_f1, task_metrics


def _text(article: Article) -> str:
    # The transformer's prefix ("passage: ") would only add a constant feature.
    return lexical_text(article.prepared)


def make_features() -> FeatureUnion:
    """Word 1-2-grams and character 2-5-grams (the sets of :data:`model.lexical.FEATURE_SETS`)."""
    words, chars = FEATURE_SETS["words"], FEATURE_SETS["chars"]
    return FeatureUnion([
        ("words", TfidfVectorizer(**words, min_df=2, max_features=200_000, sublinear_tf=True)),
        ("chars", TfidfVectorizer(**chars, min_df=2, max_features=300_000, sublinear_tf=True)),
    ])


def make_classifier(seed: int = 0) -> LogisticRegression:
    # balanced class weights: stance labels are skewed and macro-F1 is the metric.
    return LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced", random_state=seed)


class Baseline:
    """TF-IDF features fitted once on the training texts, one logistic regression per task."""

    def __init__(self, tasks: Sequence[Task], seed: int = 0):
        self.tasks, self.seed = list(tasks), seed
        self.features: FeatureUnion | None = None
        self.classifiers: dict[str, LogisticRegression] = {}

    def fit(self, train: Sequence[Article]) -> Baseline:
        self.features = make_features()
        x = self.features.fit_transform([_text(a) for a in train])
        for column, task in enumerate(self.tasks):
            keep = [i for i, a in enumerate(train) if a.labels[column] != IGNORE_INDEX]
            y = [train[i].labels[column] for i in keep]
            if len(set(y)) < 2:
                continue  # a single observed class: nothing to learn; predict() falls back to it
            self.classifiers[task.name] = make_classifier(self.seed).fit(x[keep], y)
        return self

    def predict_proba(self, articles: Sequence[Article]) -> dict[str, np.ndarray]:
        x = self.features.transform([_text(a) for a in articles]) if self.features and articles else None
        out = {}
        for task in self.tasks:
            probs = np.zeros((len(articles), len(task.labels)))
            lr = self.classifiers.get(task.name)
            if lr is not None and x is not None:
                probs[:, lr.classes_] = lr.predict_proba(x)
            else:
                probs[:, 0] = 1.0
            out[task.name] = probs
        return out

    def to_lexical(self) -> LexicalModel | None:
        """The fitted baseline as a :class:`model.lexical.LexicalModel` (saved into model folders,
        no pickle); ``None`` if some task could not be fitted."""
        if self.features is None or len(self.classifiers) < len(self.tasks):
            return None
        vectorizers = dict(self.features.transformer_list)
        vocabularies, idf = {}, {}
        for name in FEATURE_SETS:
            vocab = vectorizers[name].vocabulary_
            terms = [""] * len(vocab)
            for term, i in vocab.items():
                terms[i] = term
            vocabularies[name], idf[name] = terms, vectorizers[name].idf_
        layers = {t: (lr.coef_, lr.intercept_, lr.classes_) for t, lr in self.classifiers.items()}
        return LexicalModel.from_linear(vocabularies, idf, layers, {t.name: len(t.labels) for t in self.tasks})

    def evaluate(self, articles: Sequence[Article],
                 probs: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
        """Metrics per task; ``probs`` are this model's :meth:`predict_proba` of ``articles`` when
        the caller already has them."""
        probs = self.predict_proba(articles) if probs is None else probs
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
