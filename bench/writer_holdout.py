"""Unseen writers: each seeds writer held out of training in turn, and judged on all its articles.

    python -m bench.writer_holdout --config configs/demo.yaml                  # writers p7 … p11
    python -m bench.writer_holdout --config configs/demo.yaml --writers p9,p11

The seeds splits put every writer in train, dev and test, so test scores measure new articles of
known writers (seeds/README.md, "Writers are not a stratum"). Real news is written by people the
model never read, and the hidden real articles showed what that costs (issue 14: TF-IDF's stance
fell from ~0.95 on seeds to 0.60–0.66 on real articles). This bench is the closest measure the
corpus allows: per writer W (``p<n>`` in the article ids), the config's recipe is trained on the
seeds train split without W (dev without W for early stopping, calibration and the TF-IDF mix
weights, exactly as the recipe ships), then every article of W (all three splits) is scored by:

- ``tfidf``: the run's TF-IDF + logistic regression model (the baseline of every report);
- ``alone``: the transformer's logits;
- ``shipped``: the transformer mixed with TF-IDF by the weights chosen on (seen-writer) dev;
- ``mix_<w>``: the mix at a fixed TF-IDF weight w, the same for every task.

Writes ``bench/out/writer_holdout.json`` (per writer and pooled over the held-out writers: macro-F1
per task and system, paired bootstrap 95 % CIs of the differences; the seen-writer dev sets too,
for contrast) and prints a table. The runs stay
under ``runs/writer-holdout/<W>`` and are reused unless ``--retrain``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import OUT, ROOT, machine_info, read_records, save_json

DEFAULT_WRITERS = ("p7", "p8", "p9", "p10", "p11")
FIXED_MIXES = (0.3, 0.5)
COMPARISONS = (("alone", "tfidf"), ("shipped", "tfidf"), ("shipped", "alone"))


def writer_of(record: dict[str, Any]) -> str:
    """``p7`` for the article ``p7-123``."""
    return str(record["id"]).split("-", 1)[0]


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def fold_config(config: Path, work: Path, writer: str) -> Path:
    """The config's recipe with ``writer`` removed from train and dev; its articles become the test."""
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    splits = {s: read_records(ROOT / raw["data"][f"{s}_file"]) for s in ("train", "dev", "test")}
    held = [r for s in ("train", "dev", "test") for r in splits[s] if writer_of(r) == writer]
    if not held:
        raise SystemExit(f"no article of writer {writer!r} in {config}'s splits")
    work.mkdir(parents=True, exist_ok=True)
    files = {"train": work / "train.jsonl", "dev": work / "dev.jsonl", "test": work / "test.jsonl"}
    write_jsonl(files["train"], [r for r in splits["train"] if writer_of(r) != writer])
    write_jsonl(files["dev"], [r for r in splits["dev"] if writer_of(r) != writer])
    write_jsonl(files["test"], held)
    raw["name"] = f"{raw['name']}-without-{writer}"
    # The run's own test report is skipped (this bench scores the held-out writer itself).
    raw["data"].update({"train_file": str(files["train"]), "dev_file": str(files["dev"]), "test_file": None})
    raw["train"]["output_dir"] = str(work / "run")
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def score_systems(clf: Any, records: Sequence[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Predicted label ids per system and task (see the module docstring for the systems)."""
    from model.lexical import fuse

    prepared = [clf.prepare(r["text"], r.get("title")) for r in records]
    raw = clf.logits_prepared(prepared)
    lexical = clf.lexical.log_proba(prepared)
    shipped = clf.fused_logits(raw, prepared)
    systems = {"tfidf": lexical, "alone": raw, "shipped": shipped}
    systems.update({f"mix_{w}": {t: fuse(raw[t], lexical[t], w) for t in raw} for w in FIXED_MIXES})
    return {name: {t: v.argmax(axis=1) for t, v in logits.items()} for name, logits in systems.items()}


def judge(preds: dict[str, dict[str, np.ndarray]], gold: dict[str, np.ndarray],
          n_labels: dict[str, int], with_ci: bool = True) -> dict[str, Any]:
    """Macro-F1 per system and task (and their mean), and the paired bootstrap of COMPARISONS."""
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    f1 = {}
    for name, by_task in preds.items():
        row = {t: round(float(macro_f1_from_ids(gold[t], by_task[t], n_labels[t])), 4) for t in gold}
        row["mean"] = round(float(np.mean(list(row.values()))), 4)
        f1[name] = row
    diffs = {f"{a}-{b}": paired_bootstrap(gold, preds[a], preds[b], n_labels) for a, b in COMPARISONS} if with_ci else {}
    return {"n": len(next(iter(gold.values()))), "macro_f1": f1, "differences": diffs}


def run_writer(config: Path, work: Path, writer: str, retrain: bool) -> dict[str, Any]:
    """Train without ``writer`` (unless a finished run is there) and score its articles."""
    from inference import Classifier
    from training.train import main as train_main

    fold = fold_config(config, work, writer)
    model_dir = work / "run" / "best"
    if retrain or not (model_dir / "training_state.json").exists():
        if train_main(["--config", str(fold)]) != 0:
            raise SystemExit(f"training without {writer} failed")
    clf = Classifier.from_pretrained(model_dir)
    if clf.lexical is None:
        raise SystemExit(f"{model_dir} has no TF-IDF model: the recipe needs train.fuse_lexical: true")
    out: dict[str, Any] = {"weights_chosen_on_dev": {t: clf.lexical_weight(t) for t in clf.task_names}}
    ids = {t: {label: i for i, label in enumerate(clf.labels(t))} for t in clf.task_names}
    for split, path in (("seen_writers_dev", work / "dev.jsonl"), ("held_out", work / "test.jsonl")):
        records = read_records(path)
        gold = {t: np.array([ids[t][r[t]] for r in records]) for t in clf.task_names}
        out[split] = {"preds": score_systems(clf, records), "gold": gold}
    out["n_labels"] = {t: len(clf.labels(t)) for t in clf.task_names}
    return out


def pooled(folds: dict[str, dict[str, Any]], split: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The folds' predictions and gold of ``split`` concatenated (each writer's articles once)."""
    first = next(iter(folds.values()))[split]
    preds = {name: {t: np.concatenate([f[split]["preds"][name][t] for f in folds.values()]) for t in by_task}
             for name, by_task in first["preds"].items()}
    gold = {t: np.concatenate([f[split]["gold"][t] for f in folds.values()]) for t in first["gold"]}
    return preds, gold


def run(config: Path, writers: Sequence[str], work_root: Path, retrain: bool) -> dict[str, Any]:
    folds = {w: run_writer(config, work_root / w, w, retrain) for w in writers}
    n_labels = next(iter(folds.values()))["n_labels"]
    result: dict[str, Any] = {"machine": machine_info(), "config": str(config), "writers": list(writers),
                              "per_writer": {}, "pooled": {}}
    for w, fold in folds.items():
        result["per_writer"][w] = {"weights_chosen_on_dev": fold["weights_chosen_on_dev"],
                                   **{s: judge(fold[s]["preds"], fold[s]["gold"], n_labels)
                                      for s in ("seen_writers_dev", "held_out")}}
    for split in ("seen_writers_dev", "held_out"):
        preds, gold = pooled(folds, split)
        # Each dev article sits in every fold but its writer's: pooled dev repeats articles, so
        # a bootstrap over it would count them as independent; it gets scores, no interval.
        result["pooled"][split] = judge(preds, gold, n_labels, with_ci=split == "held_out")
    return result


def print_table(result: dict[str, Any]) -> None:
    systems = list(result["pooled"]["held_out"]["macro_f1"])
    comparisons = [f"{a}-{b}" for a, b in COMPARISONS]
    print("| writer | split | n | " + " | ".join(systems + comparisons) + " |")
    print("|---" * (3 + len(systems) + len(COMPARISONS)) + "|")
    rows = [(w, s, v[s]) for w, v in result["per_writer"].items() for s in ("held_out",)]
    rows += [("pooled", s, result["pooled"][s]) for s in ("seen_writers_dev", "held_out")]
    for writer, split, r in rows:
        f1 = " | ".join(f"{r['macro_f1'][name]['mean']:.3f}" for name in systems)
        d = " | ".join(f"{b['mean']['diff']:+.3f} [{b['mean']['low']:+.3f}, {b['mean']['high']:+.3f}]"
                       for b in r["differences"].values()) or " | ".join("" for _ in COMPARISONS)
        print(f"| {writer} | {split} | {r['n']} | {f1} | {d} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writer_holdout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml", help="the recipe (YAML)")
    parser.add_argument("--writers", default=",".join(DEFAULT_WRITERS), help="comma-separated writer ids")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "writer-holdout", help="folds' files and runs")
    parser.add_argument("--out", type=Path, default=OUT / "writer_holdout.json", help="result JSON")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run has finished")
    args = parser.parse_args(argv)
    writers = [w.strip() for w in args.writers.split(",") if w.strip()]
    result = run(args.config, writers, args.work, args.retrain)
    save_json(args.out, result)
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
