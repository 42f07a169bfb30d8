"""Matplotlib figures for reports (PNG files; the Agg backend needs no display)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.metrics import reliability_bins  # noqa: E402


def confusion_png(path: Path, confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> Path:
    """Counts, with each row (gold label) shaded by its recall."""
    cm = np.asarray(confusion, dtype=float)
    share = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 1.0 * len(labels) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    return _save(fig, path)


def reliability_png(path: Path, gold: Sequence[int], curves: dict[str, np.ndarray], title: str) -> Path:
    """Reliability diagram: accuracy vs confidence per bin, one line per probability set."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for name, probs in curves.items():
        bins = reliability_bins(gold, probs, n_bins=10)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top score)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def f1_bars_png(path: Path, per_system: dict[str, dict[str, Any]], labels: Sequence[str], title: str) -> Path:
    """Per-class F1, one bar group per label, one bar per system (model, baseline)."""
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3, 3.8))
    width = 0.8 / max(len(per_system), 1)
    for k, (name, metrics) in enumerate(per_system.items()):
        values = [metrics["per_class"][label]["f1"] for label in labels]
        ax.bar(np.arange(len(labels)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(per_system) - 1) / 2, labels, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves_png(path: Path, metrics_jsonl: Path) -> Path | None:
    """Training loss per logged step and dev mean macro-F1 per epoch, from ``metrics.jsonl``."""
    if not metrics_jsonl.exists():
        return None
    rows = [json.loads(line) for line in metrics_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r.get("type") == "train"]
    evals = [r for r in rows if r.get("type") == "eval"]
    if not train and not evals:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:red")
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss")
    left.set_title("training loss")
    right.plot([r["epoch"] for r in evals], [r["dev_mean_macro_f1"] for r in evals], marker="o", label="mean")
    tasks = sorted({t for r in evals for t in r.get("dev", {})})
    for task in tasks:
        right.plot([r["epoch"] for r in evals], [r["dev"][task]["macro_f1"] for r in evals], ls=":", label=task)
    right.set_xlabel("epoch")
    right.set_ylabel("dev macro-F1")
    right.set_ylim(0, 1)
    right.set_title("dev macro-F1")
    right.legend(fontsize=8)
    return _save(fig, path)


def learning_curve_png(path: Path, curves: dict[str, dict[int, float]], goal: float | None, title: str) -> Path:
    """Dev macro-F1 against training examples (log scale), one line per system."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, points in curves.items():
        sizes = sorted(points)
        ax.plot(sizes, [points[n] for n in sizes], marker="o", label=name)
    if goal is not None:
        ax.axhline(goal, color="grey", ls="--", lw=1, label=f"goal {goal:g}")
    ax.set_xscale("log")
    ax.set_xlabel("training articles")
    ax.set_ylabel("dev macro-F1")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
