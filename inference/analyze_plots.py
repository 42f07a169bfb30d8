"""Figures of :mod:`inference.analyze` (matplotlib, Agg backend, PNG written atomically).

    >>> stance_over_time_png(Path("out/stance_over_time.png"), {"stance_gna": table}, ["outlet a"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from inference.shares import overall_shares  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _labels(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["label"]))


def stance_over_time_png(path: Path, shares: dict[str, pd.DataFrame], groups: Sequence[str]) -> Path:
    """One row of panels per target (stance task), one panel per label: the label's share per
    period, one line per group, its Wilson 95 % interval shaded."""
    n_cols = max(len(_labels(t)) for t in shares.values())
    fig, axes = plt.subplots(len(shares), n_cols, figsize=(4.2 * n_cols, 3.0 * len(shares)), squeeze=False,
                             sharey=True)
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for row, (task, table) in enumerate(shares.items()):
        for col in range(n_cols):
            ax = axes[row][col]
            labels = _labels(table)
            if col >= len(labels):
                ax.axis("off")
                continue
            for k, group in enumerate(groups):
                part = table[(table["group"] == group) & (table["label"] == labels[col])].sort_values("period")
                if part.empty:
                    continue
                x = pd.to_datetime(part["period"])
                ax.plot(x, part["share"], marker="o", ms=3, lw=1.3, color=colours(k % colours.N), label=group)
                ax.fill_between(x, part["ci_low"], part["ci_high"], color=colours(k % colours.N), alpha=0.12)
            ax.set_title(f"{task}: {labels[col]}", fontsize=10)
            ax.set_ylim(0, 1)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            if col == 0:
                ax.set_ylabel("share of articles")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper center", ncol=min(len(names), 6), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0 + 0.06 / len(shares)))
    fig.tight_layout()
    return _save(fig, path)


def stance_heatmap_png(path: Path, shares: dict[str, pd.DataFrame], groups: Sequence[str]) -> Path:
    """Per target, a group × label heatmap of shares over the whole period."""
    fig, axes = plt.subplots(1, len(shares), figsize=(3.2 + 1.1 * sum(len(_labels(t)) for t in shares.values()),
                                                      1.2 + 0.42 * len(groups)), squeeze=False)
    for ax, (task, table) in zip(axes[0], shares.items()):
        labels = _labels(table)
        overall = overall_shares(table[table["group"].isin(groups)])
        matrix = (overall.pivot(index="group", columns="label", values="share")
                  .reindex(index=list(groups), columns=labels).to_numpy(dtype=float))
        ax.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                value = matrix[i, j]
                ax.text(j, i, "–" if np.isnan(value) else f"{value:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.55 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(groups)), groups if ax is axes[0][0] else [""] * len(groups))
        ax.set_title(task, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def topic_mix_png(path: Path, table: pd.DataFrame, task: str) -> Path:
    """Topic shares per period over all groups, as stacked bars."""
    labels = _labels(table)
    summed = table.groupby(["period", "label"], as_index=False)["count"].sum()
    matrix = summed.pivot(index="period", columns="label", values="count").reindex(columns=labels).fillna(0)
    shares = matrix.div(matrix.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.35 * len(shares)), 3.8))
    bottom = np.zeros(len(shares))
    positions = np.arange(len(shares))
    colours = plt.get_cmap("tab10")
    for k, label in enumerate(labels):
        ax.bar(positions, shares[label], bottom=bottom, color=colours(k % 10), label=label, width=0.85)
        bottom += shares[label].to_numpy()
    step = max(1, len(shares) // 16)
    ax.set_xticks(positions[::step], [str(p) for p in shares.index[::step]], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of articles")
    ax.set_title(f"{task} mix per period (all groups)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
