"""A lexical scorer saved beside the transformer: TF-IDF features (word 1-2-grams and character
2-5-grams) and one linear layer per task, stored as safetensors + JSON (no pickle).

Training fits it (``training.baseline.Baseline``), finalisation picks on dev how much of it to
mix into each task's scores (``lexical_weight`` in ``calibration.json``), and
``inference.Classifier`` applies the mix to every prediction::

    fused = (1 - w) * log_softmax(transformer logits) + w * log p_lexical

A cheap ensemble: word and character n-grams catch topic vocabulary that a small encoder
fine-tuned on a few hundred articles misses, and the two make different mistakes.

    >>> lex = LexicalModel.load("runs/demo/best")  # doctest: +SKIP
    >>> lex.log_proba(["passage: نص المقال"])["topic"].shape  # doctest: +SKIP
    (1, 5)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from model.arabic import normalize_arabert_v02

LEXICAL_CONFIG = "lexical.json"
LEXICAL_WEIGHTS = "lexical.safetensors"
FORMAT_VERSION = 1
# Word 1-2-grams and character 2-5-grams within word boundaries (the baseline's features).
FEATURE_SETS = {"words": {"analyzer": "word", "ngram_range": (1, 2)},
                "chars": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
_UNSEEN_CLASS_BIAS = -30.0  # a label the training data never had: probability ~1e-13


def lexical_text(prepared: str) -> str:
    """The text the lexical features read: a prepared article, AraBERT-normalised (letter variants
    and diacritics folded, so spelling variants share n-grams)."""
    return normalize_arabert_v02(prepared)


@dataclass
class LexicalModel:
    """TF-IDF vocabularies and idf weights per feature set, and per task a linear layer over the
    concatenated, per-set l2-normalised features (``weights[task]``: ``[n_labels, n_features]``
    in the task's label order)."""

    vocabularies: dict[str, list[str]]
    idf: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        # Built once: a vocabulary dict of a few hundred thousand n-grams costs a noticeable
        # fraction of a second, and the scorer calls features() once per buffer.
        self._counters = {
            name: CountVectorizer(vocabulary={term: i for i, term in enumerate(self.vocabularies[name])},
                                  dtype=np.float32, **settings)
            for name, settings in FEATURE_SETS.items()
        }

    def features(self, prepared: Sequence[str]) -> sparse.csr_matrix:
        """``[n_texts, n_features]``: sublinear tf × idf, l2-normalised per feature set."""
        texts = [lexical_text(t) for t in prepared]
        blocks = []
        for name in FEATURE_SETS:
            counts = self._counters[name].transform(texts)
            counts.data = 1.0 + np.log(counts.data)
            weighted = counts.multiply(self.idf[name][None, :]).tocsr()
            norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
            blocks.append(sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted)
        return sparse.hstack(blocks, format="csr")

    def log_proba(self, prepared: Sequence[str]) -> dict[str, np.ndarray]:
        """Per task, log-probabilities ``[n_texts, n_labels]``."""
        x = self.features(prepared)
        out = {}
        for task, w in self.weights.items():
            scores = np.asarray(x @ w.T) + self.bias[task]
            scores -= scores.max(axis=1, keepdims=True)
            out[task] = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        return out

    # -- persistence -----------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``lexical.safetensors`` and ``lexical.json`` into the model folder ``directory``."""
        directory = Path(directory)
        tensors = {f"idf.{k}": v.astype(np.float32) for k, v in self.idf.items()}
        tensors.update({f"weight.{k}": v.astype(np.float32) for k, v in self.weights.items()})
        tensors.update({f"bias.{k}": v.astype(np.float32) for k, v in self.bias.items()})
        meta = {"format_version": FORMAT_VERSION, "feature_sets": {k: {"analyzer": v["analyzer"],
                "ngram_range": list(v["ngram_range"])} for k, v in FEATURE_SETS.items()},
                "vocabularies": self.vocabularies, "tasks": list(self.weights)}
        # Each file via temp + rename; the config last, since its presence is what load() checks.
        weights_tmp = directory / f".{LEXICAL_WEIGHTS}.tmp"
        save_file(tensors, str(weights_tmp))
        os.replace(weights_tmp, directory / LEXICAL_WEIGHTS)
        config_tmp = directory / f".{LEXICAL_CONFIG}.tmp"
        config_tmp.write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(config_tmp, directory / LEXICAL_CONFIG)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LexicalModel | None:
        """The lexical model of a model folder, or ``None`` if it has none."""
        directory = Path(directory)
        if not (directory / LEXICAL_CONFIG).exists():
            return None
        meta = json.loads((directory / LEXICAL_CONFIG).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory / LEXICAL_CONFIG}: format_version {meta.get('format_version')!r}, "
                             f"this nabaa reads {FORMAT_VERSION}")
        tensors = load_file(str(directory / LEXICAL_WEIGHTS))
        return cls(
            vocabularies=meta["vocabularies"],
            idf={k: tensors[f"idf.{k}"] for k in FEATURE_SETS},
            weights={t: tensors[f"weight.{t}"] for t in meta["tasks"]},
            bias={t: tensors[f"bias.{t}"] for t in meta["tasks"]},
        )

    @classmethod
    def from_linear(cls, vocabularies: dict[str, list[str]], idf: dict[str, np.ndarray],
                    layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    n_labels: dict[str, int]) -> LexicalModel:
        """Build from fitted linear classifiers: per task ``(coef, intercept, classes)`` as
        scikit-learn's ``LogisticRegression`` holds them (one row for two classes; ``classes``
        the label ids seen in training). Labels never seen get a large negative bias."""
        weights, bias = {}, {}
        n_features = sum(len(v) for v in vocabularies.values())
        for task, (coef, intercept, classes) in layers.items():
            if coef.shape[0] == 1:  # binary: sigmoid(b + xw) == softmax over (0, b + xw)
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.concatenate([[0.0], intercept])
            w = np.zeros((n_labels[task], n_features), dtype=np.float32)
            b = np.full(n_labels[task], _UNSEEN_CLASS_BIAS, dtype=np.float32)
            w[np.asarray(classes)] = coef
            b[np.asarray(classes)] = intercept
            weights[task], bias[task] = w, b
        return cls(vocabularies, idf, weights, bias)


def fuse(model_logits: np.ndarray, lexical_log_proba: np.ndarray | None, weight: float) -> np.ndarray:
    """``(1 - weight) * log_softmax(model_logits) + weight * lexical_log_proba``; with no lexical
    part (or weight 0) the model's logits unchanged, so temperatures fitted on them still apply.

    >>> fuse(np.array([[2.0, 0.0]]), None, 0.5)
    array([[2., 0.]])
    """
    if lexical_log_proba is None or weight <= 0:
        return model_logits
    z = model_logits - model_logits.max(axis=1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return (1.0 - weight) * log_softmax + weight * lexical_log_proba
