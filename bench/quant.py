"""int8 dynamic quantisation and bf16 on CPU: speed against fp32, and what they cost in
mean macro-F1 on ``seeds/test.jsonl``.

Speed: the :class:`inference.Classifier` variants (``quantize="int8"``, torch's plain
``quantize_dynamic`` for comparison, ``dtype="bf16"``, fp32) score the same dump articles as shipped (up to
``predict_max_windows`` windows), interleaved in one process.

Quality: each variant scores the test split through ``Classifier.logits_prepared`` (what
``training.evaluate`` uses); calibrated argmax, ``training.metrics.task_metrics`` and
``mean_macro_f1``. With an untrained model the F1 figures mean nothing and are marked so;
label agreement with fp32 is reported either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import ROOT, bf16_fast, bf16_kernels, interleaved, ratio
from bench.scoring import (
    classifier_contender,
    encoder_flop_model,
    flops,
    load_classifier,
    nabaa_tokens,
    workload,
)

VARIANTS = {"fp32": {"dtype": "fp32"}, "int8": {"quantize": "int8"}, "int8_plain": {"dtype": "fp32"},
            "bf16": {"dtype": "bf16"}}


def plain_int8(clf):
    """``quantize_dynamic`` as torch ships it (per-channel weights, one activation scale per call,
    no outlier channels): what nabaa's int8 used to be, kept to show what the outliers cost."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.model = quantize_dynamic(clf.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return clf


def test_quality(classifiers: dict[str, Any], folder: Path, test_file: Path) -> dict[str, Any]:
    from inference.classifier import _softmax
    from model.modeling import IGNORE_INDEX
    from training.data import load_labelled
    from training.evaluate import data_args_of
    from training.metrics import mean_macro_f1, task_metrics

    out: dict[str, Any] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for name, clf in classifiers.items():
        articles = load_labelled(str(test_file), data_args_of(folder), clf.tasks, clf.pre)
        raw = clf.logits_prepared([a.prepared for a in articles])
        per_task, predictions[name] = {}, {}
        for column, task in enumerate(clf.tasks):
            keep = np.array([a.labels[column] != IGNORE_INDEX for a in articles], dtype=bool)
            gold = np.array([a.labels[column] for a in articles])[keep]
            probs = _softmax(raw[task.name] / clf.temperature(task.name))
            predictions[name][task.name] = probs.argmax(axis=1)
            per_task[task.name] = task_metrics(gold.tolist(), probs[keep].argmax(axis=1).tolist(), task.labels)
        out[name] = {"mean_macro_f1": round(mean_macro_f1(per_task), 4),
                     "macro_f1": {t: round(m["macro_f1"], 4) for t, m in per_task.items()},
                     "articles": len(articles)}
    for name in classifiers:
        same = [np.mean(predictions[name][t] == predictions["fp32"][t]) for t in predictions["fp32"]]
        out[name]["label_agreement_with_fp32"] = round(float(np.mean(same)), 4)
        out[name]["f1_points_vs_fp32"] = round(100 * (out[name]["mean_macro_f1"] - out["fp32"]["mean_macro_f1"]), 2)
    return out


def run(folder: Path, trained: bool, dump: Path, n: int, rounds: int, log=print) -> dict[str, Any]:
    work = workload(dump, n, "quant")
    warm = workload(dump, 4, "quant-warm")
    # No bf16 row where bf16 would be emulated (AVX2 CPUs or caps): it would time the emulation.
    variants = {name: kw for name, kw in VARIANTS.items() if name != "bf16" or bf16_fast()}
    classifiers = {name: load_classifier(folder, **kw) for name, kw in variants.items()}
    classifiers["int8_plain"] = plain_int8(classifiers["int8_plain"])
    log(f"  quantisation: {n} articles x {rounds} rounds ({', '.join(variants)})")
    timings = interleaved({name: classifier_contender(c) for name, c in classifiers.items()}, work, rounds,
                          warm=warm, log=log)
    rows = {name: {"seconds": [round(s, 3) for s in t.seconds], "articles_per_s": round(n / t.median, 2)}
            for name, t in timings.items()}
    executed = flops(nabaa_tokens(classifiers["fp32"], work.records)["shapes"], encoder_flop_model(classifiers["fp32"].model))
    for name, row in rows.items():
        row["x_vs_fp32"] = ratio(row["articles_per_s"], rows["fp32"]["articles_per_s"])
        row["gflop_per_s"] = round(executed / 1e9 / timings[name].median, 1)
    test_file = ROOT / "seeds" / "test.jsonl"
    log(f"  quantisation: quality on {test_file.name}")
    quality = test_quality(classifiers, folder, test_file)
    for name in rows:
        rows[name].update(quality[name])
    return {"articles": n, "rounds": rounds, "model": str(folder), "trained_model": trained,
            "bf16_kernels": bf16_kernels(), "quantized_engine": torch.backends.quantized.engine, "rows": rows}
