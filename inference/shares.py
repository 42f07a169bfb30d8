"""Shares of labels with Wilson intervals, and change points, from per-period counts.

Pure pandas/numpy over small tables (one row per group x period x label), shared by
:mod:`inference.analyze`, its figures and its report.

    >>> low, high = wilson_interval(0, 10)
    >>> float(low), round(float(high), 4)
    (0.0, 0.2775)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def wilson_interval(count: Any, n: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial share ``count / n`` (vectorised; n = 0 gives NaN).

    Unlike the normal approximation it stays inside [0, 1] and is sensible for 0 or n successes.

    >>> low, high = wilson_interval(5, 20)
    >>> round(float(low), 4), round(float(high), 4)
    (0.1119, 0.4687)
    """
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = count / n
        denom = 1 + z**2 / n
        centre = (share + z**2 / (2 * n)) / denom
        half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / denom
    # Exactly 0 (n of n) has an exact bound of 0 (1); rounding would leave ~1e-17 instead.
    low = np.where(count == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(count == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    low, high = np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)
    return low, high


def share_table(raw: pd.DataFrame, labels: Sequence[str] | None, with_probs: bool) -> pd.DataFrame:
    """From per group × period × label counts (and ``p_<label>`` probability sums) to shares with
    Wilson intervals; labels absent from a period get a count of 0, not a missing row."""
    labels = list(labels) if labels else sorted(raw["label"].unique())
    extra = sorted(set(raw["label"]) - set(labels))
    labels += extra
    cells = raw.groupby(["grp", "period"], as_index=False)
    totals = cells["n"].sum().rename(columns={"n": "articles"})
    grid = totals.merge(pd.DataFrame({"label": labels}), how="cross")
    counts = raw.groupby(["grp", "period", "label"], as_index=False)["n"].sum()
    table = grid.merge(counts, on=["grp", "period", "label"], how="left").fillna({"n": 0})
    table["n"] = table["n"].astype(int)
    table["share"] = table["n"] / table["articles"]
    table["ci_low"], table["ci_high"] = wilson_interval(table["n"], table["articles"])
    if with_probs:
        prob_sums = cells[[c for c in raw.columns if c.startswith("p_")]].sum()
        long = prob_sums.melt(id_vars=["grp", "period"], var_name="label", value_name="p_sum")
        long["label"] = long["label"].str[2:]
        table = table.merge(long, on=["grp", "period", "label"], how="left")
        table["expected_share"] = table["p_sum"] / table["articles"]
        table = table.drop(columns="p_sum")
    table["period"] = pd.to_datetime(table["period"]).dt.date
    table = table.rename(columns={"grp": "group", "n": "count"})
    order = {lab: i for i, lab in enumerate(labels)}
    table = table.sort_values(["group", "period", "label"], key=lambda s: s.map(order) if s.name == "label" else s)
    return table.reset_index(drop=True)


def change_points(shares: dict[str, pd.DataFrame], tasks: Sequence[str], min_count: int) -> pd.DataFrame:
    """Consecutive periods of a group (each with >= ``min_count`` articles) where a label's share
    moved so far that the two Wilson 95 % intervals do not overlap.

    >>> change_points(shares, ["stance_haftar"], min_count=10)  # doctest: +SKIP
    """
    found = []
    for task in tasks:
        table = shares[task]
        table = table[table["articles"] >= min_count].sort_values(["group", "label", "period"])
        for (group, label), rows in table.groupby(["group", "label"], sort=False):
            prev = rows.shift(1)
            moved = (rows["ci_low"] > prev["ci_high"]) | (rows["ci_high"] < prev["ci_low"])
            for i in np.flatnonzero(moved.to_numpy()):
                before, after = rows.iloc[i - 1], rows.iloc[i]
                found.append({"group": group, "task": task, "label": label, "from": before["period"],
                              "to": after["period"], "share_from": before["share"], "share_to": after["share"],
                              "change": after["share"] - before["share"], "articles_from": before["articles"],
                              "articles_to": after["articles"]})
    columns = ["group", "task", "label", "from", "to", "share_from", "share_to", "change", "articles_from",
               "articles_to"]
    changes = pd.DataFrame(found, columns=columns)
    return changes.reindex(changes["change"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def overall_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Per group × label over all periods: count, share and Wilson interval."""
    totals = table.drop_duplicates(["group", "period"]).groupby("group")["articles"].sum()
    summed = table.groupby(["group", "label"], sort=False, as_index=False)["count"].sum()
    summed["articles"] = summed["group"].map(totals)
    summed["share"] = summed["count"] / summed["articles"]
    summed["ci_low"], summed["ci_high"] = wilson_interval(summed["count"], summed["articles"])
    return summed
