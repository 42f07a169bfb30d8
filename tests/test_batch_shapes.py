"""Classifier batches are padded to a bounded set of lengths, and that changes no result.

On CPU every new input shape costs oneDNN a cached kernel (a few MB); unbounded shapes made
a long scoring run grow steadily (see ``inference.classifier.PAD_MULTIPLE``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import inference.classifier as classifier_module
from inference import Classifier
from tests.conftest import seed_records


@pytest.fixture(scope="module")
def clf(trained_run: Path) -> Classifier:
    return Classifier.from_pretrained(trained_run / "best", device="cpu")


def test_lengths_are_bounded_and_every_window_is_batched_once(clf: Classifier) -> None:
    rng = random.Random(0)
    max_length = clf.pre.max_length
    lengths, shapes = set(), set()
    for _ in range(200):  # 200 "buffers" of random window lengths
        windows = [[0] * rng.randint(3, max_length) for _ in range(rng.randint(1, 300))]
        batches = list(clf._batches(windows))
        assert sorted(i for b in batches for i in b) == list(range(len(windows)))
        for batch in batches:
            longest = max(len(windows[i]) for i in batch)
            length = clf._padded_length(longest)
            assert longest <= length <= max(longest, max_length)
            assert length % classifier_module.PAD_MULTIPLE == 0 or length == max_length
            assert len(batch) <= clf.batch_size and (len(batch) == 1 or length * len(batch) <= clf.max_batch_tokens)
            lengths.add(length)
            shapes.add((len(batch), length))
    buckets = -(-max_length // classifier_module.PAD_MULTIPLE)
    assert len(lengths) <= buckets
    # Row counts: full batches (one per length under the token budget) and power-of-two pieces
    # of each buffer's remainder; 200 random buffers would otherwise meet most of 1..batch_size.
    assert len({rows for rows, _ in shapes}) <= clf.batch_size.bit_length() + buckets


def test_remainder_is_cut_into_power_of_two_pieces_in_order() -> None:
    pieces = list(classifier_module._power_of_two_pieces(list(range(37))))
    assert [len(p) for p in pieces] == [32, 4, 1]
    assert [i for p in pieces for i in p] == list(range(37))
    assert list(classifier_module._power_of_two_pieces([])) == []


def test_rounded_padding_changes_no_result(trained_run: Path) -> None:
    # fp32: masked padding is exact there; in bf16 (``auto`` on AMX CPUs) another padded length
    # picks other kernels and moves logits by one bf16 step (~1e-3), which says nothing of masking.
    texts = [r["text"] for r in seed_records("dev", 20)] + ["خبر قصير", "نص آخر أطول قليلا من السابق"]
    rounded = Classifier.from_pretrained(trained_run / "best", device="cpu", dtype="fp32")
    exact = Classifier.from_pretrained(trained_run / "best", device="cpu", dtype="fp32")
    exact.pad_multiple = 1
    ours, theirs = rounded.logits(texts, calibrated=False), exact.logits(texts, calibrated=False)
    for task in ours:
        np.testing.assert_allclose(ours[task], theirs[task], atol=1e-5)
