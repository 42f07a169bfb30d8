"""Which input file is scored into which output file, and which outputs are already done.

Both engines (the single-process scorer and ``--engine ray``) plan a run the same way:

- ``--input`` names a file, a glob or a folder (:func:`model.records.expand_inputs`);
- a single input file with an output *file* name keeps today's behaviour (one output);
  otherwise ``--output`` is a folder and each input ``in/a/x.jsonl.zst`` is scored into
  ``out/a/x.parquet`` (``--format`` picks the kind; Parquet by default);
- a finished output has a manifest beside it (``x.parquet.manifest.json``) recording
  the input (path, size, modification time, record count), the counts written, and the
  run's identity (model fingerprint, dtype, quantisation, fields). A rerun skips a file
  whose manifest matches this run and whose output and errors files hold exactly the
  recorded rows (rows + errors = the input's records): exactly once, file by file.

    >>> jobs = plan_jobs("dumps/", "scores/", "parquet")  # doctest: +SKIP
    >>> [job_state(j, identity).done for j in jobs]  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.writers import FOLDER_FORMATS, output_format
from model.records import compression_of, detect_format, expand_inputs, input_root


@dataclass
class FileJob:
    """One input file and the output it is scored into."""

    input: Path
    output: Path


@dataclass
class JobState:
    """What a rerun finds for a job: ``done`` (skip it), or a ``problem`` that needs the
    user (``--overwrite``), or neither (score it)."""

    done: bool = False
    problem: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def folder_mode(input_spec: str, output: str) -> bool:
    """True when ``--output`` is a folder: several inputs, or an output name without an output suffix."""
    path = Path(input_spec)
    if not path.is_file():
        return True
    try:
        output_format(output)
    except ValueError:
        return True
    return Path(output).is_dir()


def plan_jobs(input_spec: str, output: str, fmt: str = "parquet") -> list[FileJob]:
    """Pair every input file with its output (see the module docstring).

    >>> plan_jobs("in/", "out/", "jsonl")  # doctest: +SKIP
    [FileJob(input=PosixPath('in/a.csv.zst'), output=PosixPath('out/a.jsonl'))]
    """
    inputs = expand_inputs(input_spec)
    if not folder_mode(input_spec, output):
        return [FileJob(inputs[0], Path(output))]
    if fmt not in FOLDER_FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FOLDER_FORMATS)}")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{output}: --output must be a folder when --input is a folder or a glob")
    spec = Path(input_spec)
    root = spec.parent if spec.is_file() else input_root(spec, input_spec)
    jobs, seen = [], {}
    for path in inputs:
        relative = path.relative_to(root)
        target = out_dir / relative.parent / (input_stem(path) + FOLDER_FORMATS[fmt])
        if target in seen:
            raise ValueError(f"{seen[target]} and {path} would both be scored into {target}; "
                             "rename one of them or score them separately")
        seen[target] = path
        jobs.append(FileJob(path, target))
    return jobs


def input_stem(path: Path) -> str:
    """The name of an input without its format and compression suffixes.

    >>> input_stem(Path("2020-01.jsonl.zst"))
    '2020-01'
    """
    name = path.name
    if compression_of(name):
        name = name.rsplit(".", 1)[0]
    detect_format(name)
    return name.rsplit(".", 1)[0]


def input_facts(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"input": str(path.resolve()), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}


def write_manifest(job: FileJob, identity: dict[str, Any], counts: dict[str, int]) -> None:
    """Record a finished output (temp + rename). Written just *before* the output is renamed in:
    an output file that exists therefore always has its manifest."""
    info = {**input_facts(job.input), **counts, "identity": identity}
    target = manifest_path(job.output)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def job_state(job: FileJob, identity: dict[str, Any]) -> JobState:
    """Decide whether ``job``'s output is complete and belongs to this run (see module docstring)."""
    output, manifest_file = job.output, manifest_path(job.output)
    if not output.exists():
        return JobState()
    if not manifest_file.exists():
        return JobState(problem=f"{output} exists but was not written by a finished nabaa run "
                                f"(no {manifest_file.name}); pass --overwrite to replace it")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    saved = manifest.get("identity", {})
    if saved != identity:
        diff = {k: (saved.get(k), identity.get(k)) for k in sorted(set(saved) | set(identity))
                if saved.get(k) != identity.get(k)}
        return JobState(problem=f"{output} was scored by a different run {diff} (recorded, now); "
                                "pass --overwrite to score it again", manifest=manifest)
    facts = input_facts(job.input)
    if any(manifest.get(k) != v for k, v in facts.items() if k != "input"):
        return JobState(problem=f"{job.input} changed after {output} was scored; pass --overwrite to score it again",
                        manifest=manifest)
    rows, error_lines = count_output_rows(output), count_lines(errors_path(output))
    expected_errors = manifest.get("errors", -1) + manifest.get("duplicates", 0)
    if (rows != manifest.get("rows") or error_lines != expected_errors
            or manifest.get("rows", 0) + manifest.get("errors", 0) != manifest.get("input_records")):
        # Atomic writes make this a damaged or edited file, never an interrupted run: score it again.
        return JobState(manifest=manifest)
    return JobState(done=True, manifest=manifest)


def count_output_rows(path: Path) -> int:
    """Rows in an output file (Parquet from its footer; JSONL and CSV by reading them)."""
    fmt = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # a damaged file is simply not complete
            return -1
    if fmt == "jsonl":
        return count_lines(path)
    import csv

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


def count_lines(path: Path) -> int:
    if not path.exists():
        return -1
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except (OSError, EOFError):
        return -1

