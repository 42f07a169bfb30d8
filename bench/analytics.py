"""Memory and time of ``inference.analyze`` on a large synthetic scored dump.

    python -m bench.analytics --rows 1000000                   # Parquet folder (the Ray engine's shape)
    python -m bench.analytics --rows 1000000 --format jsonl    # one JSONL file (inference.score's shape)

Writes ``--rows`` synthetic scored rows (20 outlets, 3 years of dates, the demo's three tasks with
per-label probabilities) under ``bench/out/analytics/``, then runs the analysis in a fresh
process under a DuckDB memory limit and reports that process's peak resident memory
(``VmHWM``) and wall time. Bounded memory means the peak stays flat as ``--rows`` grows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, ROOT

TASKS = {"topic": ["military", "politics", "economy", "health", "society"],
         "stance_gna": ["favor", "against", "none"], "stance_haftar": ["favor", "against", "none"]}
CHUNK = 100_000


def chunk_columns(start: int, n: int, rng: np.random.Generator, nested: bool) -> dict[str, object]:
    """``n`` scored rows as columns, shaped like inference.score's output with --keep source,date."""
    days = rng.integers(0, 3 * 365, n)
    dates = (np.datetime64("2019-01-01") + days).astype(str)
    columns: dict[str, object] = {"id": [f"a{start + i}" for i in range(n)],
                                  "source": [f"outlet-{k:02d}" for k in rng.integers(0, 20, n)], "date": dates}
    for task, labels in TASKS.items():
        probs = rng.dirichlet(np.ones(len(labels)), n)
        best = probs.argmax(1)
        columns[task] = np.array(labels)[best]
        columns[f"{task}_score"] = probs.max(1).round(6)
        if nested:
            columns[f"{task}_probs"] = [dict(zip(labels, row.round(6).tolist())) for row in probs]
        else:
            for j, label in enumerate(labels):
                columns[f"{task}_prob_{label}"] = probs[:, j].round(6)
    return columns


def make_scores(rows: int, fmt: str) -> Path:
    folder = OUT / "analytics" / f"{fmt}-{rows}"
    target = folder / "scores.jsonl" if fmt == "jsonl" else folder
    done = folder / ".complete"
    if done.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for k, start in enumerate(range(0, rows, CHUNK)):
            columns = chunk_columns(start, min(CHUNK, rows - start), rng, nested=False)
            pq.write_table(pa.table(columns), folder / f"part-{k:05d}.parquet")
    else:
        with open(target, "w", encoding="utf-8") as f:
            for start in range(0, rows, CHUNK):
                columns = chunk_columns(start, min(CHUNK, rows - start), rng, nested=True)
                names = list(columns)
                for i in range(len(columns["id"])):
                    f.write(json.dumps({c: _plain(columns[c][i]) for c in names}) + "\n")
    done.touch()
    return target


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


CHILD = """
import sys, time
from inference.analyze import main
start = time.time()
code = main(sys.argv[1:])
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print(f'BENCH seconds={time.time() - start:.1f} peak_rss_mib={hwm / 1024:.0f} code={code}')
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--memory-limit", default="512MB")
    p.add_argument("--every", default="week")
    args = p.parse_args(argv)
    began = time.time()
    scores = make_scores(args.rows, args.format)
    print(f"scores: {scores} ({time.time() - began:.0f} s to write)", flush=True)
    out = OUT / "analytics" / f"report-{args.format}-{args.rows}"
    cmd = [sys.executable, "-c", CHILD, "--scores", str(scores), "--out", str(out), "--every", args.every,
           "--memory-limit", args.memory_limit, "--no-progress"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(result.stdout.strip())
    if result.returncode:
        print(result.stderr[-3000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
