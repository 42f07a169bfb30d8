"""inference.shares: the Wilson interval's properties and change points on small tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.shares import change_points, share_table, wilson_interval


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_share_inside_0_1(case: tuple[int, int]) -> None:
    count, n = case
    low, high = wilson_interval(count, n)
    assert 0.0 <= low <= count / n <= high <= 1.0
    # Four times the articles, about half the width (never wider).
    low4, high4 = wilson_interval(4 * count, 4 * n)
    assert high4 - low4 <= high - low + 1e-12


def test_wilson_known_value_and_empty_period() -> None:
    low, high = wilson_interval(50, 100)
    assert (float(low), float(high)) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    low, high = wilson_interval(0, 0)
    assert pd.isna(low) and pd.isna(high)


def test_share_table_fills_unseen_labels_with_zero() -> None:
    raw = pd.DataFrame({"grp": ["a", "a"], "period": [dt.date(2021, 1, 4)] * 2, "label": ["x", "y"], "n": [3, 1]})
    table = share_table(raw, ["x", "y", "z"], with_probs=False)
    assert table["label"].tolist() == ["x", "y", "z"]
    assert table["count"].tolist() == [3, 1, 0] and table["share"].tolist() == [0.75, 0.25, 0.0]


def test_change_points_ignore_small_periods() -> None:
    rows = []
    for period, n, against in ((dt.date(2021, 1, 1), 50, 5), (dt.date(2021, 2, 1), 50, 45), (dt.date(2021, 3, 1), 3, 0)):
        rows += [{"grp": "a", "period": period, "label": "against", "n": against},
                 {"grp": "a", "period": period, "label": "none", "n": n - against}]
    table = share_table(pd.DataFrame(rows), ["against", "none"], with_probs=False)
    found = change_points({"stance": table}, ["stance"], min_count=10)
    assert set(zip(found["label"], found["to"])) == {("against", dt.date(2021, 2, 1)), ("none", dt.date(2021, 2, 1))}
    assert set(change_points({"stance": table}, ["stance"], min_count=60)["label"]) == set()
