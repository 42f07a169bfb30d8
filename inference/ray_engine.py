"""``--engine ray``: score folders of dumps on Ray Data, one machine or many.

    pip install 'nabaa[ray]'
    python -m inference.score --engine ray --model DIR --input dumps/ --output scores/      # local Ray
    python -m inference.score --engine ray --address auto --model DIR --input /nfs/dumps/ --output scores/

The pipeline, per run::

    read tasks (one per input file, blocks of --block-records records: decompress, decode, file:line errors)
      → CPU tasks: validate, normalise, tokenise into windows (fused with the read; no model needed)
      → actor pool of Classifiers: one per GPU (num_gpus=1), or N CPU actors × T torch threads;
        identical texts scored once per actor (hash cache)
      → the driver: rows in input order into one output file per input file (temp + rename),
        its errors file and its manifest; a file is committed only when every one of its
        records has come back (rows + errors = the record count its read task saw).

Ray retries a failed read or tokenise task and restarts a dead actor, re-running its batch
(``max_restarts=-1``, ``max_task_retries=-1`` on the pool): nothing is lost, and as the
driver writes each file once, nothing is duplicated. If the driver itself dies, files
already committed stay; temp files are swept at the next run, which scores the rest
(:mod:`inference.jobs`). Inputs must be readable at the same path on every node (a shared
file system); outputs are written by the driver, on its machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from inference.core import (
    EXIT_BAD_RECORDS,
    EXIT_OK,
    EXIT_USAGE,
    OutputFile,
    ScoreArgs,
    Summary,
    TextCache,
    check_record,
    fill_scores,
    folder_calibrated,
    run_identity,
    with_model_fields,
    write_summary,
)
from inference.jobs import FileJob, errors_path, folder_mode, job_state, manifest_path, plan_jobs
from model.records import RawRecord, iter_records

SCHEMA_FIELDS = ("file", "line", "total", "record", "error")


class RayUnavailableError(ValueError):
    """``--engine ray`` without Ray installed."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailableError("--engine ray needs Ray Data: pip install 'nabaa[ray]'") from e
    return ray


# --------------------------------------------------------------------------- driver
def run_ray(args: ScoreArgs) -> tuple[Summary | None, int]:
    """Score every input file not already complete into its own output; return (summary, exit code)."""
    jobs = plan_jobs(args.input, args.output, args.format)
    many = folder_mode(args.input, args.output)
    args = with_model_fields(args)  # the prepare tasks read the fields the model was trained on
    identity = run_identity(args)
    totals, todo, code = Summary(), [], EXIT_OK
    for job in jobs:
        sweep_temp_files(job)
        state = job_state(job, identity)
        if state.done and not args.overwrite:
            totals.add(Summary.from_manifest(state.manifest))
            print(f"{job.output} is already complete; skipped")
        elif state.problem and not args.overwrite:
            print(f"error: {state.problem}", file=sys.stderr)
            code = EXIT_USAGE
        else:
            todo.append(job)
    start = time.time()
    if todo:
        ray = import_ray()
        started_here = connect(ray, args)
        try:
            totals.add(score_files(ray, todo, args, identity))
        finally:
            if started_here:
                ray.shutdown()
    if code == EXIT_USAGE and totals.files == 0:
        return None, code
    totals.seconds = time.time() - start
    totals.calibrated = folder_calibrated(args.model)
    write_summary(args, totals, many)
    if code == EXIT_OK and (totals.errors or totals.duplicates):
        code = EXIT_BAD_RECORDS
    return totals, code


def sweep_temp_files(job: FileJob) -> None:
    """Remove what a killed driver left half-written for this output (never the output itself)."""
    for final in (job.output, errors_path(job.output), manifest_path(job.output)):
        final.with_name(final.name + ".tmp").unlink(missing_ok=True)


def connect(ray: Any, args: ScoreArgs) -> bool:
    """Join ``--address`` or start a local Ray; True if this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    # Workers' own logs stay in Ray's session folder; the driver shows progress and the summary.
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    return True


def score_files(ray: Any, jobs: list[FileJob], args: ScoreArgs, identity: dict[str, Any]) -> Summary:
    """Run the pipeline over ``jobs`` and write their outputs as they complete."""
    from ray.data import DataContext

    from model.modeling import MultiTaskConfig
    from model.serialization import check_model_folder

    check_model_folder(args.model)
    tasks = MultiTaskConfig.from_pretrained(args.model).schema()
    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # rows reach the driver in input order
    layout = actor_layout(ray, args)
    each = "1 GPU" if layout["gpu"] else f"{layout['threads']} CPU thread(s)"
    print(f"ray: {len(jobs)} file(s), {layout['actors']} scoring actor(s) ({each} each)", file=sys.stderr)
    dataset = build_dataset(ray, jobs, args, layout)
    summary, writers, seen = Summary(), {}, {}
    started = time.time()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            index = row["file"]
            if row["total"] is not None:  # the read task's last word on this file
                out = writers.pop(index, None) or _open(jobs[index], tasks, args)
                if seen.get(index, 0) != row["total"]:
                    raise RuntimeError(f"{jobs[index].input}: {seen.get(index, 0)} of {row['total']} records "
                                       "came back from the pipeline; nothing was written for this file")
                out.__exit__(None, None, None)
                file_summary = out.commit(jobs[index], identity)
                file_summary.scored_this_run = file_summary.scored
                summary.add(file_summary)
                continue
            if index not in writers:
                writers[index] = _open(jobs[index], tasks, args)
            writers[index].add(json.loads(row["entry"]))
            seen[index] = seen.get(index, 0) + 1
    for out in writers.values():  # only on a pipeline bug: leave nothing half-written behind
        out.__exit__(RuntimeError, None, None)
    summary.seconds = time.time() - started
    return summary


def _open(job: FileJob, tasks: Any, args: ScoreArgs) -> OutputFile:
    return OutputFile(job.output, tasks, args).__enter__()


def actor_layout(ray: Any, args: ScoreArgs) -> dict[str, Any]:
    """How many scoring actors, and what each one reserves: a GPU each when the cluster has
    GPUs (and --device allows), else ``threads`` CPUs each."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if args.device.startswith("cuda") and gpus == 0:
        raise ValueError(f"--device {args.device}: the Ray cluster has no GPU (resources: {resources})")
    gpu = gpus > 0 and args.device in ("auto", "cuda") or args.device.startswith("cuda")
    if gpu:
        return {"gpu": True, "actors": args.actors or max(1, gpus), "threads": args.threads_per_actor or 2,
                "remote": {"num_gpus": 1, "num_cpus": 1}, "prep_tasks": max(2, cpus - max(1, gpus))}
    threads = args.threads_per_actor or (1 if cpus <= 4 else 4)
    actors = args.actors or max(1, cpus // threads)
    return {"gpu": False, "actors": actors, "threads": threads, "remote": {"num_cpus": threads},
            "prep_tasks": max(1, cpus // 2)}


def build_dataset(ray: Any, jobs: list[FileJob], args: ScoreArgs, layout: dict[str, Any]) -> Any:
    settings = asdict(args)
    # Reading and tokenising reserve no CPU of their own: on a CPU-only machine the actors hold
    # every CPU, and these tasks must still run beside them (their cost is ~10% of the model's);
    # the task pool's size bounds how many run at once.
    source = RecordFiles([str(j.input) for j in jobs], args.block_records)
    dataset = ray.data.read_datasource(source, **_light_tasks(ray, ray.data.read_datasource, layout["prep_tasks"]))
    dataset = dataset.map_batches(prepare_block, batch_format="pyarrow", batch_size=None,
                                  fn_kwargs={"settings": settings},
                                  **_light_tasks(ray, dataset.map_batches, layout["prep_tasks"]))
    return dataset.map_batches(ScoringActor, batch_format="pyarrow", batch_size=args.block_records,
                               fn_constructor_kwargs={"settings": settings, "threads": layout["threads"],
                                                      "gpu": layout["gpu"]},
                               compute=ray.data.ActorPoolStrategy(size=layout["actors"]), **layout["remote"])


def _light_tasks(ray: Any, method: Any, size: int) -> dict[str, Any]:
    """Keyword arguments for 0-CPU tasks, at most ``size`` at once, in this Ray's spelling
    (named ``num_cpus`` and ``TaskPoolStrategy(size=)`` since Ray 2.5x; before, ``ray_remote_args``
    and ``concurrency``)."""
    import inspect

    params = inspect.signature(method).parameters
    kwargs: dict[str, Any] = {"num_cpus": 0} if "num_cpus" in params else {"ray_remote_args": {"num_cpus": 0}}
    try:
        kwargs["compute"] = ray.data.TaskPoolStrategy(size=size)
    except (AttributeError, TypeError):
        kwargs["concurrency"] = size
    if "compute" in kwargs and "compute" not in params:
        kwargs["concurrency"] = kwargs.pop("compute").size
    return kwargs


# --------------------------------------------------------------------------- read tasks
try:  # Ray is optional: without it this module still imports, and run_ray says what to install
    from ray.data.datasource import Datasource as _Datasource
except ImportError:  # pragma: no cover - exercised where Ray is not installed
    _Datasource = object


class RecordFiles(_Datasource):  # type: ignore[misc,valid-type]
    """A Ray Data source over record files: one read task per file, ``block_records`` rows a block,
    and a last row per file carrying its record count (how the driver knows the file is whole)."""

    def __init__(self, paths: list[str], block_records: int):
        super().__init__()
        self.paths, self.block_records = paths, block_records

    def estimate_inmemory_data_size(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[Any]:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        read_tasks = []
        for index, path in enumerate(self.paths):
            meta = BlockMetadata(num_rows=None, size_bytes=os.path.getsize(path), input_files=[path], exec_stats=None)
            read_tasks.append(ReadTask(_reader(index, path, self.block_records), meta))
        return read_tasks


def _reader(index: int, path: str, block_records: int) -> Any:
    return lambda: read_blocks(index, path, block_records)


def read_blocks(index: int, path: str, block_records: int) -> Iterator[Any]:
    """Blocks of one file's records: each row is the record as JSON text, or its read error."""
    import pyarrow as pa

    from inference.writers import plain_value

    rows: list[dict[str, Any]] = []
    count = 0
    for rec in iter_records(path):
        count += 1
        record = None if rec.data is None else json.dumps(plain_value(rec.data), ensure_ascii=False)
        rows.append({"file": index, "line": rec.line, "total": None, "record": record, "error": rec.error})
        if len(rows) >= block_records:
            yield pa.Table.from_pylist(rows, schema=_read_schema())
            rows = []
    rows.append({"file": index, "line": 0, "total": count, "record": None, "error": None})
    yield pa.Table.from_pylist(rows, schema=_read_schema())


def _read_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("file", pa.int32()), ("line", pa.int64()), ("total", pa.int64()),
                      ("record", pa.large_string()), ("error", pa.string())])


# --------------------------------------------------------------------------- CPU tasks
@lru_cache(maxsize=2)
def _preprocessing(model_dir: str) -> tuple[Any, Any]:
    """The model folder's preprocessing and tokenizer, once per worker process (no weights)."""
    from transformers import AutoTokenizer

    from model.preprocess import Preprocessing

    return Preprocessing.load(model_dir), AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)


def prepare_block(table: Any, settings: dict[str, Any]) -> Any:
    """Validate, normalise and tokenise a block: rows keep their order and gain ``entry`` (the
    journal entry, JSON), ``key`` (hash of the prepared text) and ``windows`` (token ids)."""
    import pyarrow as pa

    args = ScoreArgs(**settings)
    pre, tokenizer = _preprocessing(args.model)
    entries, prepared = [], []
    for row in table.to_pylist():
        if row["total"] is not None:
            entries.append(None)
            prepared.append(None)
            continue
        data = None if row["record"] is None else json.loads(row["record"])
        entry, text = check_record(RawRecord(row["line"], data=data, error=row["error"]), args, pre.prepare)
        entries.append(entry)
        prepared.append(text)
    texts = [t for t in prepared if t is not None]
    windows = iter(pre.windows(tokenizer, texts))
    return pa.table({
        "file": table["file"], "line": table["line"], "total": table["total"],
        "entry": pa.array([None if e is None else json.dumps(e, ensure_ascii=False) for e in entries],
                          pa.large_string()),
        "key": pa.array([None if t is None else TextCache.key(t) for t in prepared], pa.binary(16)),
        "windows": pa.array([None if t is None else next(windows) for t in prepared], pa.list_(pa.list_(pa.int32()))),
        # the lexical (TF-IDF) part of a fused model reads the prepared text itself
        "prepared": pa.array(prepared, pa.large_string()),
    })


# --------------------------------------------------------------------------- actors
class ScoringActor:
    """One :class:`~inference.Classifier` in a Ray actor: scores blocks of token windows."""

    def __init__(self, settings: dict[str, Any], threads: int, gpu: bool):
        import torch

        from inference.classifier import Classifier
        from model.hardware import batch_limits

        args = ScoreArgs(**settings)
        device = "cuda" if gpu else "cpu"
        if not gpu:
            torch.set_num_threads(threads)
        batch_size, max_batch_tokens = batch_limits(device, args.batch_size, args.max_batch_tokens)
        self.clf = Classifier.from_pretrained(args.model, device=device, quantize=args.quantize, dtype=args.dtype,
                                              keep_freed_memory=True, batch_size=batch_size,
                                              max_batch_tokens=max_batch_tokens)
        self.cache = TextCache(args.dedup_cache) if args.dedup else None

    def _predict(self, pairs: list[tuple[Any, str]]) -> dict[str, Any]:
        return self.clf.predict_proba_windows([w for w, _ in pairs], prepared=[t for _, t in pairs])

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        entries = [None if e is None else json.loads(e) for e in table["entry"].to_pylist()]
        keys = table["key"].to_pylist()
        pairs = list(zip(table["windows"].to_pylist(), table["prepared"].to_pylist()))
        fill_scores(entries, keys, pairs, self._predict, self.cache)
        return pa.table({
            "file": table["file"], "line": table["line"], "total": table["total"],
            "entry": pa.array([None if e is None else json.dumps(e, ensure_ascii=False) for e in entries],
                              pa.large_string()),
        })
