"""`make demo`: the whole product on the project's own data, offline.

    python -m training.demo         # what `make demo` runs (inside the venv); also `nabaa-demo`

1. builds (or finds) the embedded backbone,
2. trains ``configs/demo.yaml`` on ``seeds/`` (resuming an interrupted run; skipped when done),
   which also calibrates, and evaluates dev and test beside the TF-IDF baseline,
3. scores ``seeds/dump.jsonl.gz`` (resuming; skipped when done),
4. analyses the scores per outlet and month (``inference.analyze``: shares with intervals,
   change points, figures, ``report.html``),
5. prints where everything is and the prediction for one sample article.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from training.config import load_config

CONFIG = "configs/demo.yaml"
DUMP = "seeds/dump.jsonl.gz"


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def train_if_needed(cfg) -> None:
    from training.checkpoints import latest_checkpoint
    from training.train import main as train_main

    run_dir = cfg.run_dir
    if (run_dir / "best" / "README.md").exists() and (run_dir / "report" / "test" / "metrics.json").exists():
        print(f"already trained: {run_dir / 'best'} (delete {run_dir} to retrain)")
        return
    resume = latest_checkpoint(run_dir) is not None or (run_dir / "metrics.jsonl").exists()
    start = time.time()
    code = train_main(["--config", CONFIG] + (["--resume"] if resume else []))
    if code != 0:
        sys.exit(code)
    print(f"training + evaluation took {(time.time() - start) / 60:.1f} min")


def score_if_needed(model: Path, output: Path) -> None:
    from inference.score import EXIT_USAGE, parse_args, run_scoring

    if output.exists() and not any(output.parent.glob(f"{output.name}.part-*.journal")):
        print(f"already scored: {output}")
        return
    journals = any(output.parent.glob(f"{output.name}.part-*.journal"))
    # Outlet, date and URL travel with the scores, so they can be read by outlet and week.
    args = parse_args(["--model", str(model), "--input", DUMP, "--output", str(output),
                       "--keep", "source,date,url", "--probs"]
                      + (["--resume"] if journals else []))
    _, code = run_scoring(args)
    if code == EXIT_USAGE:
        sys.exit(code)


def analyze_scores(scores: Path, out: Path) -> Path:
    """Shares per outlet and month with intervals, change points, figures and a report."""
    from inference.analyze import analyze

    result = analyze(scores, out, by="source", every="month")
    return result.report_html


def show_sample(model: Path) -> None:
    from inference import Classifier

    clf = Classifier.from_pretrained(model, device="cpu")
    sample = json.loads(Path("seeds/test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    [pred] = clf.predict([sample])
    print(f"article {sample['id']}: {sample['title']}")
    for task, p in pred.items():
        print(f"  {task:14s} {p['label']:9s} score {p['score']:.2f}   (gold: {sample.get(task)})")


def main() -> int:
    from model.embedded import resolve_backbone

    cfg = load_config(CONFIG)
    step("1/5 embedded backbone")
    print(resolve_backbone(cfg.model.backbone))
    step("2/5 train on seeds/ (then calibrate and evaluate)")
    train_if_needed(cfg)
    best, report = cfg.run_dir / "best", cfg.run_dir / "report"
    step(f"3/5 score {DUMP}")
    scores = cfg.run_dir / "dump_scores.jsonl"
    score_if_needed(best, scores)
    step("4/5 analytics: stance and topic shares per outlet and month")
    analysis = analyze_scores(scores, cfg.run_dir / "analysis")
    step("5/5 one prediction")
    show_sample(best)
    test = json.loads((report / "test" / "metrics.json").read_text(encoding="utf-8"))
    base = test.get("baseline", {})
    ci = base.get("model_minus_baseline", {}).get("mean")
    print("\nseeds test, mean macro-F1: model "
          f"{test['mean_macro_f1']:.3f}, TF-IDF baseline {base.get('mean_macro_f1', float('nan')):.3f}"
          + (f" (difference {ci['diff']:+.3f}, paired bootstrap 95 % CI [{ci['low']:+.3f}, {ci['high']:+.3f}])"
             if ci else ""))
    print(f"\nmodel:   {best}  (load with inference.Classifier.from_pretrained)")
    print(f"reports: {report / 'test' / 'report.md'}, {report / 'dev' / 'report.md'} (+ PNG figures)")
    print(f"scores:  {scores} (+ .errors.jsonl, .summary.json)")
    print(f"analysis: {analysis} (+ report.md, CSV tables, PNG figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
