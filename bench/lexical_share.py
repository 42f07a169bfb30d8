"""How much of a trained model's decisions are its TF-IDF model's, and what a ceiling on the TF-IDF
mix weight (``train.max_lexical_weight``) costs on a labelled test file.

    python -m bench.lexical_share runs/demo/best --dev seeds/dev.jsonl --test seeds/test.jsonl

For each ceiling (``--ceilings``, applied to the ``--capped`` tasks, by default those whose name
starts with ``stance``) the mix weight is chosen on the dev file exactly as finalisation chooses
it, then the test file is scored: macro-F1 of the transformer alone, of TF-IDF and of the mix, the
paired bootstrap 95 % CI of mix − TF-IDF (mean over all tasks), and the **TF-IDF's share of the
disagreements**: of the test articles where the transformer and TF-IDF pick different labels, the
share where the mix sides with TF-IDF. No training; the model folder is not changed. Writes
``bench/out/lexical_share.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import model_folder_parser, report


def load_with_lexical(folder: Path) -> Any:
    """A trained folder's Classifier; an error if it saved no TF-IDF model to mix with."""
    from inference import Classifier

    clf = Classifier.from_pretrained(folder)
    if clf.lexical is None:
        raise SystemExit(f"{folder}: no TF-IDF model saved (train.fuse_lexical was off)")
    return clf


def systems_of(clf: Any, raw: dict, lex: dict, prepared: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Predicted ids per task of the transformer alone, TF-IDF and the mix at the folder's weights.

    Given the ``prepared`` texts, ``shipped`` is what users get (the mix, then ``none`` where a
    task's target is never named: ``Classifier.silence_absent_targets``) and, for a model whose
    tasks declare ``mentions``, ``mix, no gate`` is the mix before that step.
    """
    from model.lexical import fuse

    names = [t.name for t in clf.tasks]
    mixed = {n: fuse(raw[n], lex[n], clf.lexical_weight(n)) for n in names}
    out = {"alone": {n: raw[n].argmax(1) for n in names}, "tfidf": {n: lex[n].argmax(1) for n in names},
           "shipped": {n: mixed[n].argmax(1) for n in names}}
    if prepared is not None and any(t.mentions for t in clf.tasks):
        gated = clf.silence_absent_targets(mixed, prepared)
        out["mix, no gate"] = out["shipped"]
        out["shipped"] = {n: gated[n].argmax(1) for n in names}
    return out


def scored_file(clf: Any, folder: Path, path: str) -> tuple[dict, dict, dict, list[str]]:
    """Gold ids, the transformer's raw logits, the TF-IDF log-probabilities and the prepared texts
    of a labelled file."""
    from training.data import load_labelled
    from training.evaluate import data_args_of

    articles = load_labelled(path, data_args_of(folder), clf.tasks, clf.pre)
    prepared = [a.prepared for a in articles]
    gold = {t.name: np.array([a.labels[i] for a in articles]) for i, t in enumerate(clf.tasks)}
    return gold, clf.logits_prepared(prepared), clf.lexical.log_proba(prepared), prepared


def sides_with_lexical(alone: np.ndarray, lexical: np.ndarray, mixed: np.ndarray) -> tuple[int, float | None]:
    """Articles where the two disagree, and the share of them where the mix picks TF-IDF's label.

    >>> sides_with_lexical(np.array([0, 1, 1]), np.array([0, 0, 2]), np.array([0, 0, 1]))
    (2, 0.5)
    """
    differ = alone != lexical
    n = int(differ.sum())
    return n, (float((mixed[differ] == lexical[differ]).mean()) if n else None)


def compare(folder: Path, dev_file: str, test_file: str, ceilings: list[float],
            capped: list[str] | None = None) -> dict[str, Any]:
    from model.lexical import fuse
    from training.finalize import choose_lexical_weight
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    clf = load_with_lexical(folder)
    tasks = {t.name: t for t in clf.tasks}
    capped = capped if capped is not None else [n for n in tasks if n.startswith("stance")]
    dev_gold, dev_raw, dev_lex, _ = scored_file(clf, folder, dev_file)
    gold, raw, lex, _ = scored_file(clf, folder, test_file)
    n_labels = {n: len(t.labels) for n, t in tasks.items()}
    tfidf = {n: lex[n].argmax(1) for n in tasks}
    alone = {n: raw[n].argmax(1) for n in tasks}

    def f1(name: str, pred: np.ndarray) -> float:
        keep = gold[name] >= 0
        return round(macro_f1_from_ids(gold[name][keep], pred[keep], n_labels[name]), 4)

    out: dict[str, Any] = {"model": str(folder), "dev": dev_file, "test": test_file, "capped": capped,
                           "alone": {n: f1(n, alone[n]) for n in tasks},
                           "tfidf": {n: f1(n, tfidf[n]) for n in tasks}, "ceilings": []}
    for ceiling in ceilings:
        row: dict[str, Any] = {"ceiling": ceiling, "tasks": {}}
        mixed = {}
        for name, task in tasks.items():
            keep = dev_gold[name] >= 0
            weight = choose_lexical_weight(dev_raw[name][keep], dev_lex[name][keep], dev_gold[name][keep],
                                           task.labels, max_weight=ceiling if name in capped else 1.0)
            mixed[name] = fuse(raw[name], lex[name], weight).argmax(1)
            differ, share = sides_with_lexical(alone[name], tfidf[name], mixed[name])
            row["tasks"][name] = {"weight": weight, "macro_f1": f1(name, mixed[name]),
                                  "disagreements": differ, "sides_with_tfidf": share}
        row["mean"] = round(float(np.mean([r["macro_f1"] for r in row["tasks"].values()])), 4)
        row["minus_tfidf"] = paired_bootstrap(gold, mixed, tfidf, n_labels)["mean"]
        out["ceilings"].append(row)
    return out


def table(result: dict[str, Any]) -> str:
    names = list(result["alone"])
    head = ("| ceiling on " + ", ".join(result["capped"]) + " | weights | " + " | ".join(names)
            + " | mean | mix − TF-IDF [95 % CI] | mix sides with TF-IDF |")
    lines = [head, "|" + "---|" * (len(names) + 5)]
    for row in result["ceilings"]:
        t = row["tasks"]
        d = row["minus_tfidf"]
        share = ", ".join(f"{t[n]['sides_with_tfidf']:.0%} of {t[n]['disagreements']}"
                          if t[n]["sides_with_tfidf"] is not None else "–" for n in names)
        lines.append(f"| {row['ceiling']} | {' / '.join(str(t[n]['weight']) for n in names)} | "
                     + " | ".join(f"{t[n]['macro_f1']:.3f}" for n in names)
                     + f" | {row['mean']:.3f} | {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {share} |")
    for label in ("alone", "tfidf"):
        scores = result[label]
        lines.append(f"| {label} | | " + " | ".join(f"{scores[n]:.3f}" for n in names)
                     + f" | {np.mean(list(scores.values())):.3f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = model_folder_parser(__doc__, "lexical_share.json")
    parser.add_argument("--dev", required=True, help="labelled file that chooses the weights")
    parser.add_argument("--test", required=True, help="labelled file that judges them")
    parser.add_argument("--ceilings", default="1.0,0.7,0.5,0.3,0",
                        help="comma-separated ceilings on the capped tasks' TF-IDF weight")
    parser.add_argument("--capped", default=None, help="comma-separated task names (default: stance*)")
    args = parser.parse_args(argv)
    result = compare(args.model, args.dev, args.test, [float(c) for c in args.ceilings.split(",")],
                     args.capped.split(",") if args.capped else None)
    report(args.out, result, table(result))


if __name__ == "__main__":
    main()
