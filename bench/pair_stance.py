"""One stance head over (target, article) pairs against one head per target, on seeds dev/test.

    python -m bench.pair_stance --reference runs/demo-auto/best
    python -m bench.pair_stance --reference runs/demo-auto/best --holdout stance_haftar   # an unseen actor

The pair model is trained with the reference run's own recipe (its ``run_config.yaml``: backbone,
frozen layers, windows, epochs, seed, TF-IDF mix), its tasks replaced by one ``stance`` task over
the pairs ``training.pairs`` makes of the seeds splits. With ``--holdout FIELD`` that target is
left out of training (train and dev pairs), which measures what the pair design promises: a new
actor as a phrase. Both models are judged per stance field on the seeds dev and test articles
three ways: as shipped (calibrated, each with its own TF-IDF mix: a pair model's TF-IDF sees the
target phrase only as more words, so it cannot tell the camps apart), transformer alone, and each
transformer mixed with the reference's per-target TF-IDF models (weights chosen on dev); each
with the paired bootstrap 95 % CI of pair − per-target. Writes ``bench/out/pair_stance[-holdout-FIELD].json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import OUT, ROOT, machine_info, read_records, save_json
from training.pairs import PAIR_TASK

SPLITS = ("dev", "test")
KINDS = ("shipped", "alone", "per_target_tfidf_mix")
# How the model reads each actor: the camps as seeds/README.md defines them.
DEFAULT_TARGETS = {
    "stance_gna": "حكومة الوفاق الوطني في طرابلس وقواتها",
    "stance_haftar": "خليفة حفتر وقواته في الشرق",
}


def pair_config(reference: Path, work: Path, targets: Mapping[str, str], holdout: str | None) -> Path:
    """The reference run's config with its tasks and data replaced by stance pairs."""
    from training.pairs import write_pairs

    raw = yaml.safe_load((reference / "run_config.yaml").read_text(encoding="utf-8"))
    train_targets = {f: p for f, p in targets.items() if f != holdout}
    files = {}
    for split in ("train", "dev", "test"):
        chosen = targets if split == "test" else train_targets
        files[split] = work / f"{split}.jsonl"
        write_pairs(ROOT / raw["data"][f"{split}_file"], files[split], chosen)
    stance_labels = next(t["labels"] for t in raw["tasks"] if t["name"] in targets)
    raw["name"] = f"{raw['name']}-pairs"
    raw["tasks"] = [{"name": PAIR_TASK, "labels": list(stance_labels), "class_weights": "auto"}]
    raw["data"].update({f"{s}_file": str(files[s]) for s in files})
    raw["train"]["output_dir"] = str(work / "run")
    path = work / "pairs.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def stance_logits(clf: Any, records: Sequence[dict[str, Any]], fields: Sequence[str],
                  phrases: Mapping[str, str] | None) -> dict[str, dict[str, np.ndarray]]:
    """Per field: ``shipped`` (the folder's calibrated, TF-IDF-mixed logits) and ``alone`` (the
    transformer's article logits), from one pass per input set: a per-target model reads the
    articles once; a pair model (``phrases`` given) reads them once per target."""
    from model.preprocess import with_target

    out: dict[str, dict[str, np.ndarray]] = {"shipped": {}, "alone": {}}
    inputs = {f: [with_target(r, phrases[f]) for r in records] for f in fields} if phrases else {None: records}
    for target, rows in inputs.items():
        prepared = [clf.prepare(r["text"], r.get("title")) for r in rows]
        raw = clf.logits_prepared(prepared)
        fused = clf.fused_logits(raw, prepared)
        for field in [target] if phrases else fields:
            task = PAIR_TASK if phrases else field
            out["alone"][field] = raw[task]
            out["shipped"][field] = fused[task] / clf.temperature(task)
    return out


def with_reference_lexical(split_logits: dict[str, Any], lexical: dict[str, dict[str, np.ndarray]],
                           gold: dict[str, dict[str, np.ndarray]], labels: Sequence[str]) -> dict[str, Any]:
    """Each system's transformer logits mixed with the reference's per-target TF-IDF model, the
    weight per field chosen on dev (as training's finalisation does), applied to every split."""
    from model.lexical import fuse
    from training.finalize import choose_lexical_weight

    weights = {name: {f: choose_lexical_weight(split_logits["dev"][name]["alone"][f], lexical["dev"][f],
                                               gold["dev"][f], labels) for f in lexical["dev"]}
               for name in split_logits["dev"]}
    for split, systems in split_logits.items():
        for name, kinds in systems.items():
            kinds["per_target_tfidf_mix"] = {f: fuse(kinds["alone"][f], lexical[split][f], weights[name][f])
                                             for f in lexical[split]}
    return weights


def compare(pair: dict[str, np.ndarray], ref: dict[str, np.ndarray], gold: dict[str, np.ndarray],
            n_labels: int) -> dict[str, Any]:
    """Macro-F1 per field for both systems and the paired bootstrap of pair − per-target."""
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    p = {f: v.argmax(axis=1) for f, v in pair.items()}
    r = {f: v.argmax(axis=1) for f, v in ref.items()}
    f1 = {name: {f: round(float(macro_f1_from_ids(gold[f], s[f], n_labels)), 4) for f in gold}
          for name, s in (("pair", p), ("per_target", r))}
    return {"macro_f1": f1, "pair_minus_per_target": paired_bootstrap(gold, p, r, {f: n_labels for f in gold})}


def run(reference: Path, work: Path, targets: Mapping[str, str], holdout: str | None, retrain: bool) -> dict[str, Any]:
    from inference import Classifier
    from training.train import main as train_main

    work.mkdir(parents=True, exist_ok=True)
    config = pair_config(reference, work, targets, holdout)
    model_dir = work / "run" / "best"
    if retrain or not (model_dir / "training_state.json").exists():
        if train_main(["--config", str(config)]) != 0:
            raise SystemExit("pair model training failed")
    ref_clf, pair_clf = Classifier.from_pretrained(reference), Classifier.from_pretrained(model_dir)
    fields, labels = list(targets), pair_clf.labels(PAIR_TASK)
    if any(ref_clf.labels(f) != labels for f in fields):
        raise SystemExit(f"the reference's stance labels differ from the pair model's {labels}")
    ids = {label: i for i, label in enumerate(labels)}
    logits, lexical, gold = {}, {}, {}
    for split in SPLITS:
        records = read_records(ROOT / "seeds" / f"{split}.jsonl")
        gold[split] = {f: np.array([ids[r[f]] for r in records]) for f in fields}
        logits[split] = {"per_target": stance_logits(ref_clf, records, fields, None),
                         "pair": stance_logits(pair_clf, records, fields, targets)}
        scored = ref_clf.lexical.log_proba([ref_clf.prepare(r["text"], r.get("title")) for r in records])
        lexical[split] = {f: scored[f] for f in fields}
    weights = with_reference_lexical(logits, lexical, gold, labels)
    result: dict[str, Any] = {"machine": machine_info(), "reference": str(reference), "pair_model": str(model_dir),
                              "targets": dict(targets), "holdout": holdout, "mix_weights_chosen_on_dev": weights}
    for split in SPLITS:
        result[split] = {kind: compare(logits[split]["pair"][kind], logits[split]["per_target"][kind], gold[split],
                                       len(labels)) for kind in KINDS}
    return result


def print_table(result: dict[str, Any]) -> None:
    print("| split | scores | field | per-target heads | pair head | pair − per-target [95 % CI] |")
    print("|---|---|---|---|---|---|")
    for split in SPLITS:
        for kind in KINDS:
            row = result[split][kind]
            boot = row["pair_minus_per_target"]
            for field in [*row["macro_f1"]["pair"], "mean"]:
                if field == "mean":
                    pair = np.mean(list(row["macro_f1"]["pair"].values()))
                    ref = np.mean(list(row["macro_f1"]["per_target"].values()))
                else:
                    pair, ref = row["macro_f1"]["pair"][field], row["macro_f1"]["per_target"][field]
                b = boot[field]
                print(f"| {split} | {kind} | {field} | {ref:.3f} | {pair:.3f} | "
                      f"{b['diff']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}] |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pair_stance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a per-target model folder (runs/demo/best)")
    parser.add_argument("--target", action="append", default=None, metavar="FIELD=PHRASE",
                        help="stance field and actor phrase (repeatable; default: the seeds' two camps)")
    parser.add_argument("--holdout", default=None, help="a target field left out of training")
    parser.add_argument("--work", type=Path, default=None, help="pair files and run (default runs/pair-stance[-FIELD])")
    parser.add_argument("--retrain", action="store_true", help="train again even if the run has finished")
    args = parser.parse_args(argv)
    from training.pairs import parse_target

    targets = dict(parse_target(t) for t in args.target) if args.target else DEFAULT_TARGETS
    if args.holdout and args.holdout not in targets:
        parser.error(f"--holdout {args.holdout!r} is not one of the targets {sorted(targets)}")
    suffix = f"-holdout-{args.holdout}" if args.holdout else ""
    work = args.work or ROOT / "runs" / f"pair-stance{suffix}"
    result = run(args.reference, work, targets, args.holdout, args.retrain)
    save_json(OUT / f"pair_stance{suffix}.json", result)
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
