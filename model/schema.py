"""Task schema: which tasks a model predicts and with which labels.

The schema lives in the config file, never in code. The default "libya" schema
(topic, stance_gna, stance_haftar) is in ``configs/``; users declare their own the
same way::

    >>> tasks = parse_tasks([{"name": "topic", "labels": ["sport", "economy"]}])
    >>> tasks[0].label2id["economy"]
    1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.arabic import fold_letters, fold_spelling

TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SchemaError(ValueError):
    """The task schema in a config is invalid (raised before any work starts)."""


@dataclass(frozen=True)
class Task:
    """One single-label classification head.

    ``class_weights`` is ``None`` (plain cross-entropy), ``"auto"`` (inverse label
    frequency in the training split) or one weight per label.

    ``mentions`` (optional) are regular expressions naming the task's target: an article whose
    text matches none of them is given the label ``none`` with certainty, whatever the network
    reads. The annotation guide's rule "``none`` when the target is absent", kept by
    construction, so that a dump's articles about other countries' wars get no stance toward
    Libyan camps. Only tasks with a ``none`` label may declare them. Expressions and texts are
    matched with their letter variants folded (:func:`model.arabic.fold_spelling`: ``مصراته``
    finds ``مصراتة``, ``اجدابيا`` finds ``أجدابيا``), each expression on its own.

    >>> task = Task("stance_haftar", ("favor", "against", "none"), mentions=("حفتر", "ليبي"))
    >>> task.absent(["passage: قوات حفتر", "passage: مباراة الأهلي"])
    array([False,  True])
    """

    name: str
    labels: tuple[str, ...]
    weight: float = 1.0
    class_weights: str | tuple[float, ...] | None = None
    mentions: tuple[str, ...] = ()
    label2id: dict[str, int] = field(init=False, repr=False, compare=False)
    _patterns: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label2id", {label: i for i, label in enumerate(self.labels)})
        if isinstance(self.mentions, str):  # a lone string would become one expression per letter
            raise SchemaError(f"task {self.name!r}: mentions must be a list of expressions, got {self.mentions!r}")
        if self.mentions and "none" not in self.label2id:  # e.g. a hand-edited config.json
            raise SchemaError(f"task {self.name!r}: mentions need a 'none' label, the labels are {list(self.labels)}")
        object.__setattr__(self, "_patterns", tuple(_compile_mention(m, f"task {self.name!r}") for m in self.mentions))

    def absent(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, whether it mentions none of ``mentions`` (all ``False`` when none are declared)."""
        if not self._patterns:
            return np.zeros(len(texts), dtype=bool)
        folded = (fold_spelling(text) for text in texts)
        return np.array([not any(p.search(text) for p in self._patterns) for text in folded], dtype=bool)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "labels": list(self.labels), "weight": self.weight}
        if self.class_weights is not None:
            out["class_weights"] = (
                self.class_weights if isinstance(self.class_weights, str) else list(self.class_weights)
            )
        if self.mentions:
            out["mentions"] = list(self.mentions)
        return out


def parse_tasks(raw: Any, where: str = "tasks") -> list[Task]:
    """Validate the ``tasks:`` list of a config and return :class:`Task` objects.

    >>> [t.name for t in parse_tasks([{"name": "topic", "labels": ["a", "b"]}])]
    ['topic']
    """
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SchemaError(f"{where}: expected a non-empty list of tasks, got {raw!r}")
    tasks, seen = [], set()
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise SchemaError(f"{here}: expected a mapping with 'name' and 'labels', got {item!r}")
        unknown = set(item) - {"name", "labels", "weight", "class_weights", "mentions"}
        if unknown:
            raise SchemaError(
                f"{here}: unknown key(s) {sorted(unknown)}; allowed: name, labels, weight, class_weights, mentions"
            )
        name = item.get("name")
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise SchemaError(f"{here}.name: expected an identifier like 'topic', got {name!r}")
        if name in seen:
            raise SchemaError(f"{here}.name: duplicate task name {name!r}")
        seen.add(name)
        tasks.append(
            Task(
                name=name,
                labels=_parse_labels(item.get("labels"), f"{here}.labels ({name})"),
                weight=_parse_weight(item.get("weight", 1.0), f"{here}.weight ({name})"),
                class_weights=_parse_class_weights(item.get("class_weights"), len(item["labels"]), here),
                mentions=_parse_mentions(item.get("mentions"), item["labels"], f"{here}.mentions ({name})"),
            )
        )
    return tasks


def _parse_labels(labels: Any, where: str) -> tuple[str, ...]:
    if not isinstance(labels, list) or len(labels) < 2:
        raise SchemaError(f"{where}: expected a list of at least 2 labels, got {labels!r}")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise SchemaError(f"{where}: labels must be non-empty strings, got {label!r}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SchemaError(f"{where}: duplicate label(s) {duplicates}")
    return tuple(labels)


def _parse_weight(weight: Any, where: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise SchemaError(f"{where}: expected a non-negative number, got {weight!r}")
    return float(weight)


def _parse_class_weights(value: Any, n_labels: int, where: str) -> str | tuple[float, ...] | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, list) and len(value) == n_labels and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value
    ):
        return tuple(float(v) for v in value)
    raise SchemaError(
        f"{where}.class_weights: expected 'auto', null or {n_labels} positive numbers, got {value!r}"
    )


def _parse_mentions(value: Any, labels: list[str], where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m.strip() for m in value):
        raise SchemaError(f"{where}: expected a non-empty list of regular expressions, got {value!r}")
    if "none" not in labels:
        raise SchemaError(f"{where}: an article mentioning none of them is labelled 'none', "
                          f"but the task's labels {labels} have no 'none'")
    for m in value:
        _compile_mention(m, where)
    return tuple(value)


def _compile_mention(expression: str, where: str) -> re.Pattern:
    """One ``mentions`` expression compiled as it is matched: spelling-folded like the texts."""
    try:
        return re.compile(fold_letters(expression))
    except re.error as e:
        raise SchemaError(f"{where}: {expression!r} is not a regular expression ({e})") from None


def inverse_frequency_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """Class weights ``n / (k * n_c)``; unseen classes get the largest seen weight.

    >>> inverse_frequency_weights([30, 10])
    (0.6667, 2.0)
    """
    total, k = sum(counts), len(counts)
    seen = [total / (k * c) for c in counts if c > 0]
    cap = max(seen) if seen else 1.0
    return tuple(round(total / (k * c), 4) if c > 0 else round(cap, 4) for c in counts)
