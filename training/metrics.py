"""Classification metrics computed locally (scikit-learn; no network).

    >>> m = task_metrics([0, 1, 1], [0, 1, 0], labels=["a", "b"])
    >>> round(m["accuracy"], 3), round(m["macro_f1"], 3)
    (0.667, 0.667)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def task_metrics(
    gold: Sequence[int], pred: Sequence[int], labels: Sequence[str], probs: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support, confusion matrix and (with probs) ECE.

    ``gold``/``pred`` are label ids; rows without a gold label must be removed first.
    Macro-F1 averages over *all* schema labels, so a never-predicted class counts as 0.
    """
    ids = list(range(len(labels)))
    gold, pred = np.asarray(gold, dtype=int), np.asarray(pred, dtype=int)
    if len(gold) == 0:
        return {"n": 0, "accuracy": float("nan"), "macro_f1": float("nan")}
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(gold)),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, label in enumerate(labels)
        },
        "confusion": confusion_matrix(gold, pred, labels=ids).tolist(),
        "labels": list(labels),
    }
    if probs is not None:
        out["ece"] = expected_calibration_error(gold, probs)
    return out


def expected_calibration_error(gold: Sequence[int], probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the bin-weighted gap between confidence (max prob) and accuracy.

    >>> round(expected_calibration_error([0, 0], np.array([[0.9, 0.1], [0.9, 0.1]])), 3)
    0.1
    """
    bins = reliability_bins(gold, probs, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / max(n, 1))


def reliability_bins(gold: Sequence[int], probs: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Equal-width confidence bins with their mean confidence, accuracy and count."""
    probs = np.asarray(probs, dtype=float)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(gold)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins so a confidence of exactly 1.0 lands in the last bin.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            out.append({
                "low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                "confidence": float(conf[mask].mean()), "accuracy": float(correct[mask].mean()),
            })
    return out


def mean_macro_f1(per_task: dict[str, dict[str, Any]]) -> float:
    """The selection metric: mean of the tasks' macro-F1 (tasks with no gold labels skipped)."""
    scores = [m["macro_f1"] for m in per_task.values() if m.get("n", 0) > 0]
    return float(np.mean(scores)) if scores else float("nan")
