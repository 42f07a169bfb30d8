"""Evaluate a trained model folder on a labelled file and write a readable report.

    python -m training.evaluate --model runs/demo/best --data seeds/test.jsonl --out runs/demo/report/test
    python -m training.evaluate ... --by outlet_style --by hard_kind    # accuracy per value of a field

Writes ``metrics.json``, ``report.md`` and PNG figures (confusion matrices,
reliability diagrams before/after calibration, per-class F1 beside the TF-IDF
baseline, training curves when the run's ``metrics.jsonl`` is next to the model).
Predictions come from :class:`inference.Classifier`, so evaluation sees exactly
what users will get.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from inference.classifier import Classifier, _softmax
from model.hardware import keep_freed_memory
from model.modeling import IGNORE_INDEX
from model.preprocess import FIELD_KEYS, Preprocessing
from model.records import iter_records
from model.serialization import RUN_CONFIG_FILE
from training import plots
from training.baseline import Baseline
from training.config import DataArgs
from training.data import Article, DataError, load_labelled, load_train_split
from training.metrics import (
    accuracy_by_slice,
    expected_calibration_error,
    mean_macro_f1,
    paired_bootstrap,
    task_metrics,
)

TOP_MISTAKES = 8


def data_args_of(model_dir: Path) -> DataArgs:
    """The data settings the model was trained with (its saved run config), with the field
    names of its ``preprocess.json``, which every reader of the folder uses."""
    path = model_dir / RUN_CONFIG_FILE
    saved = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data", {}) if path.exists() else {}
    known = DataArgs.__dataclass_fields__
    data = DataArgs(**{k: v for k, v in saved.items() if k in known})
    pre = Preprocessing.load(model_dir)
    return replace(data, **{k: getattr(pre, k) for k in FIELD_KEYS})


def evaluate_folder(
    model_dir: str | Path,
    data_file: str,
    out_dir: str | Path,
    baseline_train: str | None = None,
    data: DataArgs | None = None,
    clf: Classifier | None = None,
    split_name: str | None = None,
    baseline_model: Baseline | None = None,
    scored: tuple[list[Article], dict[str, np.ndarray]] | None = None,
    by: Sequence[str] = (),
) -> dict[str, Any]:
    """Score ``data_file`` with the model (and the baseline, if a training file is known);
    write the report into ``out_dir`` and return the metrics. ``by`` names record fields (an
    outlet, a kind of article) whose every value gets its own accuracy row."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clf = clf or Classifier.from_pretrained(model_dir, device="auto")
    data = data or data_args_of(model_dir)
    if scored is None:  # (articles, raw logits) of data_file, when the caller already has them
        articles = load_labelled(data_file, data, clf.tasks, clf.pre)
        scored = articles, clf.logits_prepared([a.prepared for a in articles])
    articles, raw = scored
    fused = clf.fused_logits(raw, [a.prepared for a in articles])  # what users get: lexical mix included
    baseline_train = baseline_train if baseline_train is not None else data.train_file or None
    if baseline_model is None:
        baseline_model = fit_baseline(clf, baseline_train, data)
    # TF-IDF probabilities once: its metrics, the paired interval and the slices all read them
    base_probs = baseline_model.predict_proba(articles) if baseline_model else None
    baseline = baseline_model.evaluate(articles, base_probs) if baseline_model else None

    report: dict[str, Any] = {"model": str(model_dir), "data": data_file, "n_articles": len(articles), "tasks": {}}
    figures: dict[str, list[str]] = {}
    for column, task in enumerate(clf.tasks):
        keep = np.array([a.labels[column] != IGNORE_INDEX for a in articles], dtype=bool)
        gold = np.array([a.labels[column] for a in articles])[keep]
        uncal = _softmax(fused[task.name])[keep]
        cal = _softmax(fused[task.name] / clf.temperature(task.name))[keep]
        metrics = task_metrics(gold.tolist(), cal.argmax(axis=1).tolist(), task.labels, cal)
        metrics["ece_uncalibrated"] = expected_calibration_error(gold, uncal) if len(gold) else float("nan")
        metrics["temperature"] = clf.temperature(task.name)
        metrics["mistakes"] = _top_mistakes([a for a, k in zip(articles, keep) if k], gold, cal, task.labels)
        report["tasks"][task.name] = metrics
        figures[task.name] = _task_figures(out_dir, task.name, task.labels, metrics, gold, uncal, cal,
                                           baseline.get(task.name) if baseline else None)
    report["mean_macro_f1"] = mean_macro_f1(report["tasks"])
    if baseline:
        report["baseline"] = {"train_file": baseline_train, "mean_macro_f1": mean_macro_f1(baseline),
                              "tasks": {t: _brief(m) for t, m in baseline.items()},
                              "model_minus_baseline": _paired_interval(clf, articles, fused, base_probs)}
    if by:
        report["slices"] = _slices(data_file, articles, by, clf, raw, fused, base_probs)
    curves = plots.curves_png(out_dir / "training_curves.png", model_dir.parent / "metrics.jsonl")
    _write_json(out_dir / "metrics.json", report)
    (out_dir / "report.md").write_text(
        render_report(report, figures, curves.name if curves else None, split_name), encoding="utf-8"
    )
    return report


def _paired_interval(clf: Classifier, articles: Sequence[Article], logits: dict[str, np.ndarray],
                     base_probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Paired bootstrap 95 % interval of model − baseline macro-F1 (per task and mean) on these
    articles: with a few hundred articles one article moves a score by a third of a point, so a
    difference means something only when its interval excludes 0."""
    gold = {t.name: np.array([a.labels[c] for a in articles]) for c, t in enumerate(clf.tasks)}
    model_pred = {t.name: logits[t.name].argmax(axis=1) for t in clf.tasks}  # temperature keeps the argmax
    base_pred = {t.name: base_probs[t.name].argmax(axis=1) for t in clf.tasks}
    return paired_bootstrap(gold, model_pred, base_pred, {t.name: len(t.labels) for t in clf.tasks},
                            ignore=IGNORE_INDEX)


def _slices(data_file: str, articles: Sequence[Article], fields: Sequence[str], clf: Classifier,
            raw: dict[str, np.ndarray], fused: dict[str, np.ndarray], base_probs: dict[str, np.ndarray] | None) -> dict:
    """Accuracy per value of each field: the model as shipped, the transformer alone, TF-IDF."""
    wanted = {a.line for a in articles}
    values: dict[str, dict[int, str]] = {f: {} for f in fields}
    for rec in iter_records(data_file):
        if rec.line in wanted and not rec.error:
            for f in fields:
                value = rec.data.get(f)
                values[f][rec.line] = "(none)" if value in (None, "") else str(value)
    gold = {t.name: np.array([a.labels[c] for a in articles]) for c, t in enumerate(clf.tasks)}
    systems = {"model": {t: v.argmax(axis=1) for t, v in fused.items()},
               "transformer alone": {t: v.argmax(axis=1) for t, v in raw.items()}}
    if base_probs is not None:
        systems["TF-IDF"] = {t: v.argmax(axis=1) for t, v in base_probs.items()}
    return {f: accuracy_by_slice([values[f][a.line] for a in articles], gold, systems) for f in fields}


def fit_baseline(clf: Classifier, train_file: str | None, data: DataArgs) -> Baseline | None:
    """The TF-IDF baseline trained on ``train_file`` (None when there is no such file)."""
    if not train_file or not Path(train_file).exists():
        return None
    split = replace(data, train_file=train_file)
    train = load_train_split(split, clf.tasks, clf.pre)
    return Baseline(clf.tasks).fit(train)


def _task_figures(out_dir, name, labels, metrics, gold, uncal, cal, baseline) -> list[str]:
    files = [plots.confusion_png(out_dir / f"confusion_{name}.png", metrics["confusion"], labels, f"{name}: confusion")]
    if len(gold):
        files.append(plots.reliability_png(
            out_dir / f"reliability_{name}.png", gold,
            {f"raw (ECE {metrics['ece_uncalibrated']:.3f})": uncal, f"calibrated (ECE {metrics['ece']:.3f})": cal},
            f"{name}: reliability",
        ))
    systems = {"model": metrics, **({"TF-IDF baseline": baseline} if baseline else {})}
    files.append(plots.f1_bars_png(out_dir / f"f1_{name}.png", systems, labels, f"{name}: per-class F1"))
    return [f.name for f in files]


def _top_mistakes(articles: Sequence[Article], gold: np.ndarray, probs: np.ndarray, labels) -> list[dict]:
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != gold)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:TOP_MISTAKES]
    return [{"id": articles[i].id, "title": articles[i].title[:90], "gold": labels[gold[i]],
             "pred": labels[pred[i]], "score": round(float(probs[i, pred[i]]), 3)} for i in wrong]


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m.get("ece"),
            "per_class_f1": {k: v["f1"] for k, v in m["per_class"].items()}}


def render_report(report: dict[str, Any], figures: dict[str, list[str]], curves: str | None,
                  split_name: str | None = None) -> str:
    """Markdown: summary table (model vs baseline), then per task metrics, figures and mistakes."""
    base = report.get("baseline")
    lines = [f"# Evaluation report{f' — {split_name}' if split_name else ''}", "",
             f"- model: `{report['model']}`", f"- data: `{report['data']}` ({report['n_articles']} articles)"]
    if base:
        lines.append(f"- baseline: TF-IDF (word 1-2 + char 2-5 grams) + logistic regression, trained on `{base['train_file']}`")
    lines += ["", "| task | accuracy | macro-F1 | ECE raw → calibrated | T |"
              + (" baseline acc | baseline macro-F1 |" if base else ""),
              "|---|---|---|---|---|" + ("---|---|" if base else "")]
    for name, m in report["tasks"].items():
        row = (f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
               f"{m['ece_uncalibrated']:.3f} → {m['ece']:.3f} | {m['temperature']:.2f} |")
        if base:
            b = base["tasks"][name]
            row += f" {b['accuracy']:.3f} | {b['macro_f1']:.3f} |"
        lines.append(row)
    mean = f"**mean macro-F1: model {report['mean_macro_f1']:.3f}"
    lines += ["", mean + (f", baseline {base['mean_macro_f1']:.3f}**" if base else "**"), ""]
    if base and "model_minus_baseline" in base:
        lines += ["Model − baseline macro-F1, paired bootstrap over articles "
                  f"({base['model_minus_baseline']['mean']['n_resamples']} resamples):", "",
                  "| task | difference | 95 % interval | resamples where the model is better |", "|---|---|---|---|"]
        for key, d in base["model_minus_baseline"].items():
            lines.append(f"| {'**mean**' if key == 'mean' else key} | {d['diff']:+.3f} | "
                         f"[{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_better']:.0%} |")
        lines.append("")
    for field, table in report.get("slices", {}).items():
        lines += _slice_lines(field, table)
    if curves:
        lines += ["## Training curves", "", f"![training curves]({curves})", ""]
    for name, m in report["tasks"].items():
        lines += [f"## {name}", "", "| label | precision | recall | F1 | support |"
                  + (" baseline F1 |" if base else ""), "|---|---|---|---|---|" + ("---|" if base else "")]
        for label, c in m["per_class"].items():
            row = f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
            if base:
                row += f" {base['tasks'][name]['per_class_f1'][label]:.3f} |"
            lines.append(row)
        lines.append("")
        lines += [f"![{f}]({f})" for f in figures.get(name, [])]
        lines += ["", "Most confident mistakes:", "", "| id | title | gold | predicted | score |", "|---|---|---|---|---|"]
        lines += [f"| {x['id']} | {x['title'].replace('|', '/')} | {x['gold']} | {x['pred']} | {x['score']:.3f} |"
                  for x in m["mistakes"]] or ["| — | none | | | |"]
        lines.append("")
    return "\n".join(lines)


def _slice_lines(field: str, table: dict[str, dict[str, Any]]) -> list[str]:
    systems = list(next(iter(table.values()))["accuracy"]) if table else []
    first, last = (systems[0], systems[-1]) if systems else ("", "")
    lines = [f"## By `{field}`", "", "Accuracy, mean over tasks; the interval is a paired bootstrap over the "
             "slice's articles (a few dozen articles give wide intervals).", "",
             "| value | articles | " + " | ".join(systems) + f" | {first} − {last} [95 % CI] |",
             "|---|---|" + "---|" * (len(systems) + 1)]
    for value, row in table.items():
        accuracies = " | ".join(f"{row['accuracy'][s]:.3f}" for s in systems)
        lines.append(f"| {value.replace('|', '/')} | {row['n']} | {accuracies} | "
                     f"{row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] |")
    return [*lines, ""]


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description="Evaluate a model folder.")
    parser.add_argument("--model", required=True, help="a model folder (e.g. runs/demo/best)")
    parser.add_argument("--data", required=True, help="labelled JSONL/CSV/Parquet file (optionally .gz)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--baseline-train", default=None,
                        help="training file for the TF-IDF baseline (default: the model's own train file; '' = none)")
    parser.add_argument("--by", action="append", default=[], metavar="FIELD",
                        help="a record field (e.g. outlet_style): accuracy per value of it; repeat for more")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        keep_freed_memory()  # a command line owns its process: large activations reuse heap pages
    try:
        report = evaluate_folder(args.model, args.data, args.out, baseline_train=args.baseline_train,
                                 by=[f for item in args.by for f in item.split(",") if f])
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"mean macro-F1 {report['mean_macro_f1']:.4f}"
          + (f" (baseline {report['baseline']['mean_macro_f1']:.4f})" if "baseline" in report else ""))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
