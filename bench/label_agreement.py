"""A second, blind annotation of a labelled split: how much of a model's error is the label's.

    python -m bench.label_agreement runs/demo/best --data seeds/test.jsonl \\
        --second bench/data/seeds_test_second.jsonl

Each seeds article was labelled once, by the writer who wrote it to a quota. Where the model and
TF-IDF both disagree with that label, is the article hard, or is the label one reading among
others? ``--second`` holds independent labels for some articles of ``--data`` (``id``, an
``annotator`` name and one label per task; several annotators per article allowed), given by
readers who saw only the text and the guide, never a label or a model's output.

Every (article, task) of ``--data`` falls in one of four groups by the shipped mix and TF-IDF:
both right, only the mix wrong, only TF-IDF wrong, both wrong. Per group it reports how many
were read again, how often a second reader agreed with the label, and how many are **disputed**:
every second reader agrees on one label and it is not the file's. Then:

- the two systems scored against the file's labels and against the **adjudicated** labels (a
  disputed item takes the readers' label), with the paired bootstrap of shipped − TF-IDF;
- the **reader's ceiling**: the file-label macro-F1 of a system right on every undisputed item
  and reading each disputed one as the second readers did. Beating TF-IDF by more than
  (ceiling − TF-IDF) takes agreeing with the writer against every independent reader.

Only the read items can be disputed; the groups' sampling (e.g. every error and a sample of the
items both systems get right) is in the table. Writes ``bench/out/label_agreement.json``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import markdown_table, model_folder_parser, report

GROUPS = ("both right", "only the mix wrong", "only TF-IDF wrong", "both wrong")


def read_second(path: Path, tasks: dict[str, list[str]]) -> dict[str, list[dict[str, str]]]:
    """Second annotations by article id; an error naming the line for a bad line, an unknown label
    or a missing field.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> _ = f.write('{"id": "a", "annotator": "X", "t": "yes"}\\n'); f.close()
    >>> read_second(Path(f.name), {"t": ["yes", "no"]})["a"][0]["t"]
    'yes'
    >>> os.unlink(f.name)
    """
    from model.records import iter_records

    out: dict[str, list[dict[str, str]]] = {}
    for row in iter_records(path):  # the project's reader: JSONL, CSV or Parquet, gzipped too
        number, record = row.line, row.data
        if record is None:
            raise SystemExit(f"{path}:{number}: not JSON Lines: {row.error}")
        for field in ("id", "annotator", *tasks):
            if field not in record:
                raise SystemExit(f"{path}:{number}: field {field!r} missing")
        for task, labels in tasks.items():
            if record[task] not in labels:
                raise SystemExit(f"{path}:{number}: {task} = {record[task]!r}; expected one of {labels}")
        out.setdefault(record["id"], []).append(record)
    return out


def group_of(gold: int, mix: int, lexical: int) -> str:
    """Which of GROUPS an item falls in.

    >>> group_of(0, 1, 1), group_of(0, 0, 1)
    ('both wrong', 'only TF-IDF wrong')
    """
    return GROUPS[int(mix != gold) + 2 * int(lexical != gold)]


def consensus(readings: list[str]) -> str | None:
    """The label every second reader gave, or None when they differ (or there are none).

    >>> consensus(["a", "a"]), consensus(["a", "b"]), consensus([])
    ('a', None, None)
    """
    return readings[0] if readings and len(set(readings)) == 1 else None


def agreement(folder: Path, data: str, second_path: Path, n_resamples: int = 2000) -> dict[str, Any]:
    """The second reading of ``data`` set against the file's labels and ``folder``'s predictions
    (the module docstring says what each part means)."""
    from bench.lexical_share import load_with_lexical, scored_file, systems_of
    from model.modeling import IGNORE_INDEX
    from model.records import iter_records
    from training.evaluate import data_args_of
    from training.metrics import macro_f1_from_ids, paired_bootstrap

    clf = load_with_lexical(folder)
    tasks = {t.name: list(t.labels) for t in clf.tasks}
    second = read_second(second_path, tasks)
    id_field = data_args_of(folder).id_field
    ids = [str(row.data.get(id_field)) for row in iter_records(data) if row.data is not None]
    if not set(second) & set(ids):
        raise SystemExit(f"{second_path}: no article of {data} is read again (ids by the field {id_field!r})")
    unknown = sorted(set(second) - set(ids))
    if unknown:
        raise SystemExit(f"{second_path}: {len(unknown)} ids are not in {data}, e.g. {unknown[0]!r}")
    gold, raw, lex, prepared = scored_file(clf, folder, data)
    if len(prepared) != len(ids):
        raise SystemExit(f"{data}: {len(ids)} records but {len(prepared)} articles loaded; remove invalid records first")
    systems = systems_of(clf, raw, lex, prepared)
    mix, tfidf = systems["shipped"], systems["tfidf"]
    result: dict[str, Any] = {"model": str(folder), "data": data, "second": str(second_path),
                              "articles": len(ids), "read_again": len(second), "tasks": {}}
    adjudicated = {n: gold[n].copy() for n in tasks}
    for name, labels in tasks.items():
        rows = {g: Counter() for g in GROUPS}
        pairs = []
        for i, article_id in enumerate(ids):
            if gold[name][i] == IGNORE_INDEX:  # not labelled for this task in the file
                continue
            group = group_of(gold[name][i], mix[name][i], tfidf[name][i])
            rows[group]["items"] += 1
            readings = [labels.index(r[name]) for r in second.get(article_id, [])]
            if not readings:
                continue
            rows[group]["read"] += 1
            rows[group]["readings"] += len(readings)
            rows[group]["agree"] += sum(r == gold[name][i] for r in readings)
            agreed = consensus(readings)
            if len(readings) >= 2:
                pairs.append(readings[0] == readings[1])
            if agreed is not None and agreed != gold[name][i]:
                rows[group]["disputed"] += 1
                rows[group]["readers side with the mix"] += int(agreed == mix[name][i])
                rows[group]["readers side with TF-IDF"] += int(agreed == tfidf[name][i])
                adjudicated[name][i] = agreed
        result["tasks"][name] = {"groups": {g: {k: int(v) for k, v in c.items()} for g, c in rows.items()},
                                 "reader_pair_agreement": round(float(np.mean(pairs)), 4) if pairs else None}
    n_labels = {n: len(v) for n, v in tasks.items()}

    def mean_f1(reference: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, float]:
        keep = {n: gold[n] != IGNORE_INDEX for n in tasks}
        scores = {n: round(macro_f1_from_ids(reference[n][keep[n]], pred[n][keep[n]], n_labels[n]), 4) for n in tasks}
        return {**scores, "mean": round(float(np.mean(list(scores.values()))), 4)}

    for reference_name, reference in (("file labels", gold), ("adjudicated", adjudicated)):
        result[reference_name] = {
            "shipped": mean_f1(reference, mix), "tfidf": mean_f1(reference, tfidf),
            "shipped − tfidf": paired_bootstrap(reference, mix, tfidf, n_labels, n_resamples=n_resamples)["mean"]}
    # Right wherever the readers did not dispute the file, and reading each disputed item as they did.
    result["reader's ceiling"] = mean_f1(gold, adjudicated)
    result["second reader as a system"] = reader_as_system(ids, second, tasks, gold, mix, tfidf)
    return result


def sampling_weights(strata: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Per read article (``strata``: its stratum flag; an article drawn twice counts twice): its
    stratum's size in the whole file (``whole``, one flag per article) over the read articles drawn
    from that stratum, so that they stand for the whole file, each stratum sampled at its own rate.

    >>> sampling_weights(np.array([True, False]), np.array([True, True, False, False, False])).tolist()
    [2.0, 3.0]
    """
    weights = np.zeros(len(strata))
    for stratum in (True, False):
        members = strata == stratum
        if members.any():
            weights[members] = (whole == stratum).sum() / members.sum()
    return weights


def reader_as_system(ids: list[str], second: dict[str, list], tasks: dict[str, list[str]],
                     gold: dict[str, np.ndarray], mix: dict[str, np.ndarray], tfidf: dict[str, np.ndarray],
                     n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Macro-F1 against the file's labels of one independent reader (every second reading, each
    article's readings sharing its weight), estimated for the whole file from the articles read
    again: the strata are "either system wrong on some task" and "both right on every task".
    The two systems are estimated the same way beside their exact scores, as a check on the
    estimate; a bootstrap over the read articles (within each stratum) gives 95 % intervals of
    the reader's mean and of each system's mean minus the reader's."""
    from model.modeling import IGNORE_INDEX
    from training.metrics import macro_f1_from_ids

    labelled = {n: gold[n] != IGNORE_INDEX for n in tasks}
    wrong_somewhere = np.zeros(len(ids), dtype=bool)
    for name in tasks:
        wrong_somewhere |= labelled[name] & ((mix[name] != gold[name]) | (tfidf[name] != gold[name]))
    read = [i for i, article_id in enumerate(ids) if article_id in second]
    systems = {"shipped": mix, "tfidf": tfidf}

    strata = [[i for i in read if wrong_somewhere[i] == s] for s in (True, False)]
    for flag, drawn in zip((True, False), strata):
        if (wrong_somewhere == flag).any() and not drawn:
            kind = "either system gets wrong" if flag else "both systems get right"
            raise SystemExit(f"no article that {kind} was read again: the reading cannot stand for the whole file")

    def estimate(articles: list[int]) -> dict[str, dict[str, float]]:
        drawn = np.array(articles)
        out: dict[str, dict[str, float]] = {}
        for name, labels in tasks.items():
            keep = drawn[labelled[name][drawn]]  # articles with a label for this task, their own strata
            weights = sampling_weights(wrong_somewhere[keep], wrong_somewhere[labelled[name]])
            rows = [(w / len(second[ids[i]]), i, labels.index(r[name]))
                    for w, i in zip(weights, keep) for r in second[ids[i]]]
            if not rows:
                out[name] = {c: float("nan") for c in ("second reader (estimated)",
                                                      *(f"{s} (estimated)" for s in systems))}
                continue
            weight, at, reading = (np.array(column) for column in zip(*rows))
            out[name] = {"second reader (estimated)": macro_f1_from_ids(gold[name][at], reading, len(labels),
                                                                        weights=weight)}
            for system, pred in systems.items():
                out[name][f"{system} (estimated)"] = macro_f1_from_ids(gold[name][at], pred[name][at], len(labels),
                                                                       weights=weight)
        out["mean"] = {c: float(np.mean([out[n][c] for n in tasks])) for c in out[next(iter(tasks))]}
        return out

    result: dict[str, Any] = estimate(read)
    for name in tasks:
        for system, pred in systems.items():
            keep = labelled[name]
            result[name][f"{system} (exact)"] = macro_f1_from_ids(gold[name][keep], pred[name][keep], len(tasks[name]))
    result["mean"].update({f"{s} (exact)": float(np.mean([result[n][f"{s} (exact)"] for n in tasks]))
                           for s in systems})
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        articles = [int(i) for stratum in strata if stratum for i in rng.choice(stratum, len(stratum))]
        mean = estimate(articles)["mean"]
        draws.append([mean["second reader (estimated)"],
                      *(mean[f"{s} (estimated)"] - mean["second reader (estimated)"] for s in systems)])
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    names = ["second reader", *(f"{s} − second reader" for s in systems)]
    result["intervals"] = {n: [round(float(a), 4), round(float(b), 4)] for n, a, b in zip(names, low, high)}
    return {n: ({c: round(v, 4) for c, v in row.items()} if n != "intervals" else row) for n, row in result.items()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['read_again']} of {result['articles']} articles read again ({result['second']})", ""]
    head = ["task", "group", "items", "read", "second readings agreeing with the label", "disputed",
            "of them, readers side with mix / TF-IDF"]
    rows = []
    for name, task in result["tasks"].items():
        for group, c in task["groups"].items():
            share = f"{c.get('agree', 0)} / {c.get('readings', 0)}" if c.get("readings") else "–"
            rows.append([name, group, c.get("items", 0), c.get("read", 0), share, c.get("disputed", 0),
                         f"{c.get('readers side with the mix', 0)} / {c.get('readers side with TF-IDF', 0)}"])
    lines += markdown_table(head, rows)
    pair = ", ".join(f"{n} {t['reader_pair_agreement']}" for n, t in result["tasks"].items())
    lines += ["", f"Two second readers agree with each other: {pair}", ""]
    names = list(result["tasks"])
    score_rows = []
    for reference in ("file labels", "adjudicated"):
        for system in ("shipped", "tfidf"):
            s = result[reference][system]
            score_rows.append([reference, system, *(f"{s[n]:.3f}" for n in names), f"{s['mean']:.3f}"])
        d = result[reference]["shipped − tfidf"]
        score_rows.append([reference, "shipped − tfidf", *([""] * len(names)),
                           f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"])
    c = result["reader's ceiling"]
    score_rows.append(["file labels", "reader's ceiling", *(f"{c[n]:.3f}" for n in names), f"{c['mean']:.3f}"])
    lines += markdown_table(["scored against", "system", *names, "mean macro-F1"], score_rows)
    estimate = result["second reader as a system"]
    lines += ["", "One independent reader scored against the file's labels, estimated for the whole file "
              "(the systems' estimates beside their exact scores check the estimate):", ""]
    lines += markdown_table(["", *names, "mean"], [[c, *(f"{estimate[n][c]:.3f}" for n in [*names, "mean"])]
                                                   for c in estimate["mean"]])
    lines += ["", "95 % intervals (bootstrap over the articles read again, within strata): "
              + "; ".join(f"{k} [{a:.3f}, {b:.3f}]" if k == "second reader" else f"{k} [{a:+.3f}, {b:+.3f}]"
                         for k, (a, b) in estimate["intervals"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = model_folder_parser(__doc__, "label_agreement.json")
    parser.add_argument("--data", required=True, help="the labelled file the second annotation reads again")
    parser.add_argument("--second", type=Path, required=True, help="JSONL: id, annotator, one label per task")
    args = parser.parse_args(argv)
    result = agreement(args.model, args.data, args.second)
    report(args.out, result, table(result))


if __name__ == "__main__":
    main()
