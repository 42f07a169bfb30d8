"""Do several trained runs, averaged, beat the best of them? (dev macro-F1 with TF-IDF fusion)

    python -m bench.ensemble runs/ant-v2/best runs/ant-v3/best --file ../shared/data/ant/dev.jsonl.gz

Each model reads the labelled file as it was trained to (its own windows); the ensemble is the
equal-weight mean of their log-probabilities (no weight is tuned on the file it is judged on).
Both the last model alone and the ensemble are then mixed with the last model's TF-IDF at the
weight finalisation would choose on this file, and compared with a paired bootstrap 95 % CI.
Writes ``bench/out/ensemble.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from bench.common import OUT


def compare(models: list[Path], file: str) -> dict[str, Any]:
    from inference import Classifier
    from model.lexical import fuse
    from training.data import load_labelled
    from training.evaluate import data_args_of
    from training.finalize import choose_lexical_weight
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    out: dict[str, Any] = {"models": [str(m) for m in models], "file": file}
    scores, gold, last = [], None, None
    for folder in models:
        last = Classifier.from_pretrained(folder)
        articles = load_labelled(file, data_args_of(folder), last.tasks, last.pre)
        task = last.tasks[0]
        gold = np.array([a.labels[0] for a in articles])
        prepared = [a.prepared for a in articles]
        scores.append(log_softmax(last.logits_prepared(prepared)[task.name], axis=1))
        out[f"alone:{folder}"] = macro_f1_from_ids(gold, scores[-1].argmax(1), len(task.labels))
    lexical = last.lexical.log_proba(prepared)[task.name]
    n = len(task.labels)
    out["tfidf"] = macro_f1_from_ids(gold, lexical.argmax(1), n)
    fused = {}
    for name, logits in (("last", scores[-1]), ("ensemble", np.mean(scores, axis=0))):
        weight = choose_lexical_weight(logits, lexical, gold, task.labels)
        fused[name] = fuse(logits, lexical, weight).argmax(1)
        out[f"{name}_alone"] = macro_f1_from_ids(gold, logits.argmax(1), n)
        out[f"{name}_fused"] = {"macro_f1": macro_f1_from_ids(gold, fused[name], n), "tfidf_weight": weight}
    diff = paired_bootstrap({"t": gold}, {"t": fused["ensemble"]}, {"t": fused["last"]}, {"t": n})["mean"]
    out["ensemble_minus_last_fused"] = diff
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="trained model folders (one task each)")
    parser.add_argument("--file", required=True, help="a labelled JSONL file (e.g. the dev split)")
    args = parser.parse_args(argv)
    result = compare(args.models, args.file)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ensemble.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
