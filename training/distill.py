"""Distil a trained model into a smaller student: fewer encoder layers, so scoring costs
fewer FLOPs on CPUs without a matrix-multiply shortcut (AVX2, AVX-512 without AMX).

Commands (run from the repository root)::

    # teacher's soft labels over its training articles + an unlabelled dump, a 6-layer student
    python -m training.distill --teacher runs/demo/best --layers 6 --unlabelled dump.jsonl.gz
    # any training override applies to the student's run
    python -m training.distill --teacher runs/demo/best --layers 6 --unlabelled dump.jsonl.gz train.epochs=3
    # prepare only, then train the student with accelerate (several processes / GPUs)
    python -m training.distill --teacher runs/demo/best --layers 6 --unlabelled dump.jsonl.gz --prepare-only
    accelerate launch -m training.train --config runs/demo-student6/distill/student.yaml

What it does, in ``--output`` (default ``runs/<teacher run>-student<L>``):

1. ``distill/soft_labels.jsonl``: the teacher's calibrated probabilities (``teacher`` field) for
   every article of its training file (their gold labels kept) and for the unlabelled articles
   (``--limit`` caps them). Unlabelled articles whose id or text is in the training, dev or test
   files are left out, so dev and test stay unseen.
2. ``distill/backbone/``: the student encoder: the teacher's embeddings, its lowest layers and
   the layers it fine-tuned (by default; ``--layer-ids`` picks others), as a plain
   ``save_pretrained`` folder with the teacher's tokenizer.
3. ``distill/student.yaml``: the teacher's resolved config with the student's backbone, the soft
   labels file as training data (``data.soft_label_field: teacher``), the kept pretrained layers
   frozen (their output cached once, ``train.feature_cache``), and the distillation loss settings.
4. A normal training run in ``--output`` (``best/``, calibration, lexical fusion, reports), which
   ``inference`` loads like any other model folder.

Re-running with the same arguments reuses finished steps (each is written atomically).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from model.preprocess import EmptyTextError
from model.records import iter_records
from model.serialization import RUN_CONFIG_FILE, atomic_replace_dir
from training.config import ConfigError, RunConfig, load_config

SOFT_FIELD = "teacher"
LABEL_BATCH = 64


@dataclass
class DistillPlan:
    """Where a distillation writes, and what it keeps of the teacher."""

    teacher: Path
    output: Path
    layer_ids: list[int]
    frozen: int  # leading student layers kept as pretrained (frozen, their output cached)

    @property
    def work(self) -> Path:
        return self.output / "distill"

    @property
    def soft_labels(self) -> Path:
        return self.work / "soft_labels.jsonl"

    @property
    def backbone(self) -> Path:
        return self.work / "backbone"

    @property
    def config(self) -> Path:
        return self.work / "student.yaml"


def student_layer_ids(teacher_layers: int, student_layers: int, teacher_frozen: int) -> tuple[list[int], int]:
    """The teacher layers a student keeps, and how many of its leading ones stay frozen.

    The teacher's fine-tuned top layers (those above ``teacher_frozen``) carry what it learned;
    the rest of the student's depth is filled with the lowest pretrained layers, which stay
    frozen. A student smaller than the fine-tuned part keeps the fine-tuned top only.

    >>> student_layer_ids(12, 6, 9)
    ([0, 1, 2, 9, 10, 11], 3)
    >>> student_layer_ids(12, 4, 6)
    ([8, 9, 10, 11], 0)
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"--layers must be between 1 and the teacher's {teacher_layers}, got {student_layers}")
    tuned = min(teacher_layers - teacher_frozen, student_layers)
    bottom = student_layers - tuned
    return list(range(bottom)) + list(range(teacher_layers - tuned, teacher_layers)), bottom


def teacher_config(teacher: Path) -> RunConfig:
    """The resolved config saved in the teacher's folder (``run_config.yaml``)."""
    path = teacher / RUN_CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{teacher}: no {RUN_CONFIG_FILE}; is it a model folder written by training.train?")
    return load_config(path)


def build_student_backbone(classifier: Any, layer_ids: Sequence[int], dest: Path) -> Path:
    """Save the teacher encoder's embeddings and ``layer_ids`` layers (in order) as a backbone folder."""
    from transformers import AutoModel

    encoder = classifier.model.encoder.float()
    config = copy.deepcopy(encoder.config)
    config.num_hidden_layers = len(layer_ids)
    student = AutoModel.from_config(config, add_pooling_layer=False)
    student.embeddings.load_state_dict(encoder.embeddings.state_dict())
    for position, index in enumerate(layer_ids):
        student.encoder.layer[position].load_state_dict(encoder.encoder.layer[index].state_dict())

    def write(folder: Path) -> None:
        student.save_pretrained(folder, safe_serialization=True)
        classifier.tokenizer.save_pretrained(folder)
        (folder / "distilled_from.json").write_text(json.dumps({"layer_ids": list(layer_ids)}) + "\n")

    return atomic_replace_dir(write, dest)


def _held_out(cfg: RunConfig, classifier: Any) -> tuple[set[str], set[str]]:
    """Ids and normalised texts (title aside) of the training, dev and test files: unlabelled
    articles that repeat one are not distilled on (dev and test must stay unseen by the student)."""
    ids, texts = set(), set()
    for path in (cfg.data.train_file, cfg.data.dev_file, cfg.data.test_file):
        if not path:
            continue
        for rec in iter_records(path):
            if rec.error:
                continue
            ids.add(str(rec.data.get(cfg.data.id_field)))
            body = _prepared(classifier, rec.data, with_title=False)
            if body is not None:
                texts.add(body)
    return ids, texts


def _prepared(classifier: Any, record: dict[str, Any], with_title: bool = True) -> str | None:
    title = record.get(classifier.title_field) if classifier.title_field and with_title else None
    try:
        return classifier.prepare(record.get(classifier.text_field), title)
    except (EmptyTextError, TypeError):
        return None


def _articles(cfg: RunConfig, classifier: Any, unlabelled: Sequence[str], limit: int | None,
              skipped: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The training file's records (gold labels kept), then unlabelled ones not held out."""
    held_ids, held_texts = _held_out(cfg, classifier)
    fields = [cfg.data.id_field, cfg.data.text_field, *([cfg.data.title_field] if cfg.data.title_field else [])]
    keep = [*fields, *(t.name for t in cfg.tasks)]
    for rec in iter_records(cfg.data.train_file):
        if not rec.error and _prepared(classifier, rec.data) is not None:
            yield {k: rec.data[k] for k in keep if k in rec.data}
    taken = 0
    for path in unlabelled:
        for rec in iter_records(path):
            if limit is not None and taken >= limit:
                return
            # One normalisation per record: the body (title aside) both checks the text and is the
            # key compared with the labelled articles'.
            body = None if rec.error else _prepared(classifier, rec.data, with_title=False)
            rid = None if rec.error else rec.data.get(cfg.data.id_field)
            if body is None:
                reason = f"{path}: unreadable record or empty text"
            elif rid is None or str(rid) in held_ids or body in held_texts:
                reason = f"{path}: no id, a repeated id, or the id/text of a labelled article"
            else:
                reason = None
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            held_ids.add(str(rid))
            taken += 1
            yield {k: rec.data[k] for k in fields if k in rec.data}


def write_soft_labels(cfg: RunConfig, classifier: Any, unlabelled: Sequence[str], dest: Path,
                      limit: int | None = None) -> dict[str, int]:
    """Write every distillation article with the teacher's probabilities; return counts."""
    skipped: dict[str, int] = {}
    tmp = dest.with_name(dest.name + ".tmp")
    counts = {"labelled": 0, "unlabelled": 0}
    task_names = {t.name for t in cfg.tasks}
    bar = tqdm(desc="teacher soft labels", unit="article", dynamic_ncols=True)
    with open(tmp, "w", encoding="utf-8") as out:
        batch: list[dict[str, Any]] = []
        for record in _articles(cfg, classifier, unlabelled, limit, skipped):
            batch.append(record)
            if len(batch) == LABEL_BATCH:
                _write_batch(batch, classifier, out, counts, task_names)
                bar.update(len(batch))
                batch = []
        if batch:
            _write_batch(batch, classifier, out, counts, task_names)
            bar.update(len(batch))
    bar.close()
    os.replace(tmp, dest)
    for reason, n in skipped.items():
        print(f"skipped {n} unlabelled article(s): {reason}", file=sys.stderr)
    return counts


def _write_batch(batch: list[dict[str, Any]], classifier: Any, out: Any, counts: dict[str, int],
                 task_names: set[str]) -> None:
    probs = classifier.predict_proba(batch)
    for row, record in enumerate(batch):
        record[SOFT_FIELD] = {name: [round(float(p), 6) for p in values[row]] for name, values in probs.items()}
        counts["labelled" if any(record.get(name) for name in task_names) else "unlabelled"] += 1
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def student_config(cfg: RunConfig, classifier: Any, plan: DistillPlan, overrides: Sequence[str]) -> RunConfig:
    """The teacher's config turned into the student's run (then the user's overrides)."""
    base = [
        f"name={cfg.name}-student{len(plan.layer_ids)}",
        f"output_dir={plan.output}",
        f"model.backbone={plan.backbone.resolve()}",
        # The teacher's own preprocessing, not re-derived from the student folder's name.
        f"model.normalizer={json.dumps(classifier.pre.normalizer)}",
        f"model.text_prefix={json.dumps(classifier.pre.text_prefix)}",
        "model.freeze_embeddings=true",
        f"model.freeze_layers={plan.frozen}",
        f"data.train_file={plan.soft_labels.resolve()}",
        f"data.soft_label_field={SOFT_FIELD}",
        "data.limit_train=null",
        "data.sample_train=null",
    ]
    teacher_yaml = plan.teacher / RUN_CONFIG_FILE
    return load_config(teacher_yaml, [*base, *overrides])


def prepare(teacher: Path, layers: int, unlabelled: Sequence[str], output: Path | None = None,
            limit: int | None = None, layer_ids: Sequence[int] | None = None,
            overrides: Sequence[str] = ()) -> DistillPlan:
    """Steps 1-3 of the module docstring; returns the plan (``plan.config`` is the student's config).

    >>> plan = prepare(Path("runs/demo/best"), 6, ["dump.jsonl.gz"])  # doctest: +SKIP
    >>> training.train.main(["--config", str(plan.config)])  # doctest: +SKIP
    """
    from inference import Classifier

    cfg = teacher_config(teacher)
    classifier = Classifier.from_pretrained(teacher, dtype="fp32", keep_freed_memory=True)
    n_teacher = classifier.model.encoder.config.num_hidden_layers
    frozen_teacher = cfg.model.freeze_layers if cfg.model.freeze_embeddings else 0
    if layer_ids:
        ids, frozen = list(layer_ids), _leading_pretrained(layer_ids, frozen_teacher)
        if any(not 0 <= i < n_teacher for i in ids):
            raise ValueError(f"--layer-ids: the teacher has layers 0-{n_teacher - 1}, got {ids}")
    else:
        ids, frozen = student_layer_ids(n_teacher, layers, frozen_teacher)
    plan = DistillPlan(teacher, output or Path(f"runs/{cfg.name}-student{len(ids)}"), ids, frozen)
    plan.work.mkdir(parents=True, exist_ok=True)
    if not plan.soft_labels.exists():
        counts = write_soft_labels(cfg, classifier, unlabelled, plan.soft_labels, limit)
        print(f"soft labels: {counts['labelled']} training + {counts['unlabelled']} unlabelled articles "
              f"-> {plan.soft_labels}")
    if not (plan.backbone / "config.json").exists():
        build_student_backbone(classifier, ids, plan.backbone)
    student_config(cfg, classifier, plan, overrides).dump(plan.config)
    print(f"student: teacher layers {ids} (first {frozen} frozen) -> {plan.backbone}\nconfig: {plan.config}")
    return plan


def _leading_pretrained(layer_ids: Sequence[int], frozen_teacher: int) -> int:
    """How many leading chosen layers are consecutive pretrained ones (0, 1, 2, … below the
    teacher's frozen boundary): those keep their frozen, cacheable output in the student too."""
    count = 0
    for position, index in enumerate(layer_ids):
        if index != position or index >= frozen_teacher:
            break
        count += 1
    return count


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.distill",
                                     description="Distil a trained model folder into a student with fewer layers.")
    parser.add_argument("--teacher", required=True, type=Path, help="a trained model folder (e.g. runs/demo/best)")
    parser.add_argument("--layers", type=int, default=6, help="encoder layers of the student (default 6)")
    parser.add_argument("--layer-ids", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="teacher layers to keep, e.g. 0,1,2,9,10,11 (default: see the module docstring)")
    parser.add_argument("--unlabelled", nargs="*", default=[],
                        help="unlabelled article files (JSONL/CSV/Parquet, .gz) the teacher labels")
    parser.add_argument("--limit", type=int, default=None, help="at most this many unlabelled articles")
    parser.add_argument("--output", type=Path, default=None, help="the student's run folder")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write soft labels, backbone and config; do not train")
    parser.add_argument("overrides", nargs="*", help="student config overrides, e.g. train.epochs=3")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = prepare(args.teacher, args.layers, args.unlabelled, args.output, args.limit,
                       args.layer_ids, args.overrides)
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.prepare_only:
        return 0
    from training.train import main as train_main

    return train_main(["--config", str(plan.config)])


if __name__ == "__main__":
    sys.exit(main())
