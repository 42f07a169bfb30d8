"""Label Studio export → nabaa's labelled JSONL, validated like any training file.

    python -m training.import_labels --export project-1-at-2026-12-03.json --config configs/demo.yaml --out new_labels.jsonl
    python -m training.import_labels --export export.json --model runs/demo/best --out new_labels.jsonl

The export is Label Studio's "JSON" export of a project whose tasks came from
``inference.select`` (``<picks>.labelstudio.json`` and its labelling config): each task's
``data`` holds the article (``id``, ``title``, ``text``, …) and each ``choices`` control is named
after a nabaa task. Per task the latest annotation that was not cancelled is used; a task without
one is left out (and counted). A task labelled for some heads only gives a partially annotated
record, which training accepts (the other heads' losses are masked).

The output is checked by :func:`training.data.load_labelled` with the tasks and preprocessing of
``--config`` or ``--model``; problems are reported per Label Studio task and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.writers import json_line
from model.preprocess import Preprocessing, build_preprocessing
from model.schema import Task
from training.config import DataArgs, load_config
from training.data import DataError, load_labelled

# Fields select adds to a Label Studio task's data for sorting in the UI, not article fields.
_SELECT_ONLY_FIELDS = ("uncertainty",)


class ExportError(ValueError):
    """The export cannot be turned into labelled records; the message says where."""


@dataclass
class ImportSummary:
    written: int
    unlabelled: int
    out: Path


def load_export(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The list of tasks of a Label Studio JSON export."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ExportError(f"{path}: no such file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not a JSON file ({e}); export the project as 'JSON'") from e
    if not isinstance(tasks, list) or any(not isinstance(t, dict) or "data" not in t for t in tasks):
        raise ExportError(f"{path}: expected Label Studio's 'JSON' export (a list of tasks with 'data' and "
                          "'annotations'); JSON-MIN and CSV exports do not carry enough to import")
    return tasks


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The most recently updated annotation that was not cancelled (list order breaks ties)."""
    kept = [(a.get("updated_at") or a.get("created_at") or "", i, a)
            for i, a in enumerate(task.get("annotations") or []) if not a.get("was_cancelled")]
    return max(kept, key=lambda item: (item[0], item[1]))[2] if kept else None


def annotation_labels(annotation: dict[str, Any], tasks: Sequence[Task], where: str) -> dict[str, str]:
    """Task name → chosen label from an annotation's ``choices`` results."""
    names = [t.name for t in tasks]
    labels: dict[str, str] = {}
    for item in annotation.get("result") or []:
        if item.get("type") != "choices":
            continue  # other controls (comments, spans) are not nabaa labels
        name = item.get("from_name")
        if name not in names:
            raise ExportError(f"{where}: choices control {name!r} is not a task of the model; tasks: {', '.join(names)}")
        chosen = (item.get("value") or {}).get("choices") or []
        if len(chosen) != 1:
            raise ExportError(f"{where}: field '{name}': expected exactly one choice, got {chosen!r}")
        labels[name] = chosen[0]
    return labels


def to_records(export: list[dict[str, Any]], tasks: Sequence[Task], export_name: str) -> tuple[list[dict], list[str], int]:
    """nabaa records, where each came from (for error messages), and how many tasks had no labels."""
    task_names = {t.name for t in tasks}
    records, origins, unlabelled = [], [], 0
    for i, item in enumerate(export, start=1):
        where = f"{export_name}: task #{i} (Label Studio id {item.get('id')})"
        annotation = latest_annotation(item)
        labels = annotation_labels(annotation, tasks, where) if annotation else {}
        if not labels:
            unlabelled += 1
            continue
        data = {k: v for k, v in item["data"].items() if k not in task_names and k not in _SELECT_ONLY_FIELDS}
        records.append({**data, **labels})
        origins.append(where)
    return records, origins, unlabelled


def _locate(message: str, tmp: Path, origins: Sequence[str]) -> str:
    """Replace ``tmp:LINE`` in validation messages by the Label Studio task it came from."""
    pattern = re.compile(re.escape(str(tmp)) + r":(\d+)")
    return pattern.sub(lambda m: origins[int(m.group(1)) - 1], message).replace(str(tmp), "the export")


def import_labels(export: str | os.PathLike, out: str | os.PathLike, tasks: Sequence[Task], pre: Preprocessing,
                  data: DataArgs | None = None) -> ImportSummary:
    """Convert, validate (every problem listed, nothing written on failure) and write atomically.

    >>> import_labels("export.json", "labels.jsonl", cfg.tasks, build_preprocessing(cfg.model))  # doctest: +SKIP
    ImportSummary(written=200, unlabelled=0, out=PosixPath('labels.jsonl'))
    """
    data = data or DataArgs()
    records, origins, unlabelled = to_records(load_export(export), tasks, str(export))
    if not records:
        raise ExportError(f"{export}: no task has an annotation; label some articles before exporting")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Validated under a .jsonl name (the record reader goes by the suffix), renamed when clean.
    tmp = out.with_name(out.name + ".importing.jsonl")
    tmp.write_text("".join(json_line(r) for r in records), encoding="utf-8")
    try:
        # A batch may label some heads only (e.g. picked with --task): it is checked on the heads
        # it labels; "no record labels task X" is a rule for a whole training file, not a batch.
        labelled = [t for t in tasks if any(t.name in r for r in records)]
        load_labelled(str(tmp), data, labelled, pre)
    except DataError as e:
        tmp.unlink()
        raise ExportError(_locate(str(e), tmp, origins)) from None
    os.replace(tmp, out)
    return ImportSummary(len(records), unlabelled, out)


def schema_from(config: str | None, model: str | None) -> tuple[list[Task], Preprocessing]:
    """Tasks and preprocessing from a training config or a trained model folder."""
    if model:
        from model.modeling import MultiTaskConfig

        return MultiTaskConfig.from_pretrained(model).schema(), Preprocessing.load(model)
    cfg = load_config(config)
    return list(cfg.tasks), build_preprocessing(cfg.model)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.import_labels",
                                description="Turn a Label Studio JSON export into nabaa's labelled JSONL.")
    p.add_argument("--export", required=True, help="Label Studio 'JSON' export")
    p.add_argument("--out", required=True, help="labelled JSONL to write")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="training config whose tasks and preprocessing validate the labels")
    source.add_argument("--model", help="or a trained model folder (its tasks and preprocessing)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--title-field", default="title")
    p.add_argument("--id-field", default="id")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tasks, pre = schema_from(args.config, args.model)
        summary = import_labels(args.export, args.out, tasks, pre,
                                DataArgs(text_field=args.text_field, title_field=args.title_field or None,
                                         id_field=args.id_field))
    except (ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary.written} labelled article(s) to {summary.out}"
          + (f"; {summary.unlabelled} task(s) without annotations left out" if summary.unlabelled else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
