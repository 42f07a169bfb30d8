"""Speed against quality for smaller scorers: a teacher, its distilled students, fewer windows.

    python -m bench.distill --teacher runs/demo/best --student runs/demo-student6/best
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python -m bench.distill --teacher runs/demo/best --student runs/demo-student6/best --articles 300

Each model folder is scored as shipped (its ``predict_max_windows``) and with one window per
article, all in one process, interleaved rounds over the same dump articles (``--dtype``,
default fp32: the precision an AVX2 CPU runs). Quality is what users get: calibrated scores with
the folder's TF-IDF mix, mean macro-F1 on seeds dev and test, the paired bootstrap 95 % CI of
each variant's difference from the teacher as shipped, and label agreement with it on the dump.
Writes ``bench/out/distill.json`` and ``docs/img/distill_tradeoff.png``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, ROOT, interleaved, machine_info, ratio, read_records, save_json
from bench.scoring import classifier_contender, load_classifier, workload

SPLITS = ("dev", "test")


def split_predictions(clf: Any, path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Gold label ids and the classifier's predicted ids per task on a labelled file
    (calibrated, fused with the folder's TF-IDF model where it has one)."""
    from model.modeling import IGNORE_INDEX

    records = read_records(path)
    probs = clf.predict_proba(records)
    gold, pred = {}, {}
    for task in clf.tasks:
        ids = {label: i for i, label in enumerate(task.labels)}
        gold[task.name] = np.array([ids.get(r.get(task.name), IGNORE_INDEX) for r in records])
        pred[task.name] = probs[task.name].argmax(axis=1)
    return gold, pred


def quality(classifiers: dict[str, Any], reference: str) -> dict[str, Any]:
    """Mean macro-F1 per split per variant, and its paired bootstrap difference from ``reference``."""
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    out: dict[str, Any] = {name: {} for name in classifiers}
    for split in SPLITS:
        path = ROOT / "seeds" / f"{split}.jsonl"
        results = {name: split_predictions(clf, path) for name, clf in classifiers.items()}
        gold, ref_pred = results[reference]
        n_labels = {t.name: len(t.labels) for t in classifiers[reference].tasks}
        for name, (_, pred) in results.items():
            per_task = {t: macro_f1_from_ids(gold[t][gold[t] >= 0], pred[t][gold[t] >= 0], n_labels[t]) for t in gold}
            row = {"mean_macro_f1": round(float(np.mean(list(per_task.values()))), 4),
                   "macro_f1": {t: round(float(v), 4) for t, v in per_task.items()}}
            if name != reference:
                diff = paired_bootstrap(gold, pred, ref_pred, n_labels)["mean"]
                row["minus_reference"] = {k: round(float(diff[k]), 4) for k in ("diff", "low", "high")}
            out[name][split] = row
    return out


def agreement(classifiers: dict[str, Any], records: list[dict[str, Any]], reference: str) -> dict[str, float]:
    """Share of (article, task) labels equal to the reference's on unlabelled dump articles."""
    labels = {name: {t: p.argmax(axis=1) for t, p in clf.predict_proba(records).items()}
              for name, clf in classifiers.items()}
    ref = labels[reference]
    return {name: round(float(np.mean([np.mean(v[t] == ref[t]) for t in ref])), 4) for name, v in labels.items()}


def variants(teacher: Path, students: Sequence[Path], dtype: str) -> dict[str, Any]:
    """Every folder as shipped and with one window per article."""
    out = {}
    for tag, folder in [("teacher", teacher)] + [(f"student{_layers(s)}", s) for s in students]:
        clf = load_classifier(folder, dtype=dtype)
        out[f"{tag}_{clf.pre.predict_max_windows}w"] = clf
        if clf.pre.predict_max_windows > 1:
            out[f"{tag}_1w"] = load_classifier(folder, windows=1, dtype=dtype)
    return out


def _layers(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["encoder_config"]["num_hidden_layers"]


def plot(rows: dict[str, Any], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, row in rows.items():
        ax.scatter(row["articles_per_s"], row["test"]["mean_macro_f1"], s=40)
        ax.annotate(name, (row["articles_per_s"], row["test"]["mean_macro_f1"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel("articles / s (this run's CPU and precision)")
    ax.set_ylabel("seeds test mean macro-F1")
    ax.set_title("Scoring speed against quality")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=120)
    plt.close(fig)


def run(teacher: Path, students: Sequence[Path], dump: Path, n: int, rounds: int, dtype: str) -> dict[str, Any]:
    classifiers = variants(teacher, students, dtype)
    reference = next(iter(classifiers))
    work, warm = workload(dump, n, "distill"), workload(dump, 4, "distill-warm")
    timings = interleaved({name: classifier_contender(c) for name, c in classifiers.items()}, work, rounds, warm=warm)
    rows: dict[str, Any] = {name: {"seconds": [round(s, 3) for s in t.seconds],
                                   "articles_per_s": round(n / t.median, 2)} for name, t in timings.items()}
    for name in rows:
        rows[name]["x_vs_teacher"] = ratio(rows[name]["articles_per_s"], rows[reference]["articles_per_s"])
    for name, q in quality(classifiers, reference).items():
        rows[name].update(q)
    for name, value in agreement(classifiers, work.records, reference).items():
        rows[name]["dump_label_agreement"] = value
    return {"machine": machine_info(), "dtype": dtype, "articles": n, "rounds": rounds, "reference": reference,
            "teacher": str(teacher), "students": [str(s) for s in students], "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, nargs="*", default=[])
    parser.add_argument("--dump", type=Path, default=ROOT / "seeds" / "dump.jsonl.gz")
    parser.add_argument("--articles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--out", type=Path, default=OUT / "distill.json")
    args = parser.parse_args(argv)
    result = run(args.teacher, args.student, args.dump, args.articles, args.rounds, args.dtype)
    save_json(args.out, result)
    plot(result["rows"], ROOT / "docs" / "img" / "distill_tradeoff.png")
    for name, row in result["rows"].items():
        print(f"{name:16s} {row['articles_per_s']:6.2f} art/s ({row['x_vs_teacher']:.2f}x)  "
              f"dev {row['dev']['mean_macro_f1']:.3f}  test {row['test']['mean_macro_f1']:.3f}  "
              f"agreement {row['dump_label_agreement']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
