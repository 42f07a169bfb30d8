"""ANT topic benchmark: fine-tuned embedded backbone vs TF-IDF, as a learning curve.

    ANT_DIR=../shared/data/ant python -m bench.ant_curve --sizes 1000 3000 [--epochs 2] [--baseline-sizes ... all]

For each size N it trains ``configs/ant.yaml`` on a seeded random N of the ANT train split
(``data.sample_train=N``; the run goes to ``runs/ant-N``), evaluates on dev, and trains the
TF-IDF + logistic-regression baseline on the same N articles. Results go to
``bench/out/ant_curve.json`` and the plot ``docs/img/ant_curve.png``; ``docs/results.md`` quotes them. The ANT text is never copied
into the project: only scores are written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from bench.common import save_json
from model.preprocess import build_preprocessing
from training.baseline import Baseline
from training.config import load_config
from training.data import load_labelled, load_train_split
from training.metrics import mean_macro_f1
from training.train import main as train_main

OUT = Path("bench/out/ant_curve.json")
PLOT = Path("docs/img/ant_curve.png")


def run_model(size: int, epochs: int, extra: list[str]) -> dict:
    out = Path(f"runs/ant-{size}")
    overrides = [f"data.sample_train={size}", f"output_dir={out}", f"train.epochs={epochs}", *extra]
    start = time.time()
    resume = (out / "checkpoints").exists()
    if not (out / "report" / "dev" / "metrics.json").exists():
        code = train_main(["--config", "configs/ant.yaml", *(["--resume"] if resume else []), *overrides])
        if code:
            raise SystemExit(code)
    report = json.loads((out / "report" / "dev" / "metrics.json").read_text(encoding="utf-8"))
    task = report["tasks"]["topic"]
    resolved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    settings = {k: resolved["model"][k] for k in ("max_length", "max_windows", "freeze_embeddings", "freeze_layers")}
    settings |= {k: resolved["train"][k] for k in ("epochs", "batch_size", "learning_rate", "loss_on", "mixed_precision")}
    return {"size": size, "settings": settings, "train_seconds": round(time.time() - start, 1), "dev_macro_f1": task["macro_f1"],
            "dev_accuracy": task["accuracy"], "per_class_f1": {k: v["f1"] for k, v in task["per_class"].items()},
            "ece": task["ece"], "ece_uncalibrated": task["ece_uncalibrated"], "overrides": overrides}


def run_baseline(size: int | None, extra: list[str]) -> dict:
    cfg = load_config("configs/ant.yaml", ([f"data.sample_train={size}"] if size else []) + extra)
    pre = build_preprocessing(cfg.model)
    train = load_train_split(cfg.data, cfg.tasks, pre)
    dev = load_labelled(cfg.data.dev_file, cfg.data, cfg.tasks, pre)
    start = time.time()
    results = Baseline(cfg.tasks).fit(train).evaluate(dev)
    task = results["topic"]
    return {"size": len(train), "train_seconds": round(time.time() - start, 1), "dev_macro_f1": mean_macro_f1(results),
            "dev_accuracy": task["accuracy"], "per_class_f1": {k: v["f1"] for k, v in task["per_class"].items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ant_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 3000])
    parser.add_argument("--baseline-sizes", nargs="*", default=None, help="sizes for the baseline; 'all' = full train")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for the model runs")
    args = parser.parse_args(argv)
    if "ANT_DIR" not in os.environ:
        print("set ANT_DIR to the folder holding train.jsonl.gz and dev.jsonl.gz", file=sys.stderr)
        return 2
    results = json.loads(OUT.read_text()) if OUT.exists() else {"model": {}, "baseline": {}}
    for size in args.sizes:
        results["model"][str(size)] = run_model(size, args.epochs, args.overrides)
        print(json.dumps(results["model"][str(size)]))
        _save(results)
    for size in args.baseline_sizes if args.baseline_sizes is not None else [str(s) for s in args.sizes]:
        row = run_baseline(None if size == "all" else int(size), [])
        results["baseline"][str(row["size"])] = row
        print(json.dumps(row))
        _save(results)
    print(f"learning curve: {plot(results)}")
    return 0


def plot(results: dict) -> Path:
    """``docs/img/ant_curve.png`` from the results file (only scores, no ANT text)."""
    from training.plots import learning_curve_png

    curves = {"E5-small fine-tuned": {int(k): v["dev_macro_f1"] for k, v in results["model"].items()},
              "TF-IDF + LR": {int(k): v["dev_macro_f1"] for k, v in results["baseline"].items()}}
    return learning_curve_png(PLOT, curves, goal=0.88, title="ANT dev macro-F1 (6 topics)")


def _save(results: dict) -> None:
    save_json(OUT, results)


if __name__ == "__main__":
    sys.exit(main())
