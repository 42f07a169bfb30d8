"""Run configuration: typed dataclasses filled from a YAML file plus ``key=value`` overrides.

    >>> cfg = load_config("configs/tiny.yaml", ["train.epochs=2", "output_dir=/tmp/run"])  # doctest: +SKIP
    >>> cfg.train.epochs
    2

Overrides name ``section.field`` (``train.learning_rate=3e-5``) or a bare field
that exists in exactly one section (``epochs=2``, ``output_dir=PATH``). Values are
parsed as YAML and checked against the field's type; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.schema import SchemaError, Task, parse_tasks


class ConfigError(ValueError):
    """The config file or an override is invalid (raised before any work starts)."""


@dataclass
class ModelArgs:
    backbone: str = "tiny"  # hub id, local folder, "embedded:multilingual-e5-small[?vocab=arabic]" or "tiny"
    pooling: str = "cls"  # cls | mean
    head_dropout: float = 0.1
    normalizer: str = "auto"  # auto (from the backbone's tokenizer vocabulary or name) | none | arabert_v02
    text_prefix: str | None = None  # None = from the backbone name ("passage: " for E5)
    max_length: int = 256
    stride: int = 32
    max_windows: int = 4
    predict_max_windows: int = 16
    aggregation: str = "mean"  # mean | max | first
    freeze_embeddings: bool = False  # CPU speed: the embedding matrix is most of a small encoder
    freeze_layers: int = 0  # keep the lowest N encoder layers fixed (less backward work)
    # Backbone checkpoints with only pickle weights (pytorch_model.bin) are refused: loading a
    # pickle can run code. true = load them anyway (a checkpoint whose source you trust).
    allow_pickle_weights: bool = False
    tiny_vocab_size: int = 3000
    tiny_hidden_size: int = 64
    tiny_layers: int = 2


@dataclass
class DataArgs:
    train_file: str = ""
    dev_file: str = ""
    test_file: str | None = None
    text_field: str = "text"
    title_field: str | None = "title"
    id_field: str = "id"
    limit_train: int | None = None  # use only the first N training articles (quick experiments)
    sample_train: int | None = None  # use a random N of the training articles (after limit_train)
    skip_invalid: bool = False  # report invalid records and train without them, instead of stopping
    sample_seed: int = 0  # seed of that sample (the model and the baseline see the same articles)
    # A field holding soft labels, {task: [probability per label, in the task's label order]}: a
    # teacher's scores for distillation (training.distill writes them). A record may then carry
    # soft labels only (an unlabelled dump article); the gold labels stay where they exist.
    soft_label_field: str | None = None


@dataclass
class TrainArgs:
    output_dir: str | None = None  # default runs/<name>
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None  # None = learning_rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto (bf16 on a bf16 GPU or a CPU measured fast in bf16, else no) | no | bf16 | fp16
    # article: batch_size articles per batch, loss on their window logits aggregated the way
    # predictions are (model.aggregation); window: batch_size windows, each with its article's labels
    loss_on: str = "article"
    # Frozen embeddings + lowest model.freeze_layers layers computed once per run (memory-mapped
    # under the run folder) instead of every epoch: auto = on when both are frozen | true | false
    feature_cache: bool | str = "auto"
    seed: int = 42
    patience: int = 2  # epochs without dev improvement before stopping
    save_every_steps: int = 0  # 0 = checkpoint at the end of each epoch only
    keep_checkpoints: int = 2
    num_workers: int = 0
    log_every_steps: int = 10
    report_to: list[str] = field(default_factory=list)  # e.g. [tensorboard]
    # Seconds a process waits for the others at a collective (barrier, gather) before the run
    # fails: rank 0 alone builds a backbone, saves best/ and checkpoints while the others wait.
    process_group_timeout: int = 7200
    calibrate: bool = True
    baseline: bool = True  # TF-IDF + logistic regression beside the model in reports
    # Save the TF-IDF model in best/ and mix it into each task's scores with a weight chosen on dev
    # (0 where it does not help); see model/lexical.py.
    fuse_lexical: bool = True
    # The most weight the TF-IDF model may get in a task's mix, per task name (tasks not named: up to
    # 0.9), e.g. {stance_gna: 0.5}: for users whose own articles show TF-IDF misreading their outlets.
    # The shipped configs set none (docs/results.md §0, "How much of the demo's stance is TF-IDF's").
    max_lexical_weight: dict[str, float] = field(default_factory=dict)
    final_report: bool = True
    # Record fields whose every value gets an accuracy row in the dev/test reports (model, transformer
    # alone, TF-IDF), e.g. [outlet, source]: where the model is weak, not only how much.
    report_by: list[str] = field(default_factory=list)
    # Records with soft labels (data.soft_label_field): the loss is distill_weight x the soft
    # cross-entropy (student and soft labels at distill_temperature, scaled by its square) plus
    # (1 - distill_weight) x the gold labels' cross-entropy.
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    # Cross-entropy against (1 - e) x the gold label + e spread over all labels: a model less sure
    # of the training writers' conventions, whose scores leave the TF-IDF mix more say on text
    # unlike its training set (docs/results.md §0g). 0 = plain cross-entropy.
    label_smoothing: float = 0.0


@dataclass
class RunConfig:
    name: str = "run"
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    tasks: list[Task] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name}
        for section in ("model", "data", "train"):
            out[section] = asdict(getattr(self, section))
        out["tasks"] = [t.to_dict() for t in self.tasks]
        return out

    def dump(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")
        tmp.replace(path)


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
SECTIONS = {"model": ModelArgs, "data": DataArgs, "train": TrainArgs}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply ``key=value`` overrides and validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: config file not found") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    where = str(path or "<overrides>")
    unknown = set(raw) - {"name", "tasks", *SECTIONS}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}; allowed: name, model, data, train, tasks")
    sections = {name: _build_section(name, raw.get(name) or {}, where) for name in SECTIONS}
    name = raw.get("name", "run")
    for item in overrides or []:
        name = _apply_override(sections, item, name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    try:
        tasks = parse_tasks(_read_mention_files(raw.get("tasks"), path, where), where=f"{where}: tasks")
    except SchemaError as e:
        raise ConfigError(str(e)) from e
    for attr in ("train_file", "dev_file", "test_file"):
        value = getattr(sections["data"], attr)
        if value:  # ${ANT_DIR}/train.jsonl: data locations may come from the environment
            setattr(sections["data"], attr, os.path.expandvars(value))
    cfg = RunConfig(name=name, tasks=tasks, **sections)
    _check_choices(cfg, where)
    return cfg


def _read_mention_files(tasks: Any, path: str | Path | None, where: str) -> Any:
    """Tasks whose ``mentions`` is a file name (relative to the config's folder) get the file's
    lines instead: one regular expression a line, blank lines and ``#`` comments skipped. Several
    configs then share one list, and the run's saved config holds the expanded list."""
    if not isinstance(tasks, list):
        return tasks
    folder = Path(path).parent if path is not None else Path.cwd()
    out = []
    for i, task in enumerate(tasks):
        if isinstance(task, dict) and isinstance(task.get("mentions"), str):
            file = folder / task["mentions"]
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"{where}: tasks[{i}].mentions: cannot read {file} ({e.strerror})") from None
            task = {**task, "mentions": [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]}
        out.append(task)
    return out


def _build_section(name: str, values: Any, where: str) -> Any:
    cls = SECTIONS[name]
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} in '{name}'; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    checked = {k: _check_type(v, hints[k], f"{where}: {name}.{k}") for k, v in values.items()}
    return cls(**checked)


def _apply_override(sections: dict[str, Any], item: str, name: str) -> str:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
    if key == "name":
        return str(value)
    if "." in key:
        section, attr = key.split(".", 1)
        if section not in sections:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; use one of {sorted(SECTIONS)}")
    else:
        owners = [s for s, obj in sections.items() if attr_exists(obj, key)]
        if len(owners) != 1:
            raise ConfigError(
                f"override {item!r}: unknown key {key!r}" if not owners else
                f"override {item!r}: {key!r} is ambiguous, write one of {[f'{s}.{key}' for s in owners]}"
            )
        section, attr = owners[0], key
    obj = sections[section]
    if not attr_exists(obj, attr):
        raise ConfigError(f"override {item!r}: unknown key {attr!r} in '{section}'")
    hint = typing.get_type_hints(type(obj))[attr]
    setattr(obj, attr, _check_type(value, hint, f"override {key}"))
    return name


def attr_exists(obj: Any, attr: str) -> bool:
    return attr in {f.name for f in dataclasses.fields(obj)}


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` converted to ``hint`` where that is lossless, else raise."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: must not be null (expected {_type_name(hint)})")
    for option in options:
        if option is type(None):
            continue
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads "3e-5" (no dot) as a string
        if option is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            # YAML reads 2019 or 1e-5 as numbers; a str field (a path, a name) takes them as text.
            return value if isinstance(value, str) else str(value)
        if typing.get_origin(option) is dict and isinstance(value, dict):
            key_type, value_type = typing.get_args(option)
            return {_check_type(k, key_type, f"{where} key"): _check_type(v, value_type, f"{where}.{k}")
                    for k, v in value.items()}
        if typing.get_origin(option) is list and isinstance(value, list):
            (item_type,) = typing.get_args(option)
            return [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_choices(cfg: RunConfig, where: str) -> None:
    choices = {
        ("model", "pooling"): ("cls", "mean"),
        ("model", "aggregation"): ("mean", "max", "first"),
        ("model", "normalizer"): ("auto", "none", "arabert_v02"),
        ("train", "mixed_precision"): ("auto", "no", "bf16", "fp16"),
        ("train", "loss_on"): ("article", "window"),
    }
    for (section, attr), allowed in choices.items():
        value = getattr(getattr(cfg, section), attr)
        if value not in allowed:
            raise ConfigError(f"{where}: {section}.{attr} = {value!r}; allowed: {list(allowed)}")
    positive = [("train", "epochs"), ("train", "batch_size"), ("train", "eval_batch_size"),
                ("train", "gradient_accumulation_steps"), ("model", "max_length"), ("model", "max_windows"),
                ("model", "predict_max_windows"), ("train", "process_group_timeout")]
    for section, attr in positive:
        if getattr(getattr(cfg, section), attr) < 1:
            raise ConfigError(f"{where}: {section}.{attr} must be at least 1")
    if cfg.train.feature_cache not in (True, False, "auto"):
        raise ConfigError(f"{where}: train.feature_cache = {cfg.train.feature_cache!r}; allowed: [auto, true, false]")
    if cfg.train.feature_cache is True and not (cfg.model.freeze_embeddings and cfg.model.freeze_layers > 0):
        raise ConfigError(f"{where}: train.feature_cache = true needs model.freeze_embeddings: true and "
                          f"model.freeze_layers > 0 (only frozen layers give the same output every epoch)")
    if cfg.train.learning_rate <= 0:
        raise ConfigError(f"{where}: train.learning_rate must be positive")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ConfigError(f"{where}: train.label_smoothing = {cfg.train.label_smoothing}; must be in [0, 1)")
    if not 0.0 <= cfg.train.distill_weight <= 1.0:
        raise ConfigError(f"{where}: train.distill_weight = {cfg.train.distill_weight}; must be in [0, 1]")
    if cfg.train.distill_temperature <= 0:
        raise ConfigError(f"{where}: train.distill_temperature must be positive")
    _check_lexical_ceilings(cfg, where)
    for unknown in set(cfg.train.report_to) - {"tensorboard"}:
        raise ConfigError(f"{where}: train.report_to: unknown tracker {unknown!r}; supported: ['tensorboard']")


def _check_lexical_ceilings(cfg: RunConfig, where: str) -> None:
    names = [t.name for t in cfg.tasks]
    for task, ceiling in cfg.train.max_lexical_weight.items():
        if task not in names:
            raise ConfigError(f"{where}: train.max_lexical_weight names task {task!r}; the tasks are {names}")
        if not 0.0 <= ceiling <= 1.0:
            raise ConfigError(f"{where}: train.max_lexical_weight.{task} = {ceiling}; must be in [0, 1]")
