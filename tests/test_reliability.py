"""Reliability: kill it, corrupt it, fuzz it — nothing lost, nothing doubled, no bare crash.

- scoring is SIGKILLed at random moments and resumed until it completes: the output is
  byte for byte the one an uninterrupted run writes;
- training is SIGKILLed mid-epoch (and ``best/`` is left half-replaced): ``--resume``
  ends with the same weights and dev metrics as an uninterrupted run;
- malformed records (hypothesis) never crash the scorer: each bad one is reported
  with its line, each good one scored exactly once, in input order;
- corrupt or pickled weights and invalid configs fail with a clear, named error.

Subprocesses run with ``OMP_NUM_THREADS=1``: on a small shared machine one thread per
process is several times faster than two threads fighting for the cores.
The longer version of the kill rounds is ``python -m bench.chaos`` (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import inference.score as score
from inference import Classifier
from model.serialization import ModelFolderError, load_model_folder
from tests.conftest import ROOT, corpus_overrides, run, train_command

TINY = "configs/tiny.yaml"
CHECKPOINT = re.compile(r"^step_(\d+)$")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """In-process scoring on one thread too: it must match the one-thread subprocesses."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sentences() -> list[str]:
    out = []
    for line in (ROOT / "seeds" / "articles.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            for part in re.split(r"(?<=[.!؟?])\s+|\n+", json.loads(line)["text"]):
                if len(part.strip()) > 20:
                    out.append(part.strip())
    return out


SENTENCES = _sentences()
HUGE_TEXT = ("أعلنت الحكومة في طرابلس عن خطة جديدة للاقتصاد. " * 30_000)[:1_000_000]  # ~1 MB


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    # Output to a file: a full pipe would stall the child and skew the kill moments.
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _wait(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll ``condition`` until true; False if the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting on {proc.args}")


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True if the process was still running (a real kill), False if it had finished."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


@contextlib.contextmanager
def _reaped(procs: list[subprocess.Popen]) -> Iterator[None]:
    """Never leave a child behind, whatever the test does."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# =========================================================================== scoring: SIGKILL + resume
def _make_dump(path: Path, n: int, seed: int) -> list[int]:
    """``n`` articles recombined from seed sentences, ~1% malformed lines; return the lines of good records."""
    rng = random.Random(seed)
    lines, good = [], []
    for i in range(n):
        if rng.random() < 0.01:
            lines.append(rng.choice(['{"id": "broken", "text": "غير مكتمل', '[1, 2]', '{"id": null, "text": "نص"}']))
            continue
        record = {"id": f"d{i:05d}", "title": rng.choice(SENTENCES)[:60] if rng.random() < 0.5 else "",
                  "text": " ".join(rng.sample(SENTENCES, rng.randint(1, 3)))}
        lines.append(json.dumps(record, ensure_ascii=False))
        good.append(i + 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return good


def _journal_lines(journal: Path) -> list[int]:
    """The input line of every complete journal entry (a torn last line is ignored)."""
    data = journal.read_bytes()
    return [json.loads(x)["line"] for x in data[: data.rfind(b"\n") + 1].splitlines()]


@pytest.mark.slow
def test_scoring_killed_at_random_moments_resumes_to_identical_output(trained_run: Path, tmp_path: Path) -> None:
    dump, model = tmp_path / "dump.jsonl", trained_run / "best"
    good_lines = _make_dump(dump, 3000, seed=11)
    n_records = 3000

    reference = tmp_path / "reference.jsonl"  # uninterrupted, same settings
    _, code = score.run_scoring(score.ScoreArgs(model=str(model), input=str(dump), output=str(reference),
                                                buffer_size=64, device="cpu"))
    assert code == score.EXIT_BAD_RECORDS  # the malformed lines

    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "stale output of an older run"}\n', encoding="utf-8")
    journal, meta = score.journal_path(out, 0, 1), score.meta_path(out)
    cmd = [sys.executable, "-m", "inference.score", "--model", str(model), "--input", str(dump),
           "--output", str(out), "--buffer-size", "64"]
    # First, the state a kill leaves while the model is still loading, over an older output:
    # the run is registered (meta, empty journal), nothing is scored; --resume must not call the old output done.
    started = score.check_start(score.ScoreArgs(model=str(model), input=str(dump), output=str(out), buffer_size=64,
                                                overwrite=True), 1)
    assert started is None and journal.stat().st_size == 0 and meta.exists()
    rng = random.Random(20240611)
    procs: list[subprocess.Popen] = []
    kills, torn = 0, False
    with _reaped(procs):
        # Kill at a random moment once this run's journal has grown, resume, kill again...
        while kills < 3:
            before = journal.stat().st_size if journal.exists() else 0
            procs.append(proc := _start(cmd + ["--resume"], tmp_path / "log"))
            _wait(lambda before=before: journal.exists() and journal.stat().st_size > before, proc)
            time.sleep(rng.uniform(0.0, 0.3))
            if not _kill(proc):
                break  # finished before the kill; the final check below still applies
            kills += 1
            done = _journal_lines(journal)
            assert done == list(range(1, len(done) + 1)), "journal has a gap or a duplicate"
            if kills == 2 and len(done) > 20:
                # A kill tearing a buffer write: complete lines end mid-buffer, then half a line.
                data = journal.read_bytes()
                cut = [m.end() for m in re.finditer(b"\n", data)][len(done) - 11]
                journal.write_bytes(data[:cut] + data[cut: cut + 40])
                torn = True
        final = run(cmd + ["--resume"], env=_env())
    assert final.returncode == score.EXIT_BAD_RECORDS, final.stderr[-2000:]
    assert kills == 3 and torn, (kills, torn)

    assert out.read_bytes() == reference.read_bytes()  # ids, order, labels, scores: byte for byte
    assert score.errors_path(out).read_bytes() == score.errors_path(reference).read_bytes()
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert ids == [f"d{line - 1:05d}" for line in good_lines]  # none missing, none doubled, input order
    assert len(ids) == len(set(ids)) and n_records - len(ids) == len(_error_lines(score.errors_path(out)))
    assert not list(tmp_path.glob("out.jsonl.part-*")) and not meta.exists()


def _error_lines(path: Path) -> list[int]:
    return [json.loads(line)["line"] for line in path.read_text(encoding="utf-8").splitlines()]


# =========================================================================== training: SIGKILL + resume
def _evals(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines if '"eval"' in x]


def _flat_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat_numbers(item, f"{prefix}{key}.").items()}
    return {prefix: float(value)} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def _final_checkpoint(run_dir: Path) -> Path:
    found = [p for p in (run_dir / "checkpoints").iterdir() if CHECKPOINT.match(p.name)]
    return max(found, key=lambda p: int(p.name[5:]))


@pytest.mark.slow
@pytest.mark.parametrize("feature_cache", [False, True], ids=["tokens", "feature_cache"])
def test_training_killed_mid_epoch_resumes_to_the_same_model(small_corpus: dict, trained_run: Path,
                                                            tmp_path: Path, feature_cache: bool) -> None:
    overrides = ["--no-finalize", "train.epochs=3", "train.save_every_steps=2"]
    if feature_cache:  # the frozen layers' store is rebuilt (or found) on resume and read from there
        overrides += ["model.freeze_embeddings=true", "model.freeze_layers=1", "train.feature_cache=true"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for run_dir in (reference, killed):
        # One shared backbone: building the tiny WordPiece vocabulary is not bit-reproducible across processes.
        shutil.copytree(trained_run / "backbone", run_dir / "backbone")
    result = run(train_command(TINY, *overrides, *corpus_overrides(small_corpus, reference)), env=_env())
    assert result.returncode == 0, result.stderr[-3000:]

    def mid_epoch_after_best() -> bool:  # a checkpoint inside epoch 2 or later: best/ (epoch 1) exists
        folder = killed / "checkpoints"
        steps = [int(m.group(1)) for p in folder.glob("step_*") if (m := CHECKPOINT.match(p.name))] \
            if folder.exists() else []
        return any(n >= 1_000_000 and n % 1_000_000 for n in steps)

    cmd = train_command(TINY, *overrides, *corpus_overrides(small_corpus, killed))
    procs: list[subprocess.Popen] = []
    with _reaped(procs):
        procs.append(proc := _start(cmd, tmp_path / "killed.log"))
        assert _wait(mid_epoch_after_best, proc), (tmp_path / "killed.log").read_text()[-2000:]
        assert _kill(proc), "training finished before it could be killed"

    # As if the kill had also landed inside best/'s replacement (between the two renames of
    # atomic_replace_dir) and in the middle of a metrics line.
    best = killed / "best"
    os.replace(best, killed / "best.old")
    (killed / ".best.tmp-killed").mkdir()
    weights = (killed / "best.old" / "model.safetensors").read_bytes()
    (killed / ".best.tmp-killed" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with open(killed / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"time": 17')

    resumed = run(train_command(TINY, *overrides, *corpus_overrides(small_corpus, killed), resume=True),
                  env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    where = re.search(r"resumed from \S+ \(epoch (\d+), batch (\d+)\)", resumed.stdout)
    assert where and int(where.group(2)) > 0, resumed.stdout[-2000:]  # really mid-epoch

    assert best.is_dir() and not (killed / "best.old").exists()
    clf = Classifier.from_pretrained(best, device="cpu")
    ref_clf = Classifier.from_pretrained(reference / "best", device="cpu")
    texts = [r["text"] for r in map(json.loads, small_corpus["dev"].read_text(encoding="utf-8").splitlines())]
    for task, logits in clf.logits(texts, calibrated=False).items():
        assert torch.allclose(torch.from_numpy(logits), torch.from_numpy(ref_clf.logits(texts, False)[task]),
                              atol=1e-4)

    ours, theirs = _evals(killed), _evals(reference)
    assert [(e["epoch"], e["step"]) for e in ours] == [(e["epoch"], e["step"]) for e in theirs]  # no doubled lines
    for a, b in zip(ours, theirs):
        fa, fb = _flat_numbers(a), _flat_numbers(b)
        assert fa.keys() == fb.keys() and all(abs(fa[k] - fb[k]) <= 1e-4 for k in fa), (a, b)
    final, ref_final = (load_file(_final_checkpoint(d) / "model.safetensors") for d in (killed, reference))
    assert final.keys() == ref_final.keys()
    assert max((final[k] - ref_final[k]).abs().max().item() for k in final) <= 1e-5


def test_interrupted_best_replacement_leaves_a_loadable_best(trained_run: Path, tmp_path: Path) -> None:
    original = load_model_folder(trained_run / "best")[0].state_dict()

    def same_weights(folder: Path) -> bool:
        loaded = load_model_folder(folder)[0].state_dict()
        return loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in loaded)

    best, old = tmp_path / "best", tmp_path / "best.old"
    # Killed between the renames: only best.old, plus the temp folder of the new best, half written.
    shutil.copytree(trained_run / "best", old)
    (tmp_path / ".best.tmp-x1").mkdir()
    (tmp_path / ".best.tmp-x1" / "config.json").write_text("{", encoding="utf-8")
    assert Classifier.from_pretrained(best, device="cpu").labels("topic")
    assert best.is_dir() and not old.exists() and same_weights(best)
    # Killed after the second rename: the new best/ is complete, the old one not yet removed.
    (old / "model.safetensors").parent.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"partly deleted")
    assert same_weights(best) and not old.exists()


# =========================================================================== checkpoints: corruption
@pytest.fixture
def model_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run / "best", tmp_path / "model"))


@pytest.mark.parametrize("keep", [0, 5, 200, "half", "minus1"])
def test_truncated_weights_are_a_clear_error(model_copy: Path, keep: int | str) -> None:
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    size = {"half": len(data) // 2, "minus1": len(data) - 1}.get(keep, keep)  # type: ignore[arg-type]
    weights.write_bytes(data[:size])
    with pytest.raises(ModelFolderError, match=r"model\.safetensors"):
        Classifier.from_pretrained(model_copy, device="cpu")


def test_flipped_header_bytes_never_load_silently(model_copy: Path) -> None:
    """A flipped header byte is refused with the file named, or is harmless (same tensors) — never
    silently different weights (a damaged tensor name used to load with that tensor random)."""
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = data[8: 8 + header_len]
    original = load_model_folder(model_copy)[0].state_dict()
    name_at = 8 + header.index(b'"encoder.embeddings.word_embeddings.weight"') + 10
    dtype_at = 8 + header.index(b'"F32"') + 2
    offset_at = 8 + header.index(b'"data_offsets":[') + 17
    must_fail = [0, 3, 8, name_at, dtype_at, offset_at, 8 + header_len - 1]
    rng = random.Random(5)
    positions = must_fail + rng.sample(range(8 + header_len), 40)
    for i, position in enumerate(positions):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x01 << rng.randrange(8)
        weights.write_bytes(bytes(corrupt))
        try:
            loaded = load_model_folder(model_copy)[0].state_dict()
        except ModelFolderError as e:
            assert "model.safetensors" in str(e), (position, str(e))
            continue
        assert i >= len(must_fail), f"flip at byte {position} was not detected"
        assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in loaded), \
            f"flip at byte {position} loaded different weights"


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
@pytest.mark.parametrize("keep_safetensors", [True, False])
def test_pickle_weights_are_refused(model_copy: Path, name: str, keep_safetensors: bool) -> None:
    torch.save({"x": torch.zeros(1)}, model_copy / name)  # would run code on load if we unpickled it
    if not keep_safetensors:
        (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=re.escape(name)):
        Classifier.from_pretrained(model_copy, device="cpu")


def test_remote_code_is_never_trusted() -> None:
    sources = [p for pkg in ("model", "training", "inference") for p in (ROOT / pkg).rglob("*.py")]
    assert len(sources) > 10
    pattern = re.compile(r"""trust_remote_code["']?\s*[=:]\s*(?!False\b)\S""")
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in sources
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


# =========================================================================== config: fail before any work
def _config(tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    raw = yaml.safe_load((ROOT / TINY).read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


BAD_CONFIGS = {
    "unknown key": (lambda c: c["train"].update(learning_rte=0.1), "unknown key(s) ['learning_rte'] in 'train'"),
    "wrong type": (lambda c: c["train"].update(epochs="three"), "train.epochs: expected int, got 'three'"),
    "empty labels": (lambda c: c["tasks"][0].update(labels=[]), "expected a list of at least 2 labels, got []"),
    "duplicate label": (lambda c: c["tasks"][1].update(labels=["favor", "none", "favor"]),
                        "duplicate label(s) ['favor']"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_fails_before_any_work(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.train import main

    edit, message = BAD_CONFIGS[case]
    out = tmp_path / "run"
    assert main(["--config", str(_config(tmp_path, edit)), f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


@pytest.mark.slow
def test_bad_config_cli_exit_status(tmp_path: Path) -> None:
    edit, message = BAD_CONFIGS["unknown key"]
    out = tmp_path / "run"
    result = run(train_command(str(_config(tmp_path, edit)), f"output_dir={out}"), env=_env())
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


# =========================================================================== bad input: property-based
@pytest.fixture(scope="module")
def fuzz_clf(trained_run: Path) -> Classifier:
    """The session model, built once, with the AraBERT normaliser so that some texts normalise to nothing."""
    clf = Classifier.from_pretrained(trained_run / "best", device="cpu")
    clf.pre = dataclasses.replace(clf.pre, normalizer="arabert_v02")
    return clf


@contextlib.contextmanager
def _scoring_with(clf: Classifier) -> Iterator[None]:
    class Loaded:
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Classifier:
            return clf

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(score, "Classifier", Loaded)
        yield


def _run_fuzz_case(clf: Classifier, name: str, data: bytes, expected_ids: list[str], bad_lines: list[int],
                   dup_lines: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp, _scoring_with(clf):
        dump, out = Path(tmp) / name, Path(tmp) / "scores.jsonl"
        dump.write_bytes(data)
        # The loaded model stands in for loading, but the scorer fingerprints the real folder.
        summary, code = score.run_scoring(score.ScoreArgs(model=clf.model.name_or_path, input=str(dump), output=str(out),
                                                          buffer_size=4, device="cpu"))
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        errors = [json.loads(line) for line in score.errors_path(out).read_text(encoding="utf-8").splitlines()]
        leftovers = [p.name for p in Path(tmp).iterdir() if p.name not in {name, out.name, score.errors_path(out).name,
                                                                           out.name + ".summary.json",
                                                                           out.name + ".manifest.json"}]
    assert [row["id"] for row in got] == expected_ids  # each good record exactly once, in input order
    reported = [e["line"] for e in errors if not e["reason"].startswith("duplicate id")]
    assert sorted(reported) == sorted(bad_lines)
    assert [e["line"] for e in errors if e["reason"].startswith("duplicate id")] == dup_lines
    assert all(isinstance(e["reason"], str) and e["reason"].strip() for e in errors)
    assert code == (score.EXIT_BAD_RECORDS if bad_lines or dup_lines else score.EXIT_OK)
    assert summary is not None and (summary.scored, summary.errors) == (len(expected_ids), len(bad_lines))
    assert not leftovers, leftovers


DECORATIONS = ["\u202e", "\u200f", "\u200b", "\x00", "\x1b", "\t", "\r", "\n", "\u2028", "\ufeff", '"', "\\", ","]
VANISHING = ["😀", "🚀", "پ", "چ", "۱", "\u200c", "\u200f", "\u202e", "\x00"]  # all dropped by the AraBERT normaliser


@st.composite
def good_text(draw: st.DrawFn) -> str:
    text = " ".join(draw(st.lists(st.sampled_from(SENTENCES[:300]), min_size=1, max_size=2)))
    for ch in draw(st.lists(st.sampled_from(DECORATIONS), max_size=4)):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + ch + text[at:]
    return text


vanishing_text = st.text(alphabet=st.sampled_from(VANISHING), min_size=1, max_size=12)
blank_text = st.text(alphabet=st.sampled_from([" ", "\t", "\n", "\r", "\u3000", "\u00a0"]), max_size=5)
# (kind, value): kind "good" scores; "vanishing" scores only beside a good title; anything else is bad.
TEXTS = st.one_of(
    good_text().map(lambda t: ("good", t)), st.just(("good", HUGE_TEXT)), st.just(("vanishing", "😀" * 300_000)),
    vanishing_text.map(lambda t: ("vanishing", t)), blank_text.map(lambda t: ("bad", t)),
    st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.just("نص"), max_size=2),
              st.dictionaries(st.just("ar"), st.just("نص"))).map(lambda t: ("bad", t)),
    st.just(("missing", None)),
)
TITLES = st.one_of(st.just(("missing", None)), st.none().map(lambda t: ("bad", t)),
                   st.sampled_from(SENTENCES[:50]).map(lambda t: ("good", t)),
                   vanishing_text.map(lambda t: ("bad", t)), st.integers().map(lambda t: ("bad", t)))
_MISSING = object()  # an id field left out
ID_POOL = ["a", "b", "7", " a", "ع", "x\ny", "طرابلس-1"]
IDS = st.one_of(
    st.sampled_from(ID_POOL), st.integers(-3, 9), st.integers(10**20, 10**21), st.text(max_size=8),
    st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.just([]), st.just("   "),
    st.just(_MISSING),
)
BAD_JSON_LINES = [
    b'{"id": "t1", "text": "\xd9\x86\xd8\xb5 unterminated',  # invalid JSON
    b'{"id": "t2",, "text": "x"}', b"[1, 2, 3]", b'"a string"', b"nul", b"{", b"}",
    b'{"id": "t3", "text": "bad \xff\xfe bytes"}', b'{"id": "t4", "text": "cut \xd9"}', b"\xc3\x28",  # invalid UTF-8
    b'{"id": "t5", "text": "\\ud800 \xd9\x86\xd8\xb5"}', b'{"id": "\\udfff", "text": "\xd9\x86\xd8\xb5"}',  # lone surrogates
    b'{"id": 1' + b"9" * 5000 + b', "text": "\xd9\x86\xd8\xb5"}',  # an integer longer than Python will parse
    b"[" * 100_000,  # nesting deeper than the recursion limit
    b'{"id": "t6", "text": "raw \x00 NUL"}', b'{"id": "t7", "text": "raw\ttab"}',  # raw control characters
]
BLANK_LINES = [b"", b"   ", b"\t", b"\r"]


def _good_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(value.strip()))


def _scores(text: tuple[str, Any], title: tuple[str, Any]) -> bool:
    return text[0] == "good" or (text[0] == "vanishing" and title[0] == "good")


JSONL_ITEM = st.one_of(
    st.tuples(st.just("record"), IDS, TEXTS, TITLES), st.tuples(st.just("record"), IDS, TEXTS, TITLES),
    st.sampled_from(BAD_JSON_LINES).map(lambda b: ("raw", b)), st.sampled_from(BLANK_LINES).map(lambda b: ("blank", b)),
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(JSONL_ITEM, min_size=1, max_size=14), bom=st.booleans())
def test_fuzzed_jsonl_never_crashes_nor_loses_a_record(fuzz_clf: Classifier, items: list, bom: bool) -> None:
    lines, expected, bad, dups, seen = [], [], [], [], set()
    for item in items:
        n = len(lines) + 1
        if item[0] == "blank":
            lines.append(item[1])
            continue
        if item[0] == "raw":
            lines.append(item[1])
            bad.append(n)
            continue
        _, rid, text, title = item
        record: dict[str, Any] = {} if rid is _MISSING else {"id": rid}
        if text[0] != "missing":
            record["text"] = text[1]
        if title[0] != "missing":
            record["title"] = title[1]
        lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        if rid is not _MISSING and _good_id(rid) and _scores(text, title):
            expected.append(str(rid))
            if str(rid) in seen:
                dups.append(n)
            seen.add(str(rid))
        else:
            bad.append(n)
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n"
    _run_fuzz_case(fuzz_clf, "dump.jsonl", data, expected, bad, dups)


CSV_ID = st.one_of(st.sampled_from(["a", "b", "7", "x,y", 'q"q', "l\nm", "ع"]), st.just(""), st.just("  "))
CSV_TEXT = st.one_of(good_text().map(lambda t: ("good", t)), vanishing_text.map(lambda t: ("vanishing", t)),
                     blank_text.map(lambda t: ("bad", t)), st.just(("good", HUGE_TEXT[:200_000])))
CSV_TITLE = st.one_of(st.just(("bad", "")), st.sampled_from(SENTENCES[:50]).map(lambda t: ("good", t + "\n،\"")))
CSV_RAW = [b"only,two\r\n", b"a,b,c,d\r\n", b"u1,,\xff\xfe \xd9\x86\xd8\xb5\r\n", b"u2,\xd9,\xd9\x86\xd8\xb5\r\n"]
CSV_ITEM = st.one_of(
    st.tuples(st.just("row"), CSV_ID, CSV_TEXT, CSV_TITLE), st.tuples(st.just("row"), CSV_ID, CSV_TEXT, CSV_TITLE),
    st.sampled_from(CSV_RAW).map(lambda b: ("raw", b)), st.just(("blank", b"\r\n")),
)
_NEWLINE = re.compile(rb"\r\n|\r|\n")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(CSV_ITEM, min_size=1, max_size=12), bom=st.booleans())
def test_fuzzed_csv_never_crashes_nor_loses_a_record(fuzz_clf: Classifier, items: list, bom: bool) -> None:
    chunks = [b"id,title,text\r\n"]
    expected, bad, dups, seen = [], [], [], set()
    for item in items:
        line = 1 + sum(len(_NEWLINE.findall(c)) for c in chunks)  # where this record starts
        if item[0] in ("raw", "blank"):
            chunks.append(item[1])
            if item[0] == "raw":
                bad.append(line)
            continue
        _, rid, text, title = item
        buf = io.StringIO()
        csv.writer(buf).writerow([rid, title[1], text[1]])
        chunks.append(buf.getvalue().encode("utf-8"))
        if rid.strip() and _scores(text, title):
            expected.append(rid)
            if rid in seen:
                dups.append(line)
            seen.add(rid)
        else:
            bad.append(line)
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(chunks)
    _run_fuzz_case(fuzz_clf, "dump.csv", data, expected, bad, dups)
