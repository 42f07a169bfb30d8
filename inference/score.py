"""Score an article dump: streaming, resumable, every article exactly once.

Commands::

    python -m inference.score --model runs/demo/best --input dump.jsonl.gz --output scores.jsonl
    python -m inference.score --model DIR --input dump.csv --output scores.parquet --probs --quantize int8
    python -m inference.score ... --resume          # after a crash or kill: continue, nothing lost or doubled
    # a folder (or a glob) of JSONL/CSV/Parquet files, .gz or .zst: one output per input, Parquet by default
    python -m inference.score --model DIR --input dumps/ --output scores/ --keep source,date,url
    # on Ray (pip install 'nabaa[ray]'): a local Ray on this machine, or --address auto to join a cluster
    python -m inference.score --engine ray --model DIR --input dumps/ --output scores/
    # several processes (GPUs, or CPU processes): each scores a shard, the main process merges
    accelerate launch --num_processes 4 -m inference.score --model DIR --input dump.jsonl --output s.jsonl
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m inference.score ...

How it stays exact: each process appends one journal line per input record it
owns (a score or an error) to ``OUTPUT.part-K-of-N.journal`` and fsyncs after every
buffer; ``--resume`` drops a torn last line (and the rest of a partly written
buffer) and skips the records already journalled. When every shard is done, the
main process merges the journals in input order into ``OUTPUT`` and
``OUTPUT.errors.jsonl`` (temp file + rename) and only then deletes the journals.
A manifest beside each output (:mod:`inference.jobs`) lets a rerun of the same
command skip the files already complete; with several input files a rerun also
resumes interrupted journals without ``--resume``.

Identical prepared texts (wire copies) are scored once per process: a hash of the
prepared text is looked up in a bounded cache before the model runs; every row still
gets its own output line, and the summary counts the repeats (``--no-dedup`` turns it off).

Records are read by the field names the model was trained on (its ``preprocess.json``);
``--text-field``/``--id-field``/``--title-field`` override them. Before merging, the journals are
checked against the records each process read; ``--resume`` refuses to continue journals started
with another model (also one retrained in place), input, precision, quantisation or fields.

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
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from inference.classifier import Classifier
from inference.core import (
    EXIT_BAD_RECORDS,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    IDENTITY,
    OutputFile,
    ScoreArgs,
    Summary,
    TextCache,
    check_record,
    fields_from,
    fill_scores,
    folder_calibrated,
    identity_problem,
    run_identity,
    with_model_fields,
    write_summary,
)
from inference.jobs import FileJob, folder_mode, job_state, plan_jobs
from inference.jobs import errors_path as errors_path  # re-exported: score.errors_path(output) names the file
from inference.writers import json_line
from model.hardware import batch_limits
from model.records import RawRecord, RecordFileError, ShardCount, file_fingerprint, iter_records
from model.serialization import ModelFolderError

__all__ = ["EXIT_BAD_RECORDS", "EXIT_INCOMPLETE", "EXIT_OK", "EXIT_USAGE", "IDENTITY", "MergeError", "ScoreArgs",
           "Summary", "check_journals", "check_start", "errors_path", "journal_identity", "main", "merge",
           "parse_args", "run_identity", "run_scoring", "score_buffer", "score_shard", "with_model_fields"]


class MergeError(RuntimeError):
    """The shard journals do not add up to the input: merging them would lose records."""


# --------------------------------------------------------------------------- journals
def journal_path(output: Path, k: int, n: int) -> Path:
    return output.with_name(f"{output.name}.part-{k}-of-{n}.journal")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal-meta.json")


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
def score_buffer(records: Sequence[RawRecord], args: ScoreArgs, clf: Classifier,
                 cache: TextCache | None = None) -> list[dict[str, Any]]:
    """Journal entries for a buffer of records, in input order (batching is length-sorted inside).

    With a ``cache``, a prepared text seen before in this run (or earlier in this buffer) is
    not scored again: its entry gets the first copy's probabilities and ``"r": 1``.
    """
    args = fields_from(args, clf.pre)  # fields left unset are the model's
    entries, prepared = [], []
    for rec in records:
        entry, text = check_record(rec, args, clf)
        entries.append(entry)
        prepared.append(text)
    keys = [None if text is None else TextCache.key(text) for text in prepared]
    fill_scores(entries, keys, prepared, clf.predict_proba_prepared, cache)
    return entries


# --------------------------------------------------------------------------- shard loop
def score_shard(clf: Classifier, args: ScoreArgs, k: int, n: int, show_progress: bool) -> tuple[int, int, int]:
    """Score this process's shard into its journal; return (records done before, records done now,
    records of the shard in the input). With ``args.dedup`` a prepared text already scored in this
    shard is not scored again (a bounded cache of ``args.dedup_cache`` texts)."""
    cache = TextCache(args.dedup_cache) if args.dedup else None
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
                new += _flush(buffer, args, clf, out, bar, cache)
                buffer = []
        new += _flush(buffer, args, clf, out, bar, cache)
    bar.close()
    return done, new, count.records


def _flush(buffer: list[RawRecord], args: ScoreArgs, clf: Classifier, out: Any, bar: Any,
           cache: TextCache | None) -> int:
    if not buffer:
        return 0
    entries = score_buffer(buffer, args, clf, cache)
    out.write("".join(json_line(e) for e in entries))
    out.flush()
    os.fsync(out.fileno())  # what is journalled survives a kill; --resume starts after it
    bar.update(len(entries))
    return len(entries)


# --------------------------------------------------------------------------- merge
def merge(args: ScoreArgs, clf: Classifier, n: int, identity: dict[str, Any] | None = None,
          read: Sequence[int] | None = None) -> Summary:
    """Interleave the shard journals back into input order; write output, errors and manifest atomically.

    ``read[k]`` is how many records shard ``k`` found in the input. The journals are checked
    first (:func:`check_journals`); if they do not add up, :class:`MergeError` is raised
    and nothing is written or deleted.
    """
    args = fields_from(args, clf.pre)
    output = Path(args.output)
    journals = [journal_path(output, k, n) for k in range(n)]
    check_journals(journals, read)
    readers = [read_journal(j) for j in journals]
    with OutputFile(output, clf.tasks, args) as out:
        for entry in _round_robin(readers):
            out.add(entry)
    summary = out.commit(FileJob(Path(args.input), output), identity or run_identity(args, str(clf.device)))
    summary.calibrated = clf.calibrated
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
def journal_identity(args: ScoreArgs, n: int, identity: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (``OUTPUT.journal-meta.json``):
    the run's identity plus the input (path and fingerprint), the model's path and the processes."""
    return {"input": str(Path(args.input).resolve()), "input_fingerprint": file_fingerprint(args.input),
            "model": str(Path(args.model).resolve()), **identity, "processes": n}


def check_start(args: ScoreArgs, n: int, identity: dict[str, Any] | None = None,
                device: str | None = None) -> str | None:
    """Refuse to clobber finished output or to mix runs; return a reason to stop early, if any.

    ``"skip"`` means the output is complete and belongs to this run (see :mod:`inference.jobs`).
    """
    output = Path(args.output)
    identity = identity or run_identity(args, device)
    meta = journal_identity(args, n, identity)
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
        problem = identity_problem(saved, meta, "--resume: this run differs from the interrupted one, and one "
                                                "output cannot mix them")
        return problem and (problem + ". Resume with the same model, input and settings, or delete the journals "
                            f"({output.name}.part-*.journal) to start over")
    if output.exists() and not args.overwrite:
        state = job_state(FileJob(Path(args.input), output), identity)
        if state.done:
            return "skip"
        if state.problem:
            return state.problem
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
    """Score ``args.input`` (a file, glob or folder) into ``args.output``, single or multi-process;
    return (summary, exit code)."""
    jobs = plan_jobs(args.input, args.output, args.format)  # bad paths fail before any work
    args = with_model_fields(args)
    if args.engine == "ray":
        from inference.ray_engine import run_ray

        return run_ray(args)
    from accelerate import PartialState

    # Without cpu=True, PartialState ignores a CPU launch (`ACCELERATE_USE_CPU=1 accelerate launch
    # --multi_gpu`) and every process would score the whole dump as process 0 of 1.
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    # Shards may finish hours apart (after a resume, or on unequal GPUs); the processes done
    # first wait at the final gather, which fails after this long (torch's default: 10-30 min).
    state = PartialState(cpu=use_cpu, timeout=timedelta(seconds=args.process_group_timeout))
    many = folder_mode(args.input, args.output)
    device = str(state.device) if state.num_processes > 1 else args.device
    identity = _broadcast(_identity_or_problem(args, device) if state.is_main_process else None, state)
    if isinstance(identity, str):
        if state.is_main_process:
            print(f"error: {identity}", file=sys.stderr)
        return None, EXIT_USAGE
    totals, clf, code, start = Summary(), None, EXIT_OK, time.time()
    for job in jobs:
        # With a folder of inputs a rerun is always a resume: that is how it finishes the rest.
        file_args = replace(args, input=str(job.input), output=str(job.output), resume=args.resume or many)
        problem = _start_problem(file_args, state.num_processes, identity) if state.is_main_process else None
        problem = _broadcast(problem, state)
        if problem == "skip":
            if state.is_main_process:
                totals.add(replace(Summary.from_manifest(job_state(job, identity).manifest),
                                   calibrated=folder_calibrated(args.model)))
                print(f"{job.output} is already complete; skipped")
            continue
        if problem:
            if state.is_main_process:
                print(f"error: {problem}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        if clf is None:
            clf = load_for_scoring(args, state)
        summary, file_code = score_one_file(file_args, clf, state, identity)
        if summary is not None:
            totals.add(summary)
        if file_code != EXIT_OK:
            code = file_code
    if not state.is_main_process:
        return None, code
    if code in (EXIT_USAGE, EXIT_INCOMPLETE) and totals.files == 0:
        return None, code
    totals.seconds = time.time() - start
    write_summary(args, totals, many)
    if code == EXIT_OK and (totals.errors or totals.duplicates):
        code = EXIT_BAD_RECORDS
    return totals, code


def _identity_or_problem(args: ScoreArgs, device: str) -> dict[str, Any] | str:
    # Every rank waits for this answer: an exception here must become an answer, not a hang.
    try:
        return run_identity(args, device)
    except (OSError, ValueError) as e:
        return str(e)


def _start_problem(args: ScoreArgs, n: int, identity: dict[str, Any]) -> str | None:
    try:
        return check_start(args, n, identity)
    except (OSError, ValueError) as e:
        return str(e)


def load_for_scoring(args: ScoreArgs, state: Any) -> Classifier:
    n = state.num_processes
    device = str(state.device) if n > 1 else args.device
    if n > 1 and state.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    batch_size, max_batch_tokens = batch_limits(device, args.batch_size, args.max_batch_tokens)
    return Classifier.from_pretrained(args.model, device=device, quantize=args.quantize, dtype=args.dtype,
                                      keep_freed_memory=True, batch_size=batch_size, max_batch_tokens=max_batch_tokens)


def score_one_file(args: ScoreArgs, clf: Classifier, state: Any,
                   identity: dict[str, Any]) -> tuple[Summary | None, int]:
    """Score one input into its output (journals, then merge after checking they add up);
    (the summary on the main process, exit code)."""
    k, n = state.process_index, state.num_processes
    _, new, read = score_shard(clf, args, k, n, state.is_local_main_process)
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
        summary = merge(args, clf, n, identity, read=[r for _, r in counts])
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, EXIT_INCOMPLETE
    summary.scored_this_run = sum(new for new, _ in counts)
    return summary, EXIT_OK


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


def parse_args(argv: Sequence[str] | None = None) -> ScoreArgs:
    p = argparse.ArgumentParser(prog="python -m inference.score", description="Score an article dump.",
                                epilog="Exit status: 0 all scored, 3 some records in the errors file, 2 usage error, "
                                       "4 shard journals incomplete (kept; rerun with --resume).")
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/demo/best)")
    p.add_argument("--input", required=True,
                   help="a file, a glob ('dumps/*.jsonl.zst') or a folder of .jsonl, .csv or .parquet files, "
                        "optionally .gz or .zst")
    p.add_argument("--output", required=True,
                   help="an output file (.jsonl, .jsonl.gz, .csv, .csv.gz, .parquet) for one input file; "
                        "else a folder with one output per input file")
    p.add_argument("--format", default="parquet", choices=["parquet", "jsonl", "jsonl.gz", "csv", "csv.gz"],
                   help="kind of the outputs when --output is a folder (default parquet)")
    p.add_argument("--keep", default="", help="input fields copied into each output row, e.g. source,date,url")
    p.add_argument("--keep-all", action="store_true", help="copy every input field but the id, text and title")
    p.add_argument("--text-field", default=None, help="default: the field the model was trained on (usually text)")
    p.add_argument("--id-field", default=None, help="default: the model's (usually id)")
    p.add_argument("--title-field", default=None, help="default: the model's (usually title); '' ignores titles")
    p.add_argument("--probs", action="store_true", help="also write every label's probability")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantisation (CPU)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=None,
                   help="max windows per forward pass (default 64 on CPU; 128-512 on a GPU by its memory)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="max padded tokens per forward pass (default 16384 on CPU; 32768-131072 on a GPU)")
    p.add_argument("--buffer-size", type=int, default=256,
                   help="records read ahead, length-sorted and journalled together (bounds memory)")
    p.add_argument("--no-dedup", dest="dedup", action="store_false",
                   help="score every record even when its prepared text was already scored in this run")
    p.add_argument("--dedup-cache", type=int, default=200_000,
                   help="distinct texts remembered per process for --dedup (about 150 bytes each)")
    p.add_argument("--process-group-timeout", type=int, default=86400, metavar="SECONDS",
                   help="multi-process runs: how long the processes done first wait for the others at the "
                        "final gather before failing (default 24 h; the journals stay for --resume)")
    ray = p.add_argument_group("Ray engine (pip install 'nabaa[ray]')")
    ray.add_argument("--engine", default="local", choices=["local", "ray"],
                     help="local: this process (or an accelerate launch); ray: Ray Data over a cluster")
    ray.add_argument("--address", default=None,
                     help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray on this machine)")
    ray.add_argument("--actors", type=int, default=None,
                     help="scoring actors (default: one per GPU; on CPU, the cluster's CPUs / threads per actor)")
    ray.add_argument("--threads-per-actor", type=int, default=None,
                     help="torch threads of each CPU actor (default 4, or 1 on machines with 4 CPUs or fewer)")
    ray.add_argument("--block-records", type=int, default=256,
                     help="records per Ray block (read, tokenised and scored together)")
    ns = p.parse_args(argv)
    values = vars(ns)
    values["keep"] = [name.strip() for name in values["keep"].split(",") if name.strip()]
    if values["keep"] and values["keep_all"]:
        p.error("--keep and --keep-all exclude each other")
    return ScoreArgs(**values)


def main(argv: Sequence[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the output to our own progress bar and summary
    args = parse_args(argv)
    try:
        _, code = run_scoring(args)
    except (RecordFileError, ModelFolderError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        close_process_group()
    return code


def close_process_group() -> None:
    """Tear down a multi-process run's process group before the interpreter exits. Left to the
    exit-time destructors, gloo's worker threads can be destroyed while still running, and that
    rank aborts ("terminate called without an active exception") after its work is done."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
