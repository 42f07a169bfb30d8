"""Score an article dump: streaming, resumable, every article exactly once.

Commands::

    python -m inference.score --model runs/demo/best --input dump.jsonl.gz --output scores.jsonl
    python -m inference.score --model DIR --input dump.csv --output scores.parquet --probs --quantize int8
    python -m inference.score ... --resume          # after a crash or kill: continue, nothing lost or doubled
    # several processes (GPUs, or CPU processes): each scores a shard, the main process merges
    accelerate launch --num_processes 4 -m inference.score --model DIR --input dump.jsonl --output s.jsonl
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m inference.score ...

How it stays exact: each process appends one journal line per input record it
owns (a score or an error) to ``OUTPUT.part-K-of-N.journal`` and fsyncs after every
buffer; ``--resume`` drops a torn last line (and the rest of a partly written
buffer) and skips the records already journalled. When every shard is done, the
main process merges the journals in input order into ``OUTPUT`` and
``OUTPUT.errors.jsonl`` (temp file + rename) and only then deletes the journals.

Exit status: 0 all records scored; 3 some records went to the errors file
(bad JSON/UTF-8, missing or empty text, missing id, duplicate id); 2 usage errors;
4 the shard journals did not add up to the input (kept; ``--resume`` completes them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from tqdm.auto import tqdm

from inference.classifier import Classifier, resolve_dtype
from inference.writers import RowWriter, json_line, output_format
from model.hardware import ProbeShape, probe_shape_of
from model.preprocess import EmptyTextError, Preprocessing
from model.records import RawRecord, RecordFileError, ShardCount, file_fingerprint, iter_records
from model.serialization import ModelFolderError, check_model_folder, model_fingerprint

EXIT_OK, EXIT_USAGE, EXIT_BAD_RECORDS, EXIT_INCOMPLETE = 0, 2, 3, 4


class MergeError(RuntimeError):
    """The shard journals do not add up to the input: merging them would lose records."""


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
    batch_size: int = 64
    max_batch_tokens: int = 16384
    buffer_size: int = 256
    process_group_timeout: int = 86400


@dataclass
class Summary:
    scored: int = 0
    errors: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    scored_this_run: int = 0
    calibrated: bool = True

    @property
    def per_second(self) -> float:
        return self.scored_this_run / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- journals
def journal_path(output: Path, k: int, n: int) -> Path:
    return output.with_name(f"{output.name}.part-{k}-of-{n}.journal")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal-meta.json")


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def recover_journal(path: Path, align: int = 1) -> int:
    """Count complete lines in a journal, cutting a torn last line left by a kill.

    With ``align=B`` (the buffer size) a partly written buffer is cut back too, so
    the resumed run re-scores those records in the same buffer, hence the same
    batches, as an uninterrupted run: scores then match to the last digit (padding
    in a different batch moves float32 results by ~1e-7).
    """
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        complete = data.count(b"\n", 0, end)
        keep = complete - complete % max(1, align)
        while complete > keep:
            end = data.rfind(b"\n", 0, end - 1) + 1
            complete -= 1
        if end != len(data):
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return complete


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


# --------------------------------------------------------------------------- one record
def check_record(rec: RawRecord, args: ScoreArgs, clf: Classifier) -> tuple[dict[str, Any], str | None]:
    """Validate a record; return its journal entry (without scores) and its prepared text."""
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
            return entry, clf.prepare(text, title)
        except EmptyTextError:
            entry["error"] = f"text field '{args.text_field}' is empty after normalisation"
    return entry, None


def score_buffer(records: Sequence[RawRecord], args: ScoreArgs, clf: Classifier) -> list[dict[str, Any]]:
    """Journal entries for a buffer of records, in input order (batching is length-sorted inside)."""
    args = _fields_from(args, clf.pre)  # fields left unset are the model's
    entries, prepared, owners = [], [], []
    for rec in records:
        entry, text = check_record(rec, args, clf)
        entries.append(entry)
        if text is not None:
            prepared.append(text)
            owners.append(len(entries) - 1)
    if prepared:
        probs = clf.predict_proba_prepared(prepared)
        for row, owner in enumerate(owners):
            entries[owner]["p"] = {name: [round(float(v), 7) for v in p[row]] for name, p in probs.items()}
    return entries


# --------------------------------------------------------------------------- shard loop
def score_shard(clf: Classifier, args: ScoreArgs, k: int, n: int, show_progress: bool) -> tuple[int, int, int]:
    """Score this process's shard into its journal; return (records done before, records done now,
    records of the shard in the input)."""
    journal = journal_path(Path(args.output), k, n)
    done = recover_journal(journal, align=args.buffer_size)
    bar = tqdm(desc=f"scoring{f' (shard {k + 1}/{n})' if n > 1 else ''}", unit=" art", initial=done,
               disable=not show_progress, dynamic_ncols=True, smoothing=0.1)
    new, count = 0, ShardCount()
    with open(journal, "a", encoding="utf-8") as out:
        buffer: list[RawRecord] = []
        for rec in iter_records(args.input, skip=done, shard=(k, n), count=count):
            buffer.append(rec)
            if len(buffer) >= args.buffer_size:
                new += _flush(buffer, args, clf, out, bar)
                buffer = []
        new += _flush(buffer, args, clf, out, bar)
    bar.close()
    return done, new, count.records


def _flush(buffer: list[RawRecord], args: ScoreArgs, clf: Classifier, out: Any, bar: Any) -> int:
    if not buffer:
        return 0
    entries = score_buffer(buffer, args, clf)
    out.write("".join(json_line(e) for e in entries))
    out.flush()
    os.fsync(out.fileno())  # what is journalled survives a kill; --resume starts after it
    bar.update(len(entries))
    return len(entries)


# --------------------------------------------------------------------------- merge
def merge(args: ScoreArgs, clf: Classifier, n: int, read: Sequence[int] | None = None) -> Summary:
    """Interleave the shard journals back into input order; write output and errors atomically.

    ``read[k]`` is how many records shard ``k`` found in the input. The journals are checked
    first (:func:`check_journals`); if they do not add up, :class:`MergeError` is raised
    and nothing is written or deleted.
    """
    output = Path(args.output)
    journals = [journal_path(output, k, n) for k in range(n)]
    check_journals(journals, read)
    readers = [read_journal(j) for j in journals]
    summary, first_seen = Summary(), {}
    errors_tmp = errors_path(output).with_name(errors_path(output).name + ".tmp")
    with RowWriter(output, clf.tasks, args.probs) as rows, open(errors_tmp, "w", encoding="utf-8") as errors:
        for entry in _round_robin(readers):
            if "error" in entry:
                summary.errors += 1
                errors.write(json_line({"line": entry["line"], "id": entry.get("id"), "reason": entry["error"]}))
                continue
            rid = entry["id"]
            if rid in first_seen:
                summary.duplicates += 1
                errors.write(json_line({"line": entry["line"], "id": rid, "reason":
                                        f"duplicate id (first on line {first_seen[rid]}); scored anyway"}))
            else:
                first_seen[rid] = entry["line"]
            rows.write(rid, entry["p"])
            summary.scored += 1
    rows.commit()
    os.replace(errors_tmp, errors_path(output))
    for journal in journals:
        journal.unlink()
    meta_path(output).unlink(missing_ok=True)
    return summary


def check_journals(journals: Sequence[Path], read: Sequence[int] | None = None) -> list[int]:
    """Raise :class:`MergeError` unless the journals hold one input split round-robin: each
    exactly as many lines as its shard read (when known), and each as long as the one before
    or one shorter, the last at most one shorter than the first. Return their lengths.

    >>> check_journals([Path("s.jsonl.part-0-of-2.journal"), Path("s.jsonl.part-1-of-2.journal")], [3, 2])  # doctest: +SKIP
    [3, 2]
    """
    lengths = [_count_lines(j) for j in journals]
    problems = [f"{j.name} holds {have} record(s) but its shard has {want} in the input"
                for j, have, want in zip(journals, lengths, read or lengths) if have != want]
    ordered = all(a >= b for a, b in zip(lengths, lengths[1:])) and lengths[0] - lengths[-1] <= 1
    if not ordered:
        problems.append(f"journal lengths {lengths} are not those of one input dealt round-robin "
                        "(each as long as the one before or one shorter)")
    if problems:
        raise MergeError("cannot merge the shard journals: " + "; ".join(problems)
                         + ". Nothing was written and the journals are kept: run again with --resume "
                         "(same input, model and number of processes) to complete the short shard(s)")
    return lengths


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _round_robin(readers: list[Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    # Record i lives in shard i % n, so taking one entry from each journal in turn restores
    # input order. check_journals has made sure only the last journals can run out first;
    # a journal running out before a later one still has entries would lose records.
    while True:
        for position, reader in enumerate(readers):
            entry = next(reader, None)
            if entry is None:
                if any(next(later, None) is not None for later in readers[position + 1:]):
                    raise MergeError(f"journal {position} ended before a later one: records would be lost")
                return
            yield entry


# --------------------------------------------------------------------------- driver
# What a resumed run must share with the interrupted one, and how to name each in a refusal.
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
}


def with_model_fields(args: ScoreArgs) -> ScoreArgs:
    """``args`` with the field names left unset taken from the model folder's ``preprocess.json``
    (the fields it was trained on); ``--title-field ''`` means no title.

    >>> with_model_fields(ScoreArgs(model="runs/demo/best", input="d.jsonl", output="s.jsonl")).text_field  # doctest: +SKIP
    'text'
    """
    return _fields_from(args, Preprocessing.load(check_model_folder(args.model)))


def _fields_from(args: ScoreArgs, pre: Preprocessing) -> ScoreArgs:
    return replace(
        args,
        text_field=args.text_field or pre.text_field,
        id_field=args.id_field or pre.id_field,
        title_field=(pre.title_field or "") if args.title_field is None else args.title_field,
    )


def _probe_shape(model_dir: str) -> ProbeShape:
    """The encoder shape ``auto`` precision is decided at, as ``Classifier.from_pretrained`` does."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return probe_shape_of(SimpleNamespace(**(config.get("encoder_config") or {})))


def run_identity(args: ScoreArgs, n: int, device: str | None = None) -> dict[str, Any]:
    """What decides this run's scores, saved in ``OUTPUT.journal-meta.json``: paths, fingerprints
    of the model folder and of the input, the resolved precision, quantisation, processes, fields."""
    args = with_model_fields(args)
    return {
        "input": str(Path(args.input).resolve()),
        "input_fingerprint": file_fingerprint(args.input),
        "model": str(Path(args.model).resolve()),
        "model_fingerprint": model_fingerprint(args.model),
        "dtype": str(resolve_dtype(args.dtype, device or args.device, _probe_shape(args.model))).removeprefix("torch."),
        "quantize": args.quantize,
        "processes": n,
        "text_field": args.text_field,
        "id_field": args.id_field,
        "title_field": args.title_field or None,
    }


def identity_problem(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a run with identity ``current`` may not continue journals started with ``saved``."""
    differs = [f"{IDENTITY.get(key, key)}: was {saved[key]!r}, now {value!r}"
               for key, value in current.items() if key in saved and saved[key] != value]
    if not differs:
        return None
    return ("--resume: this run differs from the interrupted one, and one output cannot mix them: "
            + "; ".join(differs) + ". Resume with the same model, input and settings, or delete the "
            "journals (OUTPUT.part-*.journal) to start over")


def check_start(args: ScoreArgs, n: int, device: str | None = None) -> str | None:
    """Refuse to clobber finished output or to mix runs; return a reason to stop early, if any."""
    output = Path(args.output)
    meta = run_identity(args, n, device)
    journals_exist = any(output.parent.glob(f"{output.name}.part-*.journal"))
    if journals_exist and not args.resume:
        return (f"{output}: an interrupted run's journals exist; pass --resume to continue it "
                f"(or delete {output.name}.part-*.journal to start over)")
    if args.resume and journals_exist:
        saved = json.loads(meta_path(output).read_text(encoding="utf-8")) if meta_path(output).exists() else {}
        unchecked = [IDENTITY.get(k, k) for k in meta if saved and k not in saved]
        if unchecked:
            print(f"warning: the interrupted run was started by an older nabaa; cannot check: {', '.join(unchecked)}",
                  file=sys.stderr)
        return identity_problem(saved, meta)
    if output.exists() and not args.overwrite:
        return f"{output} exists; pass --overwrite to replace it"
    output.parent.mkdir(parents=True, exist_ok=True)
    # The (empty) journals mark the run as started before anything else: killed while the
    # model loads, a --resume must still redo the work, not call a previous output complete.
    for k in range(n):
        journal_path(output, k, n).touch()
    tmp = meta_path(output).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.replace(meta_path(output))
    return None


def run_scoring(args: ScoreArgs) -> tuple[Summary | None, int]:
    """Score ``args.input`` into ``args.output`` (single or multi-process); return (summary, exit code)."""
    from accelerate import PartialState

    # Without cpu=True, PartialState ignores a CPU launch (`ACCELERATE_USE_CPU=1 accelerate launch
    # --multi_gpu`) and every process would score the whole dump as process 0 of 1.
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    # Shards may finish hours apart (after a resume, or on unequal GPUs); the processes done
    # first wait at the final gather, which fails after this long (torch's default: 10-30 min).
    state = PartialState(cpu=use_cpu, timeout=timedelta(seconds=args.process_group_timeout))
    k, n = state.process_index, state.num_processes
    output_format(args.output)
    args = with_model_fields(args)
    output = Path(args.output)
    if args.resume and output.exists() and not any(output.parent.glob(f"{output.name}.part-*.journal")):
        if state.is_main_process:
            print(f"{output} is already complete; nothing to resume")
        return None, EXIT_OK
    device = str(state.device) if n > 1 else args.device
    problem = _start_problem(args, n, device) if state.is_main_process else None
    problem = _broadcast(problem, state)
    if problem:
        if state.is_main_process:
            print(f"error: {problem}", file=sys.stderr)
        return None, EXIT_USAGE
    if n > 1 and state.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    clf = Classifier.from_pretrained(args.model, device=device, quantize=args.quantize, dtype=args.dtype,
                                     keep_freed_memory=True,
                                     batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
    start = time.time()
    _, new, read = score_shard(clf, args, k, n, show_progress=state.is_local_main_process)
    try:
        counts = _gather_counts((new, read), state)
        state.wait_for_everyone()
    except RuntimeError as e:  # a timed-out or broken collective: the journals are complete or resumable
        print(f"error: process {k} could not gather with the others ({str(e).splitlines()[-1][:200]}). If some "
              f"processes finished long after others, raise --process-group-timeout (now "
              f"{args.process_group_timeout} s). The journals are kept: run again with --resume", file=sys.stderr)
        return None, EXIT_INCOMPLETE
    if not state.is_main_process:
        return None, EXIT_OK
    try:
        summary = merge(args, clf, n, read=[r for _, r in counts])
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, EXIT_INCOMPLETE
    summary.seconds, summary.scored_this_run = time.time() - start, sum(new for new, _ in counts)
    summary.calibrated = clf.calibrated
    write_summary(args, summary)
    return summary, EXIT_BAD_RECORDS if summary.errors or summary.duplicates else EXIT_OK


def _start_problem(args: ScoreArgs, n: int, device: str) -> str | None:
    # Every rank waits for this answer: an exception here must become an answer, not a hang.
    try:
        return check_start(args, n, device)
    except (OSError, ValueError) as e:
        return str(e)


def _broadcast(value: Any, state: Any) -> Any:
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _gather_counts(value: tuple[int, int], state: Any) -> list[tuple[int, int]]:
    """Every process's ``value``, in rank order."""
    if state.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return [tuple(v) for v in gather_object([value])]


def write_summary(args: ScoreArgs, summary: Summary) -> None:
    output = Path(args.output)
    info = {**asdict(summary), "articles_per_second": round(summary.per_second, 2), "output": str(output),
            "errors_file": str(errors_path(output))}
    path = output.with_name(output.name + ".summary.json")
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"scored {summary.scored} article(s), {summary.errors} error(s), {summary.duplicates} duplicate id(s); "
          f"{summary.scored_this_run} in this run in {summary.seconds:.1f}s ({summary.per_second:.1f} articles/s)")
    print(f"output: {output}\nerrors: {errors_path(output)}")


def parse_args(argv: Sequence[str] | None = None) -> ScoreArgs:
    p = argparse.ArgumentParser(prog="python -m inference.score", description="Score an article dump.",
                                epilog="Exit status: 0 all scored, 3 some records in the errors file, 2 usage error, "
                                       "4 shard journals incomplete (kept; rerun with --resume).")
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/demo/best)")
    p.add_argument("--input", required=True, help=".jsonl, .csv or .parquet, optionally .gz")
    p.add_argument("--output", required=True, help=".jsonl, .csv or .parquet")
    p.add_argument("--text-field", default=None, help="default: the field the model was trained on (usually text)")
    p.add_argument("--id-field", default=None, help="default: the model's (usually id)")
    p.add_argument("--title-field", default=None, help="default: the model's (usually title); '' ignores titles")
    p.add_argument("--probs", action="store_true", help="also write every label's probability")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantisation (CPU)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=64, help="max windows per forward pass")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="max padded tokens per forward pass")
    p.add_argument("--buffer-size", type=int, default=256,
                   help="records read ahead, length-sorted and journalled together (bounds memory)")
    p.add_argument("--process-group-timeout", type=int, default=86400, metavar="SECONDS",
                   help="multi-process runs: how long the processes done first wait for the others at the "
                        "final gather before failing (default 24 h; the journals stay for --resume)")
    ns = p.parse_args(argv)
    return ScoreArgs(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the output to our own progress bar and summary
    args = parse_args(argv)
    try:
        _, code = run_scoring(args)
    except (RecordFileError, ModelFolderError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
