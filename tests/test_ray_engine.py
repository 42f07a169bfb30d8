"""``--engine ray`` against the single-process scorer, with faults injected: a local Ray of 2 CPUs,
started once for the module; skipped where Ray is not installed."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import zstandard

import inference.score as score
from inference.jobs import plan_jobs
from tests.conftest import ROOT, seed_records

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'nabaa[ray]'")

KEEP = "source,date,url"


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module: 2 CPUs, no dashboard, workers' logs kept out of the test output."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(trained_run: Path) -> Path:
    return trained_run / "best"


def article_rows(start: int, n: int) -> list[dict]:
    records = seed_records("train", 200)[start:start + n]
    return [{"id": r["id"], "title": r["title"], "text": r["text"], "source": f"outlet-{i % 3}",
             "date": r["date"], "url": f"https://example.org/{r['id']}"} for i, r in enumerate(records)]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def mixed_folder(folder: Path) -> Path:
    """JSONL with bad records, .jsonl.zst with a wire copy, .csv.gz, Parquet, and an empty file."""
    folder.mkdir(parents=True)
    bad = [b'{"id": "bad1", "text": "\xd8\xa8\xff"}', b'{"id": "bad2"', b'{"id": "bad3", "text": "   "}']
    a = article_rows(0, 12)
    (folder / "a.jsonl").write_bytes(jsonl_bytes(a[:6]) + b"\n".join(bad) + b"\n" + jsonl_bytes(a[6:]))
    b = article_rows(12, 10)
    wire = dict(b[0], id="copy-of-" + b[0]["id"])  # the same article again under another id
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(b + [wire, b[1]])))
    c = article_rows(22, 10)
    with gzip.open(folder / "c.csv.gz", "wt", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(c[0]))
        writer.writeheader()
        writer.writerows(c)
    pq.write_table(pa.Table.from_pylist(article_rows(32, 10)), folder / "d.parquet")
    (folder / "e.jsonl").write_text("", encoding="utf-8")
    return folder


def many_files(folder: Path, files: int, per_file: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(files):
        (folder / f"part-{k:02d}.jsonl").write_bytes(jsonl_bytes(article_rows(k * per_file, per_file)))
    return folder


def score_args(model_dir: Path, inp: Path, out: Path, *extra: str) -> score.ScoreArgs:
    return score.parse_args(["--model", str(model_dir), "--input", str(inp), "--output", str(out),
                             "--keep", KEEP, "--block-records", "8", *extra])


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_same_outputs(reference: Path, candidate: Path, jobs: list) -> None:
    """Row for row: ids, labels and kept columns equal; scores equal to float noise; same errors."""
    for job in jobs:
        mirror = candidate / job.output.relative_to(reference)
        want, got = read_rows(job.output), read_rows(mirror)
        assert len(got) == len(want), mirror
        for w, g in zip(want, got):
            assert {k: v for k, v in g.items() if not k.endswith("_score")} == \
                   {k: v for k, v in w.items() if not k.endswith("_score")}
            for key in (k for k in w if k.endswith("_score")):
                assert g[key] == pytest.approx(w[key], abs=1e-5)
        errors = mirror.with_name(mirror.name + ".errors.jsonl")
        assert errors.read_text(encoding="utf-8") == \
               job.output.with_name(job.output.name + ".errors.jsonl").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reference(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The single-process scorer's outputs for the mixed folder and for a folder of 6 files."""
    root = tmp_path_factory.mktemp("ray_ref")
    mixed, parts = mixed_folder(root / "mixed"), many_files(root / "parts", 6, 16)
    out = {}
    for name, folder in (("mixed", mixed), ("parts", parts)):
        summary, code = score.run_scoring(score_args(model_dir, folder, root / f"{name}-local"))
        out[name] = (folder, root / f"{name}-local", summary, code)
    return out


@pytest.mark.slow
def test_ray_engine_equals_the_single_process_scorer(local_ray, model_dir: Path, reference: dict,
                                                     tmp_path: Path) -> None:
    folder, local_out, local_summary, local_code = reference["mixed"]
    out = tmp_path / "ray"
    summary, code = score.run_scoring(score_args(model_dir, folder, out, "--engine", "ray"))
    assert code == local_code == score.EXIT_BAD_RECORDS  # the bad records went to the errors files
    jobs = plan_jobs(str(folder), str(local_out))
    assert sorted(p.relative_to(out) for p in out.rglob("*.parquet")) == \
           sorted(j.output.relative_to(local_out) for j in jobs)  # one output per input, empty file included
    assert_same_outputs(local_out, out, jobs)
    assert (summary.files, summary.scored, summary.errors, summary.duplicates, summary.repeated_texts) == \
           (local_summary.files, local_summary.scored, local_summary.errors, local_summary.duplicates,
            local_summary.repeated_texts) == (5, 44, 3, 1, 2)
    assert read_rows(out / "sub" / "b.parquet")[-2]["url"].startswith("https://example.org/")
    # The same command again: every output is complete, nothing is scored.
    again, code = score.run_scoring(score_args(model_dir, folder, out, "--engine", "ray"))
    assert code == score.EXIT_BAD_RECORDS and again.files_skipped == 5 and again.scored_this_run == 0


def actor_pids() -> list[int]:
    """Scoring actors of this test's Ray (processes below this one whose title names the actor)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ScoringActor" in title and _descends_from(int(entry.name), me):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return False


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_actor_loses_and_duplicates_nothing(local_ray, model_dir: Path, reference: dict,
                                                     tmp_path: Path) -> None:
    folder, local_out, *_ = reference["parts"]
    out = tmp_path / "ray"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(
        done=score.run_scoring(score_args(model_dir, folder, out, "--engine", "ray"))))
    run.start()
    wait_for(lambda: len(list(out.glob("*.parquet"))) >= 1)  # scoring is under way
    victims = actor_pids()
    assert victims and run.is_alive()
    os.kill(victims[0], signal.SIGKILL)  # as the kernel's OOM killer would
    unfinished = 6 - len(list(out.glob("*.parquet")))
    run.join(timeout=300)
    assert unfinished > 0, "the run finished before the fault landed"
    summary, code = result["done"]
    assert code == 0 and summary.scored == 6 * 16 and summary.files == 6
    assert_same_outputs(local_out, out, plan_jobs(str(folder), str(local_out)))


@pytest.mark.slow
def test_a_killed_driver_then_the_same_command_scores_only_the_rest(local_ray, model_dir: Path, reference: dict,
                                                                    tmp_path: Path, capsys) -> None:
    folder, local_out, *_ = reference["parts"]
    out = tmp_path / "ray"
    # The driver joins this module's Ray (--address), as a driver joins a cluster: killing it
    # leaves the cluster up, and a second driver picks up where the first one died.
    cmd = [sys.executable, "-m", "inference.score", "--engine", "ray", "--address", local_ray, "--model",
           str(model_dir), "--input", str(folder), "--output", str(out), "--keep", KEEP, "--block-records", "8"]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: len(list(out.glob("*.parquet"))) >= 2 or driver.poll() is not None)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert 0 < len(finished) < 6, "the driver was not killed mid-run"
    # The same command again (here in this process, on the same cluster).
    summary, code = score.run_scoring(score.parse_args(cmd[3:]))
    assert code == 0 and summary.files == 6 and summary.files_skipped == len(finished)
    assert f"files: 6 ({len(finished)} already complete, skipped)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet") if p.name in finished} == finished
    assert not list(out.glob("*.tmp"))
    assert_same_outputs(local_out, out, plan_jobs(str(folder), str(local_out)))
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert written["scored"] == 6 * 16 and written["scored_this_run"] == (6 - len(finished)) * 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_actors_agree_with_the_cpu_scorer(local_ray, model_dir: Path, reference: dict, tmp_path: Path,
                                              capsys) -> None:
    """On a GPU node: one actor per GPU, fp32 so labels can be compared with the CPU reference."""
    folder, local_out, *_ = reference["mixed"]
    out = tmp_path / "gpu"
    summary, code = score.run_scoring(score_args(model_dir, folder, out, "--engine", "ray", "--dtype", "fp32"))
    assert "(1 GPU each)" in capsys.readouterr().err
    assert code == score.EXIT_BAD_RECORDS and summary.scored == 44
    for job in plan_jobs(str(folder), str(local_out)):
        want, got = read_rows(job.output), read_rows(out / job.output.relative_to(local_out))
        assert [r["id"] for r in got] == [r["id"] for r in want]
        agree = sum(g["topic"] == w["topic"] for g, w in zip(got, want))
        assert agree >= len(want) - 1  # TF32/cuBLAS may flip a near-tie, no more
