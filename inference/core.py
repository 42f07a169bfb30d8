"""What both scoring engines share: the run's settings, one record's validation, scores with
in-run dedup of identical texts, one output file with its errors and manifest, the summary.

The single-process scorer (:mod:`inference.score`) and ``--engine ray``
(:mod:`inference.ray_engine`) both build their rows with these, so they agree row for row.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inference.jobs import FileJob, errors_path, write_manifest
from inference.writers import RowWriter, json_line, plain_value
from model.hardware import ProbeShape, probe_shape_of
from model.preprocess import EmptyTextError, Preprocessing
from model.records import RawRecord
from model.serialization import CALIBRATION_FILE, check_model_folder, model_fingerprint

EXIT_OK, EXIT_USAGE, EXIT_BAD_RECORDS, EXIT_INCOMPLETE = 0, 2, 3, 4


@dataclass
class ScoreArgs:
    model: str
    input: str
    output: str
    # None: the model's own (its preprocess.json); title_field "": ignore titles.
    text_field: str | None = None
    id_field: str | None = None
    title_field: str | None = None
    probs: bool = False
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    quantize: str | None = None
    dtype: str = "auto"
    batch_size: int | None = None
    max_batch_tokens: int | None = None
    buffer_size: int = 256
    format: str = "parquet"
    keep: list[str] = field(default_factory=list)
    keep_all: bool = False
    dedup: bool = True
    dedup_cache: int = 200_000
    engine: str = "local"
    address: str | None = None
    actors: int | None = None
    threads_per_actor: int | None = None
    block_records: int = 256
    process_group_timeout: int = 86400


@dataclass
class Summary:
    """What a run did. ``duplicates`` are repeated ids (reported); ``repeated_texts`` are rows whose
    prepared text had already been scored in this run (scored once, written every time)."""

    scored: int = 0
    errors: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    scored_this_run: int = 0
    repeated_texts: int = 0
    files: int = 0
    files_skipped: int = 0
    calibrated: bool = True

    @property
    def per_second(self) -> float:
        return self.scored_this_run / self.seconds if self.seconds else 0.0

    def add(self, other: Summary) -> None:
        for name in ("scored", "errors", "duplicates", "scored_this_run", "repeated_texts", "files", "files_skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.calibrated = self.calibrated and other.calibrated

    def counts(self) -> dict[str, int]:
        """The counts a manifest records for one output file."""
        return {"rows": self.scored, "errors": self.errors, "duplicates": self.duplicates,
                "input_records": self.scored + self.errors, "repeated_texts": self.repeated_texts}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Summary:
        return cls(scored=manifest.get("rows", 0), errors=manifest.get("errors", 0),
                   duplicates=manifest.get("duplicates", 0), repeated_texts=manifest.get("repeated_texts", 0),
                   files=1, files_skipped=1)


class TextCache:
    """Probabilities of prepared texts already scored, by a 128-bit hash of the text (LRU, bounded).

    >>> cache = TextCache(2); cache.put(TextCache.key("a"), {"topic": [1.0]}); cache.get(TextCache.key("a"))
    {'topic': [1.0]}
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[bytes, dict[str, list[float]]] = OrderedDict()

    @staticmethod
    def key(prepared: str) -> bytes:
        return hashlib.blake2b(prepared.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> dict[str, list[float]] | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: dict[str, list[float]]) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)


def check_record(rec: RawRecord, args: ScoreArgs, prepare: Any) -> tuple[dict[str, Any], str | None]:
    """Validate a record; return its journal entry (without scores) and its prepared text.

    ``prepare`` is a :class:`~inference.Classifier`, or any ``prepare(text, title)`` function
    (the Ray engine's CPU tasks have the preprocessing without the model).
    """
    prepare = getattr(prepare, "prepare", prepare)
    entry: dict[str, Any] = {"line": rec.line}
    if rec.error:
        entry["error"] = rec.error
        return entry, None
    data = rec.data
    rid = data.get(args.id_field)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        entry["error"] = (f"missing id field '{args.id_field}'" if rid is None or rid == "" else
                          f"id field '{args.id_field}' must be a non-empty string or integer, got {type(rid).__name__}")
        return entry, None
    entry["id"] = str(rid)
    text = data.get(args.text_field)
    title = data.get(args.title_field) if args.title_field else None
    if text is None:
        entry["error"] = f"missing text field '{args.text_field}'"
    elif not isinstance(text, str):
        entry["error"] = f"text field '{args.text_field}' must be a string, got {type(text).__name__}"
    elif not text.strip():
        entry["error"] = f"empty text field '{args.text_field}'"
    else:
        try:
            prepared = prepare(text, title)
        except EmptyTextError:
            entry["error"] = f"text field '{args.text_field}' is empty after normalisation"
        else:
            kept = kept_fields(data, args)
            if kept:
                entry["k"] = kept
            return entry, prepared
    return entry, None


def kept_fields(data: dict[str, Any], args: ScoreArgs) -> dict[str, Any]:
    """The input fields copied into the output row: ``--keep`` ones (missing = null), or with
    ``--keep-all`` every field but the id, text and title."""
    if args.keep_all:
        skip = {args.id_field, args.text_field, args.title_field}
        return {k: plain_value(v) for k, v in data.items() if k not in skip}
    return {name: plain_value(data.get(name)) for name in args.keep}


def fill_scores(entries: list[dict[str, Any]], keys: Sequence[bytes | None], inputs: Sequence[Any],
                predict: Callable[[list[Any]], dict[str, Any]], cache: TextCache | None) -> None:
    """Put ``"p"`` (probabilities rounded to 7 digits) into every entry whose ``keys[i]`` (the hash
    of its prepared text) is set. With a ``cache``, ``predict`` runs once per distinct key, on the
    first of its ``inputs`` (prepared texts, or token windows); without one, once per entry."""
    todo: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        if key is None:
            continue
        if cache is None:
            todo[i] = [i]
            continue
        hit = cache.get(key)
        if hit is not None:
            entries[i]["p"], entries[i]["r"] = hit, 1
        else:
            todo.setdefault(key, []).append(i)
    if not todo:
        return
    probs = predict([inputs[owners[0]] for owners in todo.values()])
    for row, (key, owners) in enumerate(todo.items()):
        scores = {name: [round(float(v), 7) for v in p[row]] for name, p in probs.items()}
        for n, i in enumerate(owners):
            entries[i]["p"] = scores
            if n:
                entries[i]["r"] = 1
        if cache is not None:
            cache.put(key, scores)


class OutputFile:
    """One output file being written from entries in input order: rows, errors file, duplicate ids,
    counts; :meth:`commit` writes the manifest and renames the errors file and the output into place.
    Both engines write through it, so their outputs agree byte for byte on the same scores."""

    def __init__(self, output: Path, tasks: Sequence[Any], args: ScoreArgs):
        self.output, self.summary, self.first_seen = output, Summary(files=1), {}
        self.errors_tmp = errors_path(output).with_name(errors_path(output).name + ".tmp")
        output.parent.mkdir(parents=True, exist_ok=True)
        self.rows = RowWriter(output, tasks, args.probs, keep=args.keep, keep_all=args.keep_all)
        self.errors: Any = None

    def __enter__(self) -> OutputFile:
        self.rows.__enter__()
        self.errors = open(self.errors_tmp, "w", encoding="utf-8")
        return self

    def add(self, entry: dict[str, Any]) -> None:
        summary = self.summary
        if "error" in entry:
            summary.errors += 1
            self.errors.write(json_line({"line": entry["line"], "id": entry.get("id"), "reason": entry["error"]}))
            return
        rid = entry["id"]
        if rid in self.first_seen:
            summary.duplicates += 1
            self.errors.write(json_line({"line": entry["line"], "id": rid, "reason":
                                         f"duplicate id (first on line {self.first_seen[rid]}); scored anyway"}))
        else:
            self.first_seen[rid] = entry["line"]
        self.rows.write(rid, entry["p"], entry.get("k"))
        summary.scored += 1
        summary.repeated_texts += entry.get("r", 0)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.errors.flush()
        os.fsync(self.errors.fileno())
        self.errors.close()
        self.rows.__exit__(exc_type, *exc)
        if exc_type is not None:
            self.errors_tmp.unlink(missing_ok=True)

    def commit(self, job: FileJob, identity: dict[str, Any]) -> Summary:
        if self.rows.dropped_fields:
            print(f"note: {self.output}: fields first seen after the first row are not columns of a flat "
                  f"output: {sorted(self.rows.dropped_fields)} (use a .jsonl output to keep them)", file=sys.stderr)
        write_manifest(job, identity, self.summary.counts())
        os.replace(self.errors_tmp, errors_path(self.output))
        self.rows.commit()  # the output appears last: an output file always has its manifest and errors
        return self.summary


# What decides a run's scores, and how to name each in a refusal (manifests and resumed journals).
IDENTITY = {
    "input": "input path",
    "input_fingerprint": "input file contents (its size or first/last bytes changed)",
    "model": "model folder path",
    "model_fingerprint": "model folder contents (weights, config, preprocessing or calibration; "
                         "was best/ retrained or recalibrated in place?)",
    "dtype": "precision (--dtype)",
    "quantize": "quantisation (--quantize)",
    "processes": "number of processes",
    "text_field": "--text-field",
    "id_field": "--id-field",
    "title_field": "--title-field",
    "probs": "--probs",
    "keep": "--keep/--keep-all",
}


def with_model_fields(args: ScoreArgs) -> ScoreArgs:
    """``args`` with the field names left unset taken from the model folder's ``preprocess.json``
    (the fields it was trained on); ``--title-field ''`` means no title.

    >>> with_model_fields(ScoreArgs(model="runs/demo/best", input="d.jsonl", output="s.jsonl")).text_field  # doctest: +SKIP
    'text'
    """
    return fields_from(args, Preprocessing.load(check_model_folder(args.model)))


def fields_from(args: ScoreArgs, pre: Preprocessing) -> ScoreArgs:
    """``args`` with unset field names filled from ``pre`` (what :func:`with_model_fields` reads)."""
    if args.text_field and args.id_field and args.title_field is not None:
        return args
    return replace(
        args,
        text_field=args.text_field or pre.text_field,
        id_field=args.id_field or pre.id_field,
        title_field=(pre.title_field or "") if args.title_field is None else args.title_field,
    )


def probe_shape(model_dir: str) -> ProbeShape:
    """The encoder shape ``auto`` precision is decided at, as ``Classifier.from_pretrained`` does."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return probe_shape_of(SimpleNamespace(**(config.get("encoder_config") or {})))


def run_identity(args: ScoreArgs, device: str | None = None) -> dict[str, Any]:
    """What must match for a finished output to count as this run's (recorded in its manifest):
    the model folder's fingerprint, the precision resolved on ``device``, quantisation, fields
    (unset ones taken from the model), ``--probs`` and ``--keep``.

    >>> run_identity(ScoreArgs(model="runs/demo/best", input="d.jsonl", output="s.jsonl"))["dtype"]  # doctest: +SKIP
    'float32'
    """
    from inference.classifier import resolve_dtype  # the API module loads torch; imported when needed

    args = with_model_fields(args)
    dtype = resolve_dtype(args.dtype, device or args.device, probe_shape(args.model))
    return {"model_fingerprint": model_fingerprint(args.model), "dtype": str(dtype).removeprefix("torch."),
            "quantize": args.quantize, "text_field": args.text_field, "id_field": args.id_field,
            "title_field": args.title_field or None, "probs": args.probs,
            "keep": "*" if args.keep_all else ",".join(args.keep)}


def identity_problem(saved: dict[str, Any], current: dict[str, Any], what: str) -> str | None:
    """What differs between a ``saved`` identity and the ``current`` one, named for the user;
    ``None`` when nothing does. Keys only one side knows (an older nabaa) are not compared."""
    differs = [f"{IDENTITY.get(key, key)}: was {saved[key]!r}, now {value!r}"
               for key, value in current.items() if key in saved and saved[key] != value]
    return f"{what}: " + "; ".join(differs) if differs else None


def folder_calibrated(model_dir: str) -> bool:
    """Whether every task of the model folder has a temperature in its ``calibration.json``
    (what :attr:`inference.Classifier.calibrated` says once loaded), without loading the weights."""
    from model.modeling import MultiTaskConfig  # loads transformers; only needed here

    path = Path(model_dir) / CALIBRATION_FILE
    calibration = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    tasks = MultiTaskConfig.from_pretrained(model_dir).schema()
    return all("temperature" in calibration.get(task.name, {}) for task in tasks)


def write_summary(args: ScoreArgs, summary: Summary, many: bool = False) -> None:
    """Print the run's summary and write it as JSON (``OUTPUT.summary.json``, or ``OUTPUT/summary.json``
    for a folder of outputs)."""
    output = Path(args.output)
    info = {**asdict(summary), "articles_per_second": round(summary.per_second, 2), "output": str(output),
            "engine": args.engine}
    if many:
        path = output / "summary.json"
    else:
        info["errors_file"] = str(errors_path(output))
        path = output.with_name(output.name + ".summary.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    if not summary.calibrated:
        print(f"warning: {args.model} is uncalibrated: the scores are raw softmax probabilities "
              "(calibrate with: python -m training.finalize --config ...)", file=sys.stderr)
    if many or summary.files_skipped:
        print(f"files: {summary.files} ({summary.files_skipped} already complete, skipped)")
    print(f"scored {summary.scored} article(s), {summary.errors} error(s), {summary.duplicates} duplicate id(s), "
          f"{summary.repeated_texts} repeated text(s) scored once; "
          f"{summary.scored_this_run} in this run in {summary.seconds:.1f}s ({summary.per_second:.1f} articles/s)")
    if many:
        print(f"outputs: {output}/ (errors beside each output: *.errors.jsonl)")
    else:
        print(f"output: {output}\nerrors: {errors_path(output)}")
