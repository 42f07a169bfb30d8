"""Labelled data: read, validate, window and batch.

Validation runs over the whole file before any training step and reports every
problem with ``file:line``, the field and the allowed values, so a user fixes a
file in one pass rather than one crash at a time.

    >>> articles = load_labelled("seeds/train.jsonl", DataArgs(), tasks, pre)  # doctest: +SKIP
    >>> ds = window_dataset(articles, tokenizer, pre, training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from model.modeling import IGNORE_INDEX
from model.preprocess import EmptyTextError, Preprocessing
from model.records import iter_records
from model.schema import Task
from training.config import DataArgs

MAX_LISTED_PROBLEMS = 25
NO_SOFT_LABEL = -1.0
SOFT_SUM_TOLERANCE = 0.01


class DataError(ValueError):
    """A data file has invalid records; the message lists them with file:line."""


@dataclass
class Article:
    """A validated labelled article. ``labels[i]`` is the label id for task ``i`` or
    :data:`IGNORE_INDEX` when the record has no label for it."""

    id: str
    title: str
    prepared: str
    labels: list[int]
    line: int
    # Soft labels (``data.soft_label_field``): each task's probabilities in label order, one
    # flat list over the tasks; a task without them is filled with ``NO_SOFT_LABEL``.
    soft: list[float] | None = None


def load_labelled(
    path: str, data: DataArgs, tasks: Sequence[Task], pre: Preprocessing, limit: int | None = None
) -> list[Article]:
    """Read and validate a labelled file; raise :class:`DataError` listing every problem."""
    articles, problems, seen_ids, present = [], [], {}, {t.name: 0 for t in tasks}
    for rec in iter_records(path):
        if limit is not None and len(articles) >= limit:
            break
        if rec.error:
            problems.append(f"{path}:{rec.line}: {rec.error}")
            continue
        article, issues = _validate(rec.data, rec.line, path, data, tasks, pre, seen_ids)
        problems.extend(issues)
        if article is not None:
            articles.append(article)
            for task, label in zip(tasks, article.labels):
                present[task.name] += label != IGNORE_INDEX
    absent = [name for name, n in present.items() if n == 0]
    if absent and (articles or not problems):
        problems.insert(0, f"{path}: no record has a label for task(s) {absent}: missing column(s)?")
    if not articles and not problems:
        problems.append(f"{path}: the file has no records")
    if problems and data.skip_invalid and articles and not absent:
        print(f"warning: skipping invalid records (data.skip_invalid=true): {_summarise(path, problems)}",
              file=sys.stderr)
    elif problems:
        raise DataError(_summarise(path, problems))
    return articles


def load_train_split(data: DataArgs, tasks: Sequence[Task], pre: Preprocessing) -> list[Article]:
    """The training articles as configured: ``limit_train`` first, then a seeded ``sample_train``.

    The model, the baseline and the reports all call this, so they see the same articles.
    """
    articles = load_labelled(data.train_file, data, tasks, pre, limit=data.limit_train)
    if data.sample_train is None or data.sample_train >= len(articles):
        return articles
    keep = sorted(random.Random(data.sample_seed).sample(range(len(articles)), data.sample_train))
    return [articles[i] for i in keep]


def _validate(
    record: dict[str, Any],
    line: int,
    path: str,
    data: DataArgs,
    tasks: Sequence[Task],
    pre: Preprocessing,
    seen_ids: dict[str, int],
) -> tuple[Article | None, list[str]]:
    here = f"{path}:{line}"
    issues = []
    rid = record.get(data.id_field)
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        issues.append(f"{here}: field '{data.id_field}': missing or empty id")
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool):
        issues.append(f"{here}: field '{data.id_field}': id must be a string or integer, got {type(rid).__name__}")
    else:
        rid = str(rid)
        if rid in seen_ids:
            issues.append(f"{here}: field '{data.id_field}': duplicate id {rid!r} (first on line {seen_ids[rid]})")
        else:
            seen_ids[rid] = line
    text = record.get(data.text_field)
    title = record.get(data.title_field) if data.title_field else None
    title = title if isinstance(title, str) else ""
    prepared = None
    if data.text_field not in record:
        issues.append(f"{here}: field '{data.text_field}': missing (columns: {sorted(record)})")
    elif not isinstance(text, str):
        issues.append(f"{here}: field '{data.text_field}': must be a string, got {type(text).__name__}")
    elif not text.strip():
        issues.append(f"{here}: field '{data.text_field}': empty text")
    else:
        try:
            prepared = pre.prepare(text, title)
        except EmptyTextError:
            issues.append(f"{here}: field '{data.text_field}': text is empty after normalisation ({pre.normalizer})")
    labels = []
    for task in tasks:
        value = record.get(task.name)
        if value is None or value == "":
            labels.append(IGNORE_INDEX)  # partially annotated: this head's loss is masked
        elif value not in task.label2id:
            issues.append(
                f"{here}: field '{task.name}': unknown label {value!r}; allowed: {', '.join(task.labels)}"
            )
            labels.append(IGNORE_INDEX)
        else:
            labels.append(task.label2id[value])
    soft = None
    if data.soft_label_field:
        soft, soft_issues = _soft_labels(record.get(data.soft_label_field), f"{here}: field "
                                         f"'{data.soft_label_field}'", tasks)
        issues.extend(soft_issues)
    has_soft = soft is not None and any(value != NO_SOFT_LABEL for value in soft)
    if not issues and all(label == IGNORE_INDEX for label in labels) and not has_soft:
        # Nothing to learn or measure from it, and a batch of such records has no loss at all.
        issues.append(f"{here}: no label for any task (fields {', '.join(repr(t.name) for t in tasks)} "
                      "are all missing or empty)")
    if issues:
        return None, issues
    return Article(id=rid, title=title, prepared=prepared, labels=labels, line=line, soft=soft), []


def _soft_labels(value: Any, where: str, tasks: Sequence[Task]) -> tuple[list[float], list[str]]:
    """A record's soft labels as one flat list over the tasks (``NO_SOFT_LABEL`` for a task it
    has none for), and the problems found: each task's value must be one probability per label."""
    flat: list[float] = []
    if value is None:
        return [NO_SOFT_LABEL] * sum(len(t.labels) for t in tasks), []
    if not isinstance(value, dict):
        return [], [f"{where}: expected a mapping task -> probabilities, got {type(value).__name__}"]
    issues = [f"{where}: unknown task {name!r}; tasks: {', '.join(t.name for t in tasks)}"
              for name in value if name not in {t.name for t in tasks}]
    for task in tasks:
        probs = value.get(task.name)
        if probs is None:
            flat.extend([NO_SOFT_LABEL] * len(task.labels))
            continue
        ok = (isinstance(probs, list) and len(probs) == len(task.labels)
              and all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0 for p in probs))
        if not ok or abs(sum(probs) - 1.0) > SOFT_SUM_TOLERANCE:
            issues.append(f"{where}: task {task.name!r}: expected {len(task.labels)} probabilities summing to 1 "
                          f"(labels {', '.join(task.labels)}), got {probs!r}"[:400])
            flat.extend([NO_SOFT_LABEL] * len(task.labels))
            continue
        flat.extend(float(p) for p in probs)
    return flat, issues


def _summarise(path: str, problems: list[str]) -> str:
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{path}: {len(problems)} problem(s) found:\n  " + "\n  ".join(shown) + tail


def window_dataset(
    articles: Sequence[Article], tokenizer: Any, pre: Preprocessing, training: bool
) -> Dataset:
    """One row per window: ``input_ids``, the article's ``labels`` and its index ``article``."""
    rows = article_dataset(articles, tokenizer, pre, training)

    def explode(batch: dict[str, list]) -> dict[str, list]:
        carried = [name for name in ("labels", "article", "soft") if name in batch]
        out: dict[str, list] = {"input_ids": [], **{name: [] for name in carried}}
        for row, windows in enumerate(batch["windows"]):
            for ids in windows:  # each window carries its article's targets
                out["input_ids"].append(ids)
                for name in carried:
                    out[name].append(batch[name][row])
        return out

    return rows.map(explode, batched=True, remove_columns=rows.column_names, desc="windows")


def article_dataset(
    articles: Sequence[Article], tokenizer: Any, pre: Preprocessing, training: bool
) -> Dataset:
    """One row per article: its ``windows`` (token-id lists), ``labels`` and index ``article``."""
    columns = {
        "prepared": [a.prepared for a in articles],
        "labels": [a.labels for a in articles],
        "article": list(range(len(articles))),
    }
    if any(a.soft is not None for a in articles):
        columns["soft"] = [a.soft for a in articles]
    base = Dataset.from_dict(columns)

    def tokenise(batch: dict[str, list]) -> dict[str, list]:
        return {"windows": pre.windows(tokenizer, batch["prepared"], training=training)}

    return base.map(tokenise, batched=True, remove_columns=["prepared"], desc="windowing")


class Collator:
    """Pads a batch dynamically (to a multiple of 8 for tensor cores).

    Rows are windows (``input_ids``) or whole articles (``windows``); an article batch is
    flattened to its windows, with ``window_article`` mapping each window to its row so the
    loss can be taken on article logits.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "windows" in rows[0]:
            ids = [w for r in rows for w in r["windows"]]
            owner = [i for i, r in enumerate(rows) for _ in r["windows"]]
        else:
            ids, owner = [r["input_ids"] for r in rows], None
        padded = self.tokenizer.pad({"input_ids": ids}, pad_to_multiple_of=8, return_tensors="pt")
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                **target_tensors(rows, owner)}


def target_tensors(rows: list[dict[str, Any]], owner: list[int] | None) -> dict[str, torch.Tensor]:
    """A batch's targets, whatever feeds the model: ``labels``, ``article``, ``soft`` (when the
    rows have soft labels) and, for article rows, ``window_article`` (each window's row)."""
    out = {
        "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
        "article": torch.tensor([r["article"] for r in rows], dtype=torch.long),
    }
    if "soft" in rows[0]:
        out["soft"] = torch.tensor([r["soft"] for r in rows], dtype=torch.float32)
    if owner is not None:
        out["window_article"] = torch.tensor(owner, dtype=torch.long)
    return out


def label_counts(articles: Sequence[Article], tasks: Sequence[Task]) -> dict[str, list[int]]:
    """Per task, how many articles carry each label (for ``class_weights: auto``)."""
    counts = {t.name: [0] * len(t.labels) for t in tasks}
    for article in articles:
        for task, label in zip(tasks, article.labels):
            if label != IGNORE_INDEX:
                counts[task.name][label] += 1
    return counts
