"""What to label next: uncertain articles, spread over the encoder's embedding space.

    python -m inference.select --model runs/demo/best --input seeds/dump.jsonl.gz --k 200 --out to_label.jsonl
    python -m inference.select --model DIR --input dump.parquet --k 50 --task stance_haftar --seed 1 --out picks.jsonl

1. Every article is scored; its uncertainty is the margin ``1 - (p1 - p2)`` between the two most
   likely labels (or the normalised entropy, ``--strategy entropy``), averaged over the tasks
   (or of one head, ``--task``).
2. The ``--pool-factor × k`` most uncertain articles form the pool; their mean-pooled encoder
   embeddings are clustered into ``k`` groups by k-means (k-means++ start, ``--seed``), and the
   most uncertain article of each cluster is picked. Uncertainty alone would return many copies
   of the one story the model finds hard; one pick per cluster spreads the labelling effort.

Writes ``--out`` (JSONL, most uncertain first: the record's fields plus the model's ``guess``,
``scores``, ``probs``, ``uncertainty``, ``rank``), and beside it a Label Studio import file
(``<out>.labelstudio.json``, the guesses as pre-annotations) and its labelling config
(``<out>.labelstudio.xml``). ``python -m training.import_labels`` turns the export back into
nabaa's labelled JSONL.

Exit status: 0 done; 2 usage errors (bad model folder, unreadable input, unknown task).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from inference.classifier import Classifier
from inference.writers import json_line
from model.preprocess import EmptyTextError
from model.records import RecordFileError, iter_records
from model.serialization import ModelFolderError

STRATEGIES = ("margin", "entropy")
EXIT_OK, EXIT_USAGE = 0, 2


# --------------------------------------------------------------------------- the choice (arrays only)
def uncertainty(probs: dict[str, np.ndarray], strategy: str = "margin", tasks: Sequence[str] | None = None) -> np.ndarray:
    """Per article, how unsure the model is: mean over ``tasks`` of the margin-based or entropy
    score, each in [0, 1] (1 = coin toss).

    >>> uncertainty({"t": np.array([[0.5, 0.5], [1.0, 0.0]])}).tolist()
    [1.0, 0.0]
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    names = list(tasks) if tasks else list(probs)
    per_task = []
    for name in names:
        p = np.asarray(probs[name], dtype=np.float64)
        if strategy == "margin":
            top2 = np.sort(p, axis=1)[:, -2:]
            per_task.append(1.0 - (top2[:, 1] - top2[:, 0]))
        else:
            entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
            per_task.append(entropy / np.log(p.shape[1]))
    return np.mean(per_task, axis=0)


def uncertain_pool(scores: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` most uncertain items, most uncertain first (ties: input order)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:size]


def pick_diverse(scores: np.ndarray, embeddings: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """``k`` distinct positions: k-means (k-means++ start) over the L2-normalised embeddings, then
    the most uncertain member of each cluster; clusters left empty (duplicate texts) are made up
    by the most uncertain items not yet picked. Result: most uncertain first.

    >>> pick_diverse(np.array([0.9, 0.8, 0.1]), np.eye(3), k=2)
    [0, 1]
    """
    n = len(scores)
    if k >= n:
        return [int(i) for i in uncertain_pool(scores, n)]
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    unit = embeddings / np.clip(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12, None)
    with warnings.catch_warnings():
        # Fewer distinct points than k (copies of one story) is expected here, not a problem.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit_predict(unit)
    chosen: list[int] = []
    for cluster in range(k):
        members = np.flatnonzero(clusters == cluster)
        if len(members):
            chosen.append(int(members[np.lexsort((members, -scores[members]))[0]]))
    taken = set(chosen)
    for i in uncertain_pool(scores, n):
        if len(chosen) >= k:
            break
        if int(i) not in taken:
            chosen.append(int(i))
            taken.add(int(i))
    return sorted(chosen, key=lambda i: (-scores[i], i))


def select_indices(probs: dict[str, np.ndarray], embed: Any, k: int, seed: int = 0, strategy: str = "margin",
                   tasks: Sequence[str] | None = None, pool_factor: float = 5.0) -> tuple[list[int], np.ndarray]:
    """The whole choice on arrays: uncertainty → pool → diverse picks. ``embed(indices)`` returns
    the embeddings of those items (only the pool is embedded). Returns (picks, uncertainty).

    >>> picks, u = select_indices({"t": p}, lambda idx: emb[idx], k=100, seed=1)  # doctest: +SKIP
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = uncertainty(probs, strategy, tasks)
    pool = uncertain_pool(scores, max(k, int(round(pool_factor * k))))
    picks = pick_diverse(scores[pool], np.asarray(embed(pool)), k, seed)
    return [int(pool[i]) for i in picks], scores


# --------------------------------------------------------------------------- reading and scoring
@dataclass
class SelectArgs:
    model: str
    input: str
    out: str
    k: int = 200
    task: str | None = None
    seed: int = 0
    strategy: str = "margin"
    pool_factor: float = 5.0
    text_field: str = "text"
    id_field: str = "id"
    title_field: str | None = "title"
    device: str = "auto"
    buffer_size: int = 256
    show_progress: bool = True


@dataclass
class Scored:
    """What pass 1 keeps per usable article: its line, id and per-task probabilities."""

    lines: list[int]
    ids: list[str]
    probs: dict[str, np.ndarray]
    skipped: int


def _prepared(data: dict[str, Any], args: SelectArgs, clf: Classifier) -> tuple[str | None, str | None]:
    """(id, prepared text), or (None, None) for a record that cannot be scored."""
    rid = data.get(args.id_field)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
        return None, None
    text = data.get(args.text_field)
    if not isinstance(text, str) or not text.strip():
        return None, None
    try:
        return str(rid), clf.prepare(text, data.get(args.title_field) if args.title_field else None)
    except EmptyTextError:
        return None, None


def _buffers(args: SelectArgs, clf: Classifier, lines: set[int] | None = None) -> Iterator[list[tuple[int, str, str, dict]]]:
    """Buffers of (line, id, prepared text, record) for usable records (only ``lines`` if given)."""
    buffer = []
    for rec in iter_records(args.input):
        if rec.error or (lines is not None and rec.line not in lines):
            continue
        rid, text = _prepared(rec.data, args, clf)
        if text is not None:
            buffer.append((rec.line, rid, text, rec.data))
        if len(buffer) >= args.buffer_size:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


def score_all(args: SelectArgs, clf: Classifier) -> Scored:
    """Pass 1: probabilities for every usable record (a duplicate id counts once: its first line)."""
    lines, ids, chunks, seen, skipped = [], [], {t: [] for t in clf.task_names}, set(), 0
    bar = tqdm(desc="scoring", unit=" art", disable=not args.show_progress, dynamic_ncols=True)
    for buffer in _buffers(args, clf):
        fresh = []
        for item in buffer:
            if item[1] not in seen:
                seen.add(item[1])
                fresh.append(item)
        skipped += len(buffer) - len(fresh)
        if fresh:
            probs = clf.predict_proba_prepared([item[2] for item in fresh])
            for name, value in probs.items():
                chunks[name].append(value)
            lines += [item[0] for item in fresh]
            ids += [item[1] for item in fresh]
        bar.update(len(buffer))
    bar.close()
    probs = {t: np.concatenate(c) if c else np.zeros((0, len(clf.labels(t)))) for t, c in chunks.items()}
    return Scored(lines, ids, probs, skipped)


def embed_lines(args: SelectArgs, clf: Classifier, wanted: Sequence[int]) -> tuple[np.ndarray, dict[int, dict]]:
    """Pass 2: embeddings (in ``wanted`` order) and records of the pool's lines only."""
    by_line: dict[int, tuple[np.ndarray, dict]] = {}
    bar = tqdm(total=len(wanted), desc="embedding pool", unit=" art", disable=not args.show_progress,
               dynamic_ncols=True)
    for buffer in _buffers(args, clf, set(wanted)):
        buffer = [item for item in buffer if item[0] not in by_line]
        vectors = clf.embed_prepared([item[2] for item in buffer])
        for item, vector in zip(buffer, vectors):
            by_line[item[0]] = (vector, item[3])
        bar.update(len(buffer))
    bar.close()
    return np.stack([by_line[line][0] for line in wanted]), {line: by_line[line][1] for line in wanted}


# --------------------------------------------------------------------------- outputs
def output_rows(picks: Sequence[int], scored: Scored, scores: np.ndarray, records: dict[int, dict],
                clf: Classifier) -> list[dict[str, Any]]:
    rows = []
    for rank, i in enumerate(picks, start=1):
        row = dict(records[scored.lines[i]])
        guess, score, probs = {}, {}, {}
        for task in clf.tasks:
            p = scored.probs[task.name][i]
            best = int(np.argmax(p))
            guess[task.name], score[task.name] = task.labels[best], round(float(p[best]), 6)
            probs[task.name] = {label: round(float(v), 6) for label, v in zip(task.labels, p)}
        row.update({"guess": guess, "scores": score, "probs": probs, "uncertainty": round(float(scores[i]), 6),
                    "rank": rank})
        rows.append(row)
    return rows


def label_studio_tasks(rows: Sequence[dict[str, Any]], args: SelectArgs, model_version: str) -> list[dict[str, Any]]:
    """Label Studio import: scalar fields as ``data`` (text under ``text``), guesses as predictions."""
    tasks = []
    for row in rows:
        data = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
        data.pop("rank", None)
        data["text"] = row.get(args.text_field, "")
        data["id"] = str(row.get(args.id_field))
        if args.title_field:
            data["title"] = row.get(args.title_field) or ""
        result = [{"from_name": task, "to_name": "text", "type": "choices", "value": {"choices": [label]}}
                  for task, label in row["guess"].items()]
        tasks.append({"data": data, "predictions": [{"model_version": model_version,
                                                     "score": round(1.0 - row["uncertainty"], 6), "result": result}]})
    return tasks


def label_studio_config(clf: Classifier) -> str:
    """A labelling interface: the title and text, one single-choice block per task."""
    parts = ['<View>', '  <Header value="$title"/>', '  <Text name="text" value="$text"/>']
    for task in clf.tasks:
        parts.append(f'  <Header value="{task.name}"/>')
        parts.append(f'  <Choices name="{task.name}" toName="text" choice="single" showInline="true">')
        parts += [f'    <Choice value="{html.escape(label, quote=True)}"/>' for label in task.labels]
        parts.append("  </Choices>")
    return "\n".join(parts + ["</View>", ""])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sidecar_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The Label Studio import file and labelling config written beside ``out``."""
    out = Path(out)
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".labelstudio.json"), out.with_name(stem + ".labelstudio.xml")


# --------------------------------------------------------------------------- driver
def run_select(args: SelectArgs, clf: Classifier | None = None) -> list[dict[str, Any]]:
    """Pick ``args.k`` articles to label and write the outputs; return the rows written.

    >>> rows = run_select(SelectArgs(model="runs/demo/best", input="seeds/dump.jsonl.gz", out="picks.jsonl", k=20))  # doctest: +SKIP
    """
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    if not str(args.out).endswith(".jsonl"):
        raise ValueError(f"{args.out}: --out must end in .jsonl")
    clf = clf or Classifier.from_pretrained(args.model, device=args.device, keep_freed_memory=True)
    if args.task and args.task not in clf.task_names:
        raise ValueError(f"--task {args.task!r} is not a task of {args.model}; tasks: {', '.join(clf.task_names)}")
    scored = score_all(args, clf)
    if not scored.ids:
        raise ValueError(f"{args.input}: no record could be scored (check --text-field / --id-field)")
    records: dict[int, dict] = {}

    def embed(pool: np.ndarray) -> np.ndarray:
        vectors, found = embed_lines(args, clf, [scored.lines[i] for i in pool])
        records.update(found)
        return vectors

    picks, scores = select_indices(scored.probs, embed, args.k, args.seed, args.strategy,
                                   [args.task] if args.task else None, args.pool_factor)
    rows = output_rows(picks, scored, scores, records, clf)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import_file, config_file = sidecar_paths(out)
    _atomic_write(import_file, json.dumps(label_studio_tasks(rows, args, f"nabaa:{Path(args.model).name}"),
                                          ensure_ascii=False, indent=1))
    _atomic_write(config_file, label_studio_config(clf))
    _atomic_write(out, "".join(json_line(r) for r in rows))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> SelectArgs:
    p = argparse.ArgumentParser(prog="python -m inference.select", description="Pick the articles to label next.",
                                epilog="Exit status: 0 done, 2 usage error.")
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/demo/best)")
    p.add_argument("--input", required=True, help="unlabelled articles: .jsonl, .csv or .parquet, optionally .gz")
    p.add_argument("--out", required=True, help="picks, .jsonl (a Label Studio import file is written beside it)")
    p.add_argument("--k", type=int, default=200, help="how many articles to pick (default 200)")
    p.add_argument("--task", default=None, help="focus on one head's uncertainty (default: mean over tasks)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (same seed, same picks)")
    p.add_argument("--strategy", choices=STRATEGIES, default="margin")
    p.add_argument("--pool-factor", type=float, default=5.0, help="uncertain pool = this × k articles")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="id")
    p.add_argument("--title-field", default="title", help="'' to ignore titles")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    ns = vars(p.parse_args(argv))
    ns["show_progress"] = not ns.pop("no_progress")
    ns["title_field"] = ns["title_field"] or None
    return SelectArgs(**ns)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = run_select(args)
    except (RecordFileError, ModelFolderError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import_file, config_file = sidecar_paths(args.out)
    print(f"picked {len(rows)} article(s) → {args.out}\nLabel Studio: import {import_file} "
          f"with the labelling config {config_file}; export as JSON, then run python -m training.import_labels")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
