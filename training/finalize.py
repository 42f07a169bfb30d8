"""After training: calibrate on dev, evaluate dev and test, write the model card.

Called by ``training.train`` on the main process once the loop ends; safe to
re-run (``python -m training.finalize --config ...``) on a finished run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.classifier import Classifier, _softmax
from model.lexical import fuse
from model.modeling import IGNORE_INDEX
from model.serialization import CALIBRATION_FILE
from training.calibration import fit_temperature
from training.config import RunConfig
from training.data import load_labelled
from training.evaluate import evaluate_folder, fit_baseline
from training.metrics import expected_calibration_error, task_metrics


def score_file(clf: Classifier, path: str, cfg: RunConfig) -> tuple[list, dict[str, np.ndarray]]:
    """Validated articles of a labelled file and their raw (uncalibrated) article logits."""
    articles = load_labelled(path, cfg.data, clf.tasks, clf.pre)
    return articles, clf.logits_prepared([a.prepared for a in articles])


def calibrate(clf: Classifier, dev: list, raw: dict[str, np.ndarray], dev_file: str,
              lexical: dict[str, np.ndarray] | None = None,
              max_lexical_weight: dict[str, float] | None = None) -> dict[str, Any]:
    """Per task: the lexical weight (when ``lexical`` dev log-probabilities are given) chosen on dev
    macro-F1, up to the task's ceiling in ``max_lexical_weight``, then one temperature fitted on dev
    article logits (fused with that weight); return ``calibration.json`` content."""
    out = {}
    ceilings = max_lexical_weight or {}
    for column, task in enumerate(clf.tasks):
        keep = np.array([a.labels[column] != IGNORE_INDEX for a in dev], dtype=bool)
        gold = np.array([a.labels[column] for a in dev])[keep]
        weight = choose_lexical_weight(raw[task.name][keep], lexical[task.name][keep], gold, task.labels,
                                       max_weight=ceilings.get(task.name, 1.0)) \
            if lexical is not None and len(gold) else 0.0
        logits = fuse(raw[task.name], lexical[task.name] if lexical is not None else None, weight)[keep]
        t = fit_temperature(logits, gold)
        out[task.name] = {
            "temperature": round(t, 5),
            "lexical_weight": weight,
            "dev_ece_before": round(expected_calibration_error(gold, _softmax(logits)), 5) if len(gold) else None,
            "dev_ece_after": round(expected_calibration_error(gold, _softmax(logits / t)), 5) if len(gold) else None,
            "fitted_on": dev_file,
            "n": int(keep.sum()),
        }
    return out


LEXICAL_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(10))  # 0 … 0.9: the transformer always has a say


def choose_lexical_weight(logits: np.ndarray, lexical: np.ndarray, gold: np.ndarray, labels: Sequence[str],
                          max_weight: float = 1.0) -> float:
    """The weight of the lexical model, at most ``max_weight``, that gives the best dev macro-F1 (the
    smallest such weight on ties, so the lexical part is used only where it helps).

    >>> gold = np.array([0, 1]); lexical = np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))
    >>> choose_lexical_weight(np.array([[0.0, 2.0], [0.0, 2.0]]), lexical, gold, ["a", "b"], max_weight=0.5)
    0.5
    """
    candidates = [w for w in LEXICAL_WEIGHTS if w <= max_weight + 1e-9]
    scores = [task_metrics(gold.tolist(), fuse(logits, lexical, w).argmax(axis=1).tolist(), labels)["macro_f1"]
              for w in candidates]
    return candidates[int(np.argmax(scores))]


def finalize_run(cfg: RunConfig, best_epoch: int | None = None) -> dict[str, Any]:
    """Calibrate ``best/`` (and fuse the lexical model), write reports under ``report/`` and the
    model card; return metrics."""
    run_dir = cfg.run_dir
    best = run_dir / "best"
    if not (best / "config.json").exists():
        print(f"no {best} to finalize (training produced no checkpoint)")
        return {}
    clf = Classifier.from_pretrained(best, device="auto", keep_freed_memory=True)
    dev_scored = score_file(clf, cfg.data.dev_file, cfg)  # scored once: calibration and the dev report
    wants_baseline = cfg.train.baseline or cfg.train.fuse_lexical
    baseline = fit_baseline(clf, cfg.data.train_file, cfg.data) if wants_baseline else None
    lexical = baseline.to_lexical() if baseline is not None and cfg.train.fuse_lexical else None
    if lexical is not None:
        lexical.save(best)
        clf.lexical = lexical
    if cfg.train.calibrate:
        dev_lexical = lexical.log_proba([a.prepared for a in dev_scored[0]]) if lexical is not None else None
        clf.calibration = calibrate(clf, *dev_scored, cfg.data.dev_file, dev_lexical,
                                    cfg.train.max_lexical_weight)
        _write_atomic(best / CALIBRATION_FILE, json.dumps(clf.calibration, indent=2) + "\n")
    results: dict[str, Any] = {}
    if cfg.train.final_report:
        for split, path in (("dev", cfg.data.dev_file), ("test", cfg.data.test_file)):
            if path:
                results[split] = evaluate_folder(best, path, run_dir / "report" / split, data=cfg.data, clf=clf,
                                                 split_name=split, by=cfg.train.report_by,
                                                 baseline_model=baseline,
                                                 scored=dev_scored if split == "dev" else None)
                print(f"{split}: mean macro-F1 {results[split]['mean_macro_f1']:.4f}"
                      + (_versus_baseline(results[split]['baseline']) if "baseline" in results[split] else "")
                      + f"; report {run_dir / 'report' / split / 'report.md'}")
    _write_atomic(best / "README.md", model_card(cfg, clf, results, best_epoch))
    return results


def _lexical_line(cfg: RunConfig, clf: Classifier) -> str:
    weights = {t.name: clf.lexical_weight(t.name) for t in clf.tasks}
    if clf.lexical is None or not any(weights.values()):
        return "- no lexical (TF-IDF) model mixed into the scores"
    mix = ", ".join(f"{name} {w:.1f}" for name, w in weights.items())
    ceilings = cfg.train.max_lexical_weight
    cap = f" (at most {', '.join(f'{n} {c:.1f}' for n, c in ceilings.items())})" if ceilings else ""
    return (f"- a TF-IDF + logistic-regression model (`lexical.*`) is mixed into the scores, weight per task "
            f"chosen on dev{cap}: {mix}")


def _versus_baseline(baseline: dict[str, Any]) -> str:
    d = baseline["model_minus_baseline"]["mean"]
    return (f" (TF-IDF baseline {baseline['mean_macro_f1']:.4f}; difference {d['diff']:+.4f}, "
            f"95 % CI [{d['low']:+.4f}, {d['high']:+.4f}])")


def model_card(cfg: RunConfig, clf: Classifier, results: dict[str, Any], best_epoch: int | None) -> str:
    """A README.md for the model folder: schema, data, metrics, intended use, limits."""
    lines = [
        f"# nabaa model — {cfg.name}", "",
        "A multi-task classifier of Arabic news articles fine-tuned with "
        "nabaa: one encoder, one head per task.", "",
        "```python", "from inference import Classifier",
        'clf = Classifier.from_pretrained("path/to/this/folder")',
        'clf.predict(["نص المقال ..."])', "```", "",
        "## Schema", "", "| task | labels |", "|---|---|",
        *[f"| {t.name} | {', '.join(t.labels)} |" for t in clf.tasks], "",
        "## Training", "",
        f"- backbone: `{cfg.model.backbone}`, pooling {cfg.model.pooling}, "
        f"windows of {cfg.model.max_length} tokens (stride {cfg.model.stride}), aggregation {cfg.model.aggregation}",
        f"- preprocessing: normaliser `{clf.pre.normalizer}`, prefix `{clf.pre.text_prefix!r}` (applied automatically at load)",
        f"- data: train `{cfg.data.train_file}`, dev `{cfg.data.dev_file}`"
        + (f", test `{cfg.data.test_file}`" if cfg.data.test_file else ""),
        f"- {cfg.train.epochs} epoch(s) max, lr {cfg.train.learning_rate}, batch {cfg.train.batch_size}, "
        f"seed {cfg.train.seed}; best epoch {best_epoch}",
        _lexical_line(cfg, clf),
        "- scores are calibrated by per-task temperature scaling fitted on dev (`calibration.json`)"
        if clf.calibration else "- scores are not calibrated", "",
        "## Metrics", "",
    ]
    if results:
        lines += ["| split | task | accuracy | macro-F1 | ECE | baseline macro-F1 |", "|---|---|---|---|---|---|"]
        for split, report in results.items():
            for task, m in report["tasks"].items():
                base = report.get("baseline", {}).get("tasks", {}).get(task, {}).get("macro_f1")
                lines.append(f"| {split} | {task} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['ece']:.3f} | "
                             + (f"{base:.3f} |" if base is not None else "— |"))
    else:
        lines.append("No evaluation was run.")
    lines += [
        "", "## Intended use", "",
        "Triage and measurement of large Arabic news collections by media analysts and researchers: "
        "which topics an outlet covers and how its own voice frames the named political actors. "
        "Use aggregate figures, and read articles before drawing conclusions about any single one.", "",
        "## Limits", "",
        "- Stance is judged on the article's own framing, a subtle and contested judgement; "
        "errors concentrate on neutral reports that quote one side's harsh words.",
        "- Trained on the labelled data above only: other countries, periods, dialects or outlets "
        "may differ; re-evaluate on a labelled sample of your own data first.",
        "- Not for decisions about individuals, and not a fact-checking tool.",
        "- Long articles are read in at most "
        f"{clf.pre.predict_max_windows} windows of {clf.pre.max_length} tokens.", "",
    ]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from training.config import load_config

    parser = argparse.ArgumentParser(prog="python -m training.finalize",
                                     description="Calibrate and report on a finished run.")
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    finalize_run(load_config(args.config, args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
