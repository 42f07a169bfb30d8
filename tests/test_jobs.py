"""Planning a run over many files, and deciding which outputs are already done (no model needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.jobs import FileJob, job_state, manifest_path, plan_jobs, write_manifest
from model.records import RecordFileError

IDENTITY = {"model_fingerprint": "abc", "dtype": "float32", "quantize": None}


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_folder_inputs_mirror_into_the_output_folder(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "2020-01.jsonl.zst")
    touch(tmp_path / "in" / "east" / "2020-02.csv.gz")
    touch(tmp_path / "in" / "notes.txt")  # not a record file
    touch(tmp_path / "in" / ".hidden" / "x.jsonl")  # hidden folders are skipped
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    assert [(j.input.relative_to(tmp_path), j.output.relative_to(tmp_path)) for j in jobs] == [
        (Path("in/2020-01.jsonl.zst"), Path("out/2020-01.parquet")),
        (Path("in/east/2020-02.csv.gz"), Path("out/east/2020-02.parquet")),
    ]
    globbed = plan_jobs(str(tmp_path / "in" / "**" / "*.csv.gz"), str(tmp_path / "out"), "jsonl.gz")
    assert [j.output.relative_to(tmp_path) for j in globbed] == [Path("out/east/2020-02.jsonl.gz")]


def test_a_single_file_keeps_its_output_name(tmp_path: Path) -> None:
    src = touch(tmp_path / "dump.jsonl.gz")
    assert plan_jobs(str(src), str(tmp_path / "s.csv")) == [FileJob(src, tmp_path / "s.csv")]
    assert plan_jobs(str(src), str(tmp_path / "scores"))[0].output == tmp_path / "scores" / "dump.parquet"


def test_clashing_outputs_and_empty_inputs_are_refused(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.jsonl")
    touch(tmp_path / "in" / "a.csv")
    with pytest.raises(ValueError, match=r"a\.csv and .*a\.jsonl would both be scored into .*a\.parquet"):
        plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    with pytest.raises(RecordFileError, match="no .jsonl, .csv or .parquet files"):
        plan_jobs(str(tmp_path / "in" / "*.parquet"), str(tmp_path / "out"))
    with pytest.raises(RecordFileError, match="no such file or folder"):
        plan_jobs(str(tmp_path / "missing"), str(tmp_path / "out"))


def finished(tmp_path: Path, rows: int = 2, errors: int = 1) -> FileJob:
    job = FileJob(touch(tmp_path / "in.jsonl", "x\n" * (rows + errors)), tmp_path / "out.jsonl")
    write_manifest(job, IDENTITY, {"rows": rows, "errors": errors, "duplicates": 0, "input_records": rows + errors})
    touch(job.output, "{}\n" * rows)
    touch(tmp_path / "out.jsonl.errors.jsonl", "{}\n" * errors)
    return job


def test_a_complete_output_of_the_same_run_is_done(tmp_path: Path) -> None:
    job = finished(tmp_path)
    assert job_state(job, IDENTITY).done


def test_another_model_or_a_changed_input_needs_overwrite(tmp_path: Path) -> None:
    job = finished(tmp_path)
    state = job_state(job, {**IDENTITY, "dtype": "bf16"})
    assert not state.done and "different run" in state.problem and "'dtype': ('float32', 'bf16')" in state.problem
    os.utime(job.input, ns=(1, 1))
    state = job_state(job, IDENTITY)
    assert not state.done and "changed after" in state.problem


def test_a_short_output_is_scored_again(tmp_path: Path) -> None:
    job = finished(tmp_path)
    touch(job.output, "{}\n")  # one row lost, whatever the cause
    state = job_state(job, IDENTITY)
    assert not state.done and state.problem is None


def test_an_output_without_manifest_is_not_claimed(tmp_path: Path) -> None:
    job = FileJob(touch(tmp_path / "in.jsonl"), touch(tmp_path / "old.jsonl", "{}\n"))
    state = job_state(job, IDENTITY)
    assert not state.done and "--overwrite" in state.problem
    assert not manifest_path(job.output).exists()
