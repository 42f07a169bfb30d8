"""Real Libyan news labelled by the project: how a Libya model reads articles from real outlets.

    python -m bench.real_libya runs/demo/best --source ../shared/data/ant

The ANT corpus (real 2018 articles from SkyNews Arabia, BBC Arabic, France24, CNN Arabic and
AlArabiya; ``../shared/data/ant``) holds about 130 articles about Libya: Haftar's Derna campaign,
the oil-crescent attacks, the Paris meeting, the Tripoli militia clashes, migrants off the coast.
``bench/data/ant_libya_labels.jsonl`` labels them with the seeds' guide (``seeds/README.md``):
ids and labels only, the text stays in ANT and is joined here by id. Every article was read and
labelled without any model's output in view (docs/results.md §0d says how, and how often two
annotators agreed).

For the transformer alone, TF-IDF and the shipped mix (the folder's own weights), it reports
macro-F1 per task on the articles about Libya (over the labels that occur in gold or predictions,
as scikit-learn averages: no article here favours the GNA, and an absent class would otherwise
count 0) and accuracy, paired bootstrap 95 % CIs of the differences, and each task's macro-F1 at
every TF-IDF mix weight from 0 to 1 (a reading of what real text favours, not a choice: 119
articles are too few to tune on). Confusion matrices of the shipped mix
go to ``bench/out/real_libya/``; ``--baseline OTHER`` adds the paired difference of the two models'
shipped mixes (did a new corpus or recipe help on real articles?). Writes ``bench/out/real_libya.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, markdown_table, model_folder_parser, read_records, report

LABELS = ROOT / "bench" / "data" / "ant_libya_labels.jsonl"
LABEL_FIELDS = ("topic", "stance_gna", "stance_haftar")
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def join_labels(labels: Path, sources: list[Path], about_libya_only: bool = True) -> list[dict[str, Any]]:
    """The labelled records (id, title, text, labels) joined with their text from ``sources``.

    A label line whose id is in no source file, or that lacks a label field, is an error naming
    the labels file, its line and the id or field.
    """
    texts = {r["id"]: r for path in sources for r in read_records(path)}
    if not texts:
        raise SystemExit(f"no articles in {[str(s) for s in sources]} (a folder of *.jsonl(.gz) files, or one file)")
    out = []
    with open(labels, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{labels}:{line_no}: not a JSON object ({e.msg})") from None
            missing = [k for k in ("id", "about_libya", *LABEL_FIELDS) if k not in row]
            if missing:
                raise SystemExit(f"{labels}:{line_no}: field {missing[0]!r} missing")
            if row["id"] not in texts:
                raise SystemExit(f"{labels}:{line_no}: id {row['id']!r} is in none of {[str(s) for s in sources]}")
            if about_libya_only and not row["about_libya"]:
                continue
            source = texts[row["id"]]
            out.append({"id": row["id"], "title": source.get("title"), "text": source["text"],
                        **{k: row[k] for k in LABEL_FIELDS}})
    return out


def source_files(source: Path) -> list[Path]:
    """A folder of ``*.jsonl(.gz)`` files, or one file."""
    return sorted(source.glob("*.jsonl*")) if source.is_dir() else [source]


def scored(folder: Path, records: list[dict[str, Any]]) -> tuple[Any, dict, dict, dict, list[str]]:
    """The model, gold label ids, the transformer's raw logits, TF-IDF's log-probabilities and the
    prepared texts."""
    from bench.lexical_share import load_with_lexical, scored_file

    clf = load_with_lexical(folder)
    with tempfile.TemporaryDirectory() as tmp:  # the model reads the file as it read its own data
        path = Path(tmp) / "real.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        gold, raw, lex, prepared = scored_file(clf, folder, str(path))
    return clf, gold, raw, lex, prepared


def compare(folder: Path, records: list[dict[str, Any]], plots: Path | None = None,
            baseline: Path | None = None) -> dict[str, Any]:
    """Scores of ``folder`` on ``records``; with ``baseline`` (another model folder with the same
    tasks), also the paired bootstrap of this model's shipped mix minus the baseline's."""
    from bench.lexical_share import systems_of
    from model.lexical import fuse
    from training.metrics import macro_f1_from_ids, paired_bootstrap, task_metrics

    clf, gold, raw, lex, prepared = scored(folder, records)
    systems = systems_of(clf, raw, lex, prepared)
    tasks = {t.name: t for t in clf.tasks}
    n_labels = {n: len(t.labels) for n, t in tasks.items()}

    def f1(name: str, pred: np.ndarray) -> float:
        return round(macro_f1_from_ids(gold[name], pred, n_labels[name], present_only=True), 4)

    out: dict[str, Any] = {"model": str(folder), "articles": len(records),
                           "weights": {n: clf.lexical_weight(n) for n in tasks},
                           "gold_counts": {n: dict(zip(t.labels, np.bincount(gold[n], minlength=len(t.labels)).tolist()))
                                           for n, t in tasks.items()}}
    for system, preds in systems.items():
        scores = {n: f1(n, preds[n]) for n in tasks}
        out[system] = {**scores, "mean": round(float(np.mean(list(scores.values()))), 4)}
        out[f"{system} accuracy"] = {n: round(float((preds[n] == gold[n]).mean()), 4) for n in tasks}
    for a, b in (("shipped", "tfidf"), ("alone", "tfidf"), ("shipped", "alone")):
        out[f"{a} − {b}"] = paired_bootstrap(gold, systems[a], systems[b], n_labels, present_only=True)
    out["weight_sweep"] = {n: {str(w): f1(n, fuse(raw[n], lex[n], w).argmax(1)) for w in WEIGHTS} for n in tasks}
    if baseline is not None:
        base_clf, _, base_raw, base_lex, base_prepared = scored(baseline, records)
        if [(t.name, list(t.labels)) for t in base_clf.tasks] != [(n, list(t.labels)) for n, t in tasks.items()]:
            raise SystemExit(f"{baseline}: its tasks or labels differ from {folder}'s")
        base = systems_of(base_clf, base_raw, base_lex, base_prepared)["shipped"]
        out["baseline"] = {"model": str(baseline), **{n: f1(n, base[n]) for n in tasks}}
        out["shipped − baseline"] = paired_bootstrap(gold, systems["shipped"], base, n_labels, present_only=True)
    if plots is not None:
        from training.plots import confusion_png

        for n, t in tasks.items():
            confusion = task_metrics(gold[n], systems["shipped"][n], t.labels)["confusion"]
            confusion_png(plots / f"confusion_{n}.png", confusion, t.labels,
                          f"{n}: shipped mix on {len(records)} real articles")
    return out


def table(result: dict[str, Any]) -> str:
    names = [n for n in result["alone"] if n != "mean"]
    lines = [f"{result['articles']} real articles about Libya, macro-F1 (accuracy):", ""]
    lines += markdown_table(["system", *names, "mean"], [
        [s, *(f"{result[s][n]:.3f} ({result[s + ' accuracy'][n]:.3f})" for n in names), f"{result[s]['mean']:.3f}"]
        for s in ("alone", "tfidf", "shipped")])
    diffs = [k for k in ("shipped − tfidf", "alone − tfidf", "shipped − alone", "shipped − baseline") if k in result]
    lines += ["", *markdown_table(["difference", *names, "mean"], [
        [k, *(f"{result[k][n]['diff']:+.3f} [{result[k][n]['low']:+.3f}, {result[k][n]['high']:+.3f}]"
              for n in [*names, "mean"])] for k in diffs])]
    shipped = ", ".join(f"{n} {w}" for n, w in result["weights"].items())
    lines += ["", f"TF-IDF mix weight (shipped: {shipped}):", ""]
    lines += markdown_table(["task", *WEIGHTS], [[n, *(f"{row[str(w)]:.3f}" for w in WEIGHTS)]
                                                 for n, row in result["weight_sweep"].items()])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = model_folder_parser(__doc__, "real_libya.json")
    parser.add_argument("--source", type=Path, required=True, help="ANT folder (or one JSONL file) holding the texts")
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--all", action="store_true", help="also the articles that only mention Libya")
    parser.add_argument("--baseline", type=Path, default=None, help="another model folder to compare the mix with")
    args = parser.parse_args(argv)
    records = join_labels(args.labels, source_files(args.source), about_libya_only=not args.all)
    result = compare(args.model, records, plots=args.out.with_suffix(""), baseline=args.baseline)
    report(args.out, result, table(result))


if __name__ == "__main__":
    main()
