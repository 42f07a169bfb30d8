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


def macro_f1_from_ids(gold: np.ndarray, pred: np.ndarray, n_labels: int, present_only: bool = False,
                      weights: np.ndarray | None = None) -> float:
    """Macro-F1 over all ``n_labels`` classes (a class never seen nor predicted counts 0), fast
    enough to run thousands of times in a bootstrap. ``present_only`` averages over the classes in
    gold or predictions only (scikit-learn's default), for small sets where a class never occurs.
    ``weights`` count each row that many times (an estimate for a whole set from a stratified
    sample of it, each row weighted by its stratum's size over the rows drawn from it).

    >>> round(macro_f1_from_ids(np.array([0, 1, 1]), np.array([0, 1, 0]), 3), 3)
    0.444
    >>> round(macro_f1_from_ids(np.array([0, 1, 1]), np.array([0, 1, 0]), 3, present_only=True), 3)
    0.667
    >>> macro_f1_from_ids(np.array([0, 1]), np.array([0, 1]), 2, weights=np.array([1.0, 3.0]))
    1.0
    """
    confusion = np.bincount(gold * n_labels + pred, weights=weights,
                            minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    tp = np.diag(confusion).astype(float)
    denom = confusion.sum(axis=0) + confusion.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[denom > 0].mean() if present_only else f1.mean())


def paired_bootstrap(
    gold: dict[str, np.ndarray], pred_a: dict[str, np.ndarray], pred_b: dict[str, np.ndarray],
    n_labels: dict[str, int], n_resamples: int = 2000, seed: int = 0, ignore: int = -100,
    present_only: bool = False,
) -> dict[str, Any]:
    """Paired bootstrap of the macro-F1 difference A − B, per task and for the mean over tasks.

    Articles are resampled with replacement (the same resample for both systems and every task,
    so the tasks' correlation is kept); rows whose gold is ``ignore`` are left out of that task.
    Returns, per task and for ``"mean"``: the observed difference, the 95 % percentile interval,
    and the share of resamples in which A is better.

    >>> g = {"t": np.array([0, 1, 1, 0] * 10)}
    >>> r = paired_bootstrap(g, {"t": g["t"]}, {"t": np.zeros(40, dtype=int)}, {"t": 2}, n_resamples=200)
    >>> r["mean"]["low"] > 0
    True
    """
    rng = np.random.default_rng(seed)
    n = len(next(iter(gold.values())))
    tasks = list(gold)

    def diffs(index: np.ndarray) -> dict[str, float]:
        out = {}
        for t in tasks:
            g, keep = gold[t][index], gold[t][index] != ignore
            out[t] = (macro_f1_from_ids(g[keep], pred_a[t][index][keep], n_labels[t], present_only)
                      - macro_f1_from_ids(g[keep], pred_b[t][index][keep], n_labels[t], present_only))
        out["mean"] = float(np.mean([out[t] for t in tasks]))
        return out

    observed = diffs(np.arange(n))
    samples = [diffs(rng.integers(0, n, n)) for _ in range(n_resamples)]
    result = {}
    for key in [*tasks, "mean"]:
        values = np.array([s[key] for s in samples])
        low, high = np.percentile(values, [2.5, 97.5])
        result[key] = {"diff": observed[key], "low": float(low), "high": float(high),
                       "p_better": float((values > 0).mean()), "n_resamples": n_resamples}
    return result


def accuracy_by_slice(
    slices: Sequence[str], gold: dict[str, np.ndarray], preds: dict[str, dict[str, np.ndarray]],
    n_resamples: int = 2000, seed: int = 0, ignore: int = -100,
) -> dict[str, dict[str, Any]]:
    """Per slice value (e.g. each outlet or kind of article): its size, each system's accuracy
    (mean over tasks of the labelled rows) and a paired bootstrap 95 % interval of first − last
    system. Accuracy, not macro-F1: a slice of a few dozen articles often lacks some classes,
    which macro-F1 would count as zeros.

    >>> g = {"t": np.array([0, 1, 1, 0])}
    >>> r = accuracy_by_slice(["a", "a", "b", "b"], g, {"m": {"t": np.array([0, 1, 0, 0])}, "b": {"t": g["t"]}})
    >>> r["a"]["n"], r["b"]["accuracy"]["m"], r["b"]["accuracy"]["b"]
    (2, 0.5, 1.0)
    """
    rng = np.random.default_rng(seed)
    names = list(preds)
    first, last = names[0], names[-1]
    tasks = list(gold)
    values = np.asarray(slices, dtype=object)

    def accuracy(system: str, index: np.ndarray) -> float:
        per_task = []
        for t in tasks:
            g = gold[t][index]
            keep = g != ignore
            if keep.any():
                per_task.append(float((preds[system][t][index][keep] == g[keep]).mean()))
        return float(np.mean(per_task)) if per_task else float("nan")

    out: dict[str, dict[str, Any]] = {}
    for value in sorted(set(values.tolist()), key=str):
        rows = np.flatnonzero(values == value)
        samples = [rows[rng.integers(0, len(rows), len(rows))] for _ in range(n_resamples)]
        diffs = np.array([accuracy(first, s) - accuracy(last, s) for s in samples])
        low, high = np.nanpercentile(diffs, [2.5, 97.5])
        out[str(value)] = {"n": int(len(rows)), "accuracy": {s: accuracy(s, rows) for s in names},
                           "diff": accuracy(first, rows) - accuracy(last, rows), "low": float(low),
                           "high": float(high), "compared": [first, last]}
    return out
