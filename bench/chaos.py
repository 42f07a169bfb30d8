"""Chaos rounds: SIGKILL scoring and training at random moments, resume, and count what was lost.

    python -m bench.chaos                                   # 3 rounds, 3000 records, 300 malformed inputs
    python -m bench.chaos --rounds 10 --records 20000 --kills 5 --fuzz 2000 --seed 1

Setup (in ``--work``, default ``bench/out/chaos``): a tiny model is trained once,
uninterrupted, on the first 48/24/24 seeds articles; it is the training reference and
its ``best/`` scores everything below. Then:

- **scoring**, per round: a fresh output; the scorer is started, SIGKILLed at a random
  moment (either shortly after its journal grew, or at a random time since start —
  during imports, model loading, scoring or the merge), restarted with ``--resume``,
  killed again, ... ``--kills`` times, then left to finish. Sometimes the journal is also
  torn by hand (a partial buffer and half a line, as a kill inside ``write`` leaves it).
  The output must equal an uninterrupted run's byte for byte; ids are counted for
  records lost (in the reference, not in the output) and duplicated.
- **training**, per round: a run sharing the reference's backbone is killed at random
  moments the same way (after a new checkpoint, or at a random time) and resumed until
  it completes; its final weights and dev metrics are compared with the reference.
- **fuzz**: ``--fuzz`` malformed records (bad JSON, bad UTF-8, lone surrogates, huge
  numbers, missing/empty/non-string text and ids, texts that normalise to nothing,
  1 MB texts, control and bidi characters, duplicate ids, broken CSV rows) mixed with
  good ones, in JSONL and CSV files, scored in-process: no exception may escape, every
  bad record must be in the errors file, every good one scored once, in order.

The summary is printed and written as JSON (``--summary``, default ``WORK/summary.json``).
Exit status 0 when nothing was lost, duplicated, changed or crashed; 1 otherwise.
Subprocesses run with ``OMP_NUM_THREADS=1`` (much faster than two threads per
process on a small shared machine).
"""

from __future__ import annotations

import argparse
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
from collections import Counter
from pathlib import Path
from typing import Any

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TINY = "configs/tiny.yaml"
TRAIN_OVERRIDES = ["--no-finalize", "train.epochs=3", "train.save_every_steps=2"]
CHECKPOINT = re.compile(r"^step_(\d+)$")


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- processes
def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:  # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=f, stderr=subprocess.STDOUT)


def wait_until(condition: Any, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not condition():
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True if it was still running."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise


# --------------------------------------------------------------------------- data
def sentences() -> list[str]:
    out = []
    for line in (ROOT / "seeds" / "articles.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            out += [s.strip() for s in re.split(r"(?<=[.!؟?])\s+|\n+", json.loads(line)["text"]) if len(s.strip()) > 20]
    return out


def make_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", 48), ("dev", 24), ("test", 24)):
        lines = (ROOT / "seeds" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        out[split] = folder / f"{split}.jsonl"
        out[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def make_dump(path: Path, n: int, rng: random.Random, pool: list[str]) -> None:
    """``n`` recombined articles, ~1% malformed lines."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if rng.random() < 0.01:
                f.write(rng.choice(['{"id": "cut", "text": "نص', "[1]", '{"id": 1.5, "text": "نص"}']) + "\n")
                continue
            record = {"id": f"d{i:07d}", "title": rng.choice(pool)[:60] if rng.random() < 0.5 else "",
                      "text": " ".join(rng.sample(pool, rng.randint(1, 3)))}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def train_cmd(corpus: dict[str, Path], run_dir: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "training.train", "--config", TINY, *(["--resume"] if resume else []),
            *TRAIN_OVERRIDES, f"data.train_file={corpus['train']}", f"data.dev_file={corpus['dev']}",
            f"data.test_file={corpus['test']}", f"output_dir={run_dir}"]


def score_cmd(model: Path, dump: Path, out: Path, buffer_size: int) -> list[str]:
    return [sys.executable, "-m", "inference.score", "--model", str(model), "--input", str(dump),
            "--output", str(out), "--buffer-size", str(buffer_size)]


# --------------------------------------------------------------------------- scoring rounds
def journal_of(out: Path) -> Path:
    return out.with_name(out.name + ".part-0-of-1.journal")


def tear(journal: Path, rng: random.Random) -> bool:
    """Cut the journal mid-buffer and leave half a line, as a kill inside write() may."""
    data = journal.read_bytes() if journal.exists() else b""
    ends = [m.end() for m in re.finditer(b"\n", data)]
    if len(ends) < 3:
        return False
    keep = rng.randrange(1, len(ends) - 1)
    journal.write_bytes(data[: ends[keep - 1]] + data[ends[keep - 1]: ends[keep]][: rng.randint(1, 30)])
    return True


def ids_of(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def scoring_round(r: int, cmd: list[str], out: Path, reference: Path, kills: int, rng: random.Random,
                  log: Path) -> dict[str, Any]:
    journal = journal_of(out)
    done_kills, torn, modes = 0, 0, Counter()
    resume = False
    while True:
        proc = start(cmd + (["--resume"] if resume else []), log)
        resume = True
        if done_kills >= kills:
            code = finish(proc)
            break
        if rng.random() < 0.6:
            mode = "after journal growth"
            size = journal.stat().st_size if journal.exists() else 0
            wait_until(lambda size=size: journal.exists() and journal.stat().st_size > size, proc)
            time.sleep(rng.uniform(0, 0.3))
        else:
            mode = "random time"
            time.sleep(rng.uniform(0.5, 9.0))
        if not kill(proc):
            code = proc.returncode  # it finished first
            break
        done_kills += 1
        modes[mode] += 1
        if rng.random() < 0.3 and tear(journal, rng):
            torn += 1
    want, got = ids_of(reference), ids_of(out)
    missing = Counter(want) - Counter(got)
    extra = Counter(got) - Counter(want)
    identical = out.exists() and out.read_bytes() == reference.read_bytes()
    errors_identical = (out.with_name(out.name + ".errors.jsonl").read_bytes()
                        == reference.with_name(reference.name + ".errors.jsonl").read_bytes())
    result = {"round": r, "kills": done_kills, "kill_modes": dict(modes), "torn_journals": torn, "exit": code,
              "records_lost": sum(missing.values()), "records_duplicated": sum(extra.values()),
              "identical": identical and errors_identical}
    print(f"scoring round {r}: {result}", flush=True)
    return result


# --------------------------------------------------------------------------- training rounds
def checkpoints(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return [int(m.group(1)) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))] if folder.exists() else []


def evals(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if '"eval"' in x]


def metric_diff(a: list[dict], b: list[dict]) -> float:
    if [(e["epoch"], e["step"]) for e in a] != [(e["epoch"], e["step"]) for e in b]:
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        worst = max(worst, abs(x["dev_mean_macro_f1"] - y["dev_mean_macro_f1"]))
        for task, m in x["dev"].items():
            worst = max(worst, *(abs(m[k] - y["dev"][task][k]) for k in ("accuracy", "macro_f1")))
    return worst


def weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    if x.keys() != y.keys():
        return float("inf")
    return max((x[k] - y[k]).abs().max().item() for k in x)


def final_weights(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"step_{max(checkpoints(run_dir)):012d}" / "model.safetensors"


def training_round(r: int, corpus: dict[str, Path], reference: Path, run_dir: Path, kills: int,
                   rng: random.Random, log: Path) -> dict[str, Any]:
    shutil.copytree(reference / "backbone", run_dir / "backbone")
    done_kills, modes, resume = 0, Counter(), False
    while True:
        proc = start(train_cmd(corpus, run_dir, resume), log)
        resume = True
        if done_kills >= kills:
            code = finish(proc)
            break
        if rng.random() < 0.6:
            mode = "after a new checkpoint"
            seen = len(checkpoints(run_dir))
            wait_until(lambda seen=seen: len(checkpoints(run_dir)) > seen, proc)
            time.sleep(rng.uniform(0, 0.3))
        else:
            mode = "random time"
            time.sleep(rng.uniform(1.0, 10.0))
        if not kill(proc):
            code = proc.returncode
            break
        done_kills += 1
        modes[mode] += 1
    from inference import Classifier

    loadable = True
    try:
        Classifier.from_pretrained(run_dir / "best", device="cpu")
    except Exception as e:  # reported, not raised: the summary counts it
        print(f"training round {r}: best/ does not load: {e}", flush=True)
        loadable = False
    wdiff = weight_diff(final_weights(run_dir), final_weights(reference)) if code == 0 else float("inf")
    mdiff = metric_diff(evals(run_dir), evals(reference)) if code == 0 else float("inf")
    result = {"round": r, "kills": done_kills, "kill_modes": dict(modes), "exit": code, "best_loads": loadable,
              "max_weight_diff": wdiff, "max_metric_diff": mdiff,
              "identical": code == 0 and loadable and wdiff <= 1e-5 and mdiff <= 1e-4}
    print(f"training round {r}: {result}", flush=True)
    return result


# --------------------------------------------------------------------------- fuzz
VANISHING = ["😀", "🚀", "پ", "چ", "۱", "\u200c", "\u200f", "\u202e", "\x00"]  # dropped by the AraBERT normaliser
DECORATIONS = ["\u202e", "\u200f", "\u200b", "\x00", "\x1b", "\t", "\r", "\n", "\u2028", "\ufeff", '"', ",", "\\"]
BAD_JSON = [
    b'{"id": "j1", "text": "\xd9\x86\xd8\xb5', b'{"id": 2,, "text": "x"}', b"[1, 2]", b'"text"', b"nul", b"{",
    b'{"id": "j3", "text": "\xff\xfe"}', b'{"id": "j4", "text": "\xd9"}', b"\xc3\x28",
    b'{"id": "j5", "text": "\\udc00 \xd9\x86\xd8\xb5"}', b'{"id": "\\ud800", "text": "\xd9\x86\xd8\xb5"}',
    b'{"id": 1' + b"9" * 5000 + b', "text": "\xd9\x86\xd8\xb5"}', b"[" * 100_000, b'{"id": "j6", "text": "\x00"}',
]
BAD_CSV = [b"two,fields\r\n", b"a,b,c,d\r\n", b"c1,,\xff\xfe\r\n", b"c2,\xd9,\xd9\x86\xd8\xb5\r\n"]


def arabic(value: Any) -> bool:
    """A string with an Arabic letter: it survives normalisation."""
    return isinstance(value, str) and any("\u0621" <= c <= "\u064a" for c in value)


class Fuzzer:
    """Random records with a known fate: scored (good) or reported (bad); duplicates are both."""

    def __init__(self, rng: random.Random, pool: list[str]):
        self.rng, self.pool = rng, pool
        self.huge = ("أعلنت الحكومة في طرابلس عن خطة جديدة. " * 30_000)[:1_000_000]

    def good_text(self) -> str:
        text = " ".join(self.rng.sample(self.pool, self.rng.randint(1, 2)))
        for _ in range(self.rng.randint(0, 4)):
            at = self.rng.randint(0, len(text))
            text = text[:at] + self.rng.choice(DECORATIONS) + text[at:]
        return text if self.rng.random() > 0.03 else self.huge

    def vanishing(self) -> str:
        return "".join(self.rng.choice(VANISHING) for _ in range(self.rng.randint(1, 10)))

    def record(self, i: int, seen: list[str]) -> tuple[dict[str, Any] | None, bytes | None, bool]:
        """(record or None, raw line or None, scored?)."""
        rng = self.rng
        kind = rng.choice(["good", "good", "dup", "bad_id", "bad_text", "vanishing", "raw"])
        if kind == "raw":
            return None, rng.choice(BAD_JSON), False
        rid: Any = rng.choice([f"f{i}", i]) if kind != "dup" or not seen else rng.choice(seen)
        record: dict[str, Any] = {"id": rid, "text": self.good_text()}
        if rng.random() < 0.5:
            record["title"] = rng.choice([None, 7, "", self.vanishing(), rng.choice(self.pool)[:50]])
        if kind == "bad_id":
            choice = rng.choice([1.5, float("nan"), True, False, None, [1], {}, "", "   ", "missing"])
            if choice == "missing":
                del record["id"]
            else:
                record["id"] = choice
            return record, None, False
        if kind == "bad_text":
            choice = rng.choice([None, "", " \t\n", "\u3000", 5, 2.5, True, ["نص"], {"a": "b"}, "missing",
                                 "😀" * 300_000])
            if choice == "missing":
                del record["text"]
            else:
                record["text"] = choice
            # 1 MB of emoji is a string that normalises to nothing: then only a real title can carry it.
            return record, None, isinstance(choice, str) and choice.startswith("😀") and arabic(record.get("title"))
        if kind == "vanishing":
            record["text"] = self.vanishing()
            return record, None, arabic(record.get("title"))
        return record, None, True

    def jsonl(self, n: int) -> tuple[bytes, list[str], list[int], list[int], int]:
        lines, expected, bad, dups, seen = [], [], [], [], []
        for i in range(n):
            record, raw, scored = self.record(i, seen)
            line_no = len(lines) + 1
            lines.append(raw if raw is not None else json.dumps(record, ensure_ascii=False).encode("utf-8"))
            if scored:
                rid = str(record["id"])  # type: ignore[index]
                if rid in seen:
                    dups.append(line_no)
                seen.append(rid)
                expected.append(rid)
            else:
                bad.append(line_no)
        return b"\n".join(lines) + b"\n", expected, bad, dups, n

    def csv(self, n: int) -> tuple[bytes, list[str], list[int], list[int], int]:
        chunks, expected, bad, dups, seen = [b"id,title,text\r\n"], [], [], [], []
        newline = re.compile(rb"\r\n|\r|\n")
        for i in range(n):
            line_no = 1 + sum(len(newline.findall(c)) for c in chunks)
            kind = self.rng.choice(["good", "good", "dup", "bad_id", "bad_text", "vanishing", "raw"])
            if kind == "raw":
                chunks.append(self.rng.choice(BAD_CSV))
                bad.append(line_no)
                continue
            rid = self.rng.choice(seen) if kind == "dup" and seen else self.rng.choice([f"c{i}", f'c"{i}', f"c,{i}",
                                                                                          f"c\n{i}"])
            title = self.rng.choice(["", self.rng.choice(self.pool)[:50] + "\n،\""])
            text = self.good_text()[:200_000]
            scored = True
            if kind == "bad_id":
                rid, scored = self.rng.choice(["", "  "]), False
            elif kind == "bad_text":
                text, scored = self.rng.choice(["", " \n ", "\u3000"]), False
            elif kind == "vanishing":
                text, scored = self.vanishing(), bool(title)
            buf = io.StringIO()
            csv.writer(buf).writerow([rid, title, text])
            chunks.append(buf.getvalue().encode("utf-8"))
            if scored:
                if rid in seen:
                    dups.append(line_no)
                seen.append(rid)
                expected.append(rid)
            else:
                bad.append(line_no)
        return b"".join(chunks), expected, bad, dups, n


def fuzz(model: Path, total: int, rng: random.Random, pool: list[str]) -> dict[str, Any]:
    import torch

    import inference.score as score
    from inference import Classifier

    torch.set_num_threads(1)
    clf = Classifier.from_pretrained(model, device="cpu")
    clf.pre = dataclasses.replace(clf.pre, normalizer="arabert_v02")  # so that some texts normalise to nothing

    class Loaded:  # run_scoring loads its model by name; hand it the one built above
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Classifier:
            return clf

    real, score.Classifier = score.Classifier, Loaded
    fuzzer = Fuzzer(rng, pool)
    stats = Counter()
    try:
        while stats["records"] < total:
            n = min(40, total - stats["records"])
            fmt = rng.choice(["jsonl", "csv"])
            data, expected, bad, dups, count = fuzzer.jsonl(n) if fmt == "jsonl" else fuzzer.csv(n)
            stats["records"] += count
            stats["malformed"] += len(bad)
            stats["duplicate_ids"] += len(dups)
            stats["good"] += count - len(bad)
            with tempfile.TemporaryDirectory() as tmp:
                dump, out = Path(tmp) / f"fuzz.{fmt}", Path(tmp) / "scores.jsonl"
                dump.write_bytes(data)
                try:
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        score.run_scoring(score.ScoreArgs(model=str(model), input=str(dump), output=str(out),
                                                          buffer_size=rng.choice([1, 3, 8, 64]), device="cpu"))
                except Exception as e:  # counted: the point of the fuzz
                    stats["crashes"] += 1
                    print(f"fuzz crash ({fmt}): {type(e).__name__}: {e}", flush=True)
                    continue
                got = ids_of(out)
                errors = [json.loads(x) for x in (Path(tmp) / "scores.jsonl.errors.jsonl").read_text(
                    encoding="utf-8").splitlines()]
            stats["records_lost"] += sum((Counter(expected) - Counter(got)).values())
            stats["records_duplicated"] += sum((Counter(got) - Counter(expected)).values())
            stats["out_of_order"] += int(got != expected and Counter(got) == Counter(expected))
            reported = Counter(e["line"] for e in errors if not e["reason"].startswith("duplicate id"))
            stats["bad_unreported"] += sum((Counter(bad) - reported).values())
            stats["good_reported_as_bad"] += sum((reported - Counter(bad)).values())
            reported_dups = [e["line"] for e in errors if e["reason"].startswith("duplicate id")]
            stats["duplicates_unreported"] += sum((Counter(dups) - Counter(reported_dups)).values())
    finally:
        score.Classifier = real
    result = {k: stats[k] for k in ("records", "malformed", "duplicate_ids", "good", "crashes", "records_lost",
                                    "records_duplicated", "out_of_order", "bad_unreported", "good_reported_as_bad",
                                    "duplicates_unreported")}
    print(f"fuzz: {result}", flush=True)
    return result


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="kill rounds for scoring and for training")
    p.add_argument("--records", type=int, default=3000, help="records in the scored dump")
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs per round before it may finish")
    p.add_argument("--fuzz", type=int, default=300, help="fuzzed records (about 2/3 malformed or duplicate)")
    p.add_argument("--buffer-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "chaos")
    p.add_argument("--summary", type=Path, default=None, help="default WORK/summary.json")
    args = p.parse_args(argv)

    t0 = time.time()
    rng = random.Random(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    log = args.work / "children.log"
    pool = sentences()
    corpus = make_corpus(args.work / "corpus")

    print("training the reference model (uninterrupted) ...", flush=True)
    reference = args.work / "train-reference"
    proc = start(train_cmd(corpus, reference, resume=False), log)
    if finish(proc) != 0:
        print(f"reference training failed; see {log}", file=sys.stderr)
        return 1
    model = reference / "best"

    print(f"scoring the reference dump of {args.records} records (uninterrupted) ...", flush=True)
    dump = args.work / "dump.jsonl"
    make_dump(dump, args.records, rng, pool)
    ref_scores = args.work / "scores-reference.jsonl"
    finish(start(score_cmd(model, dump, ref_scores, args.buffer_size), log))

    scoring = [scoring_round(r, score_cmd(model, dump, args.work / f"scores-round{r}.jsonl", args.buffer_size),
                             args.work / f"scores-round{r}.jsonl", ref_scores, args.kills, rng, log)
               for r in range(args.rounds)]
    training = [training_round(r, corpus, reference, args.work / f"train-round{r}", args.kills, rng, log)
                for r in range(args.rounds)]
    fuzzed = fuzz(model, args.fuzz, rng, pool)

    def total(rows: list[dict], key: str) -> int:
        return sum(row[key] for row in rows)

    summary = {
        "command": "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "scoring": {"rounds": args.rounds, "records": args.records, "kills": total(scoring, "kills"),
                    "kills_survived": sum(r["kills"] for r in scoring if r["identical"]),
                    "torn_journals": total(scoring, "torn_journals"),
                    "records_lost": total(scoring, "records_lost"),
                    "records_duplicated": total(scoring, "records_duplicated"),
                    "outputs_identical": sum(r["identical"] for r in scoring), "per_round": scoring},
        "training": {"rounds": args.rounds, "kills": total(training, "kills"),
                     "kills_survived": sum(r["kills"] for r in training if r["identical"]),
                     "runs_identical": sum(r["identical"] for r in training),
                     "max_weight_diff": max((r["max_weight_diff"] for r in training), default=0.0),
                     "max_metric_diff": max((r["max_metric_diff"] for r in training), default=0.0),
                     "per_round": training},
        "fuzz": fuzzed,
    }
    summary["totals"] = {
        "kills": summary["scoring"]["kills"] + summary["training"]["kills"],
        "kills_survived": summary["scoring"]["kills_survived"] + summary["training"]["kills_survived"],
        "malformed_inputs_tried": fuzzed["malformed"] + fuzzed["duplicate_ids"],
        "records_lost": summary["scoring"]["records_lost"] + fuzzed["records_lost"],
        "records_duplicated": summary["scoring"]["records_duplicated"] + fuzzed["records_duplicated"],
        "crashes": fuzzed["crashes"],
    }
    summary["seconds"] = round(time.time() - t0, 1)
    ok = (summary["totals"]["kills"] == summary["totals"]["kills_survived"]
          and summary["scoring"]["outputs_identical"] == args.rounds
          and summary["training"]["runs_identical"] == args.rounds
          and not any(fuzzed[k] for k in ("crashes", "records_lost", "records_duplicated", "out_of_order",
                                          "bad_unreported", "good_reported_as_bad", "duplicates_unreported")))
    summary["ok"] = ok
    path = args.summary or args.work / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary["totals"] | {"ok": ok, "seconds": summary["seconds"]}, indent=2))
    print(f"summary: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
