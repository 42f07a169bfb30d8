"""Peak memory of ``python -m inference.score`` at two dump sizes (one subprocess each).

The scorer streams: it holds one buffer of records (``--buffer-size``) and the
batches cut from it, plus, while merging, the set of ids seen (to flag duplicates).
So peak RSS should hardly move between a 10k and a 100k dump. Each size runs in its own
process (``python -m bench.memory ARGS``: ``inference.score``'s ``main`` followed by a
read of the process's own ``VmHWM``); the parent samples ``VmRSS`` meanwhile, for a trace.

The model is built on nabaa's ``tiny`` backbone (here 1 layer, hidden 32, WordPiece trained
on the seeds) with the demo's tasks and preprocessing (up to 4 windows of 256 tokens), so
100k articles score in minutes on two cores: the e5-small model would take hours. The
streaming machinery measured here (reader, buffer, windows, batches, journal, merge)
is the same for any model; a bigger model adds its (constant) weights and activations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench.common as common


def tiny_model(dest: Path | None = None) -> Path:
    """A demo-shaped model folder on the ``tiny`` backbone (untrained heads)."""
    dest = dest or common.OUT / "tiny-h32-demo-model"
    if (dest / "model.safetensors").exists():
        return dest
    import torch
    from transformers import AutoTokenizer

    from model.modeling import MultiTaskClassifier
    from model.serialization import save_model_folder
    from model.tiny import build_tiny_backbone

    cfg = common.demo_config()
    texts = [r["text"] for r in common.read_records(common.ROOT / "seeds" / "train.jsonl")]
    backbone = build_tiny_backbone(texts, common.OUT / "tiny-h32-backbone", hidden_size=32, num_layers=1)
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(backbone, cfg.tasks, pooling=cfg.model.pooling)
    save_model_folder(dest, model, AutoTokenizer.from_pretrained(backbone), common.demo_preprocessing())
    return dest


def _vm_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def score_in_child(model: Path, dump: Path, extra: list[str] | None = None, poll_s: float = 0.25) -> dict[str, Any]:
    """Run the scoring CLI on ``dump`` in a subprocess; its peak RSS, an RSS trace, the time."""
    output = common.OUT / f"memory-{dump.name.split('.')[0]}-scores.jsonl"
    cmd = [sys.executable, "-m", "bench.memory", "--model", str(model), "--input", str(dump),
           "--output", str(output), "--overwrite", "--device", "cpu", *(extra or [])]
    # One torch thread: the figure here is memory, and on a small shared machine one thread
    # scores this tiny model fastest (spinning OpenMP threads lose to any other load).
    env = {**os.environ, **common.OFFLINE, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    trace: list[tuple[float, float]] = []
    while proc.poll() is None:
        rss = _vm_rss_mib(proc.pid)
        if rss is not None:
            trace.append((round(time.perf_counter() - start, 2), round(rss, 1)))
        time.sleep(poll_s)
    seconds = time.perf_counter() - start
    report = (proc.stdout.read() if proc.stdout else "").strip().splitlines()
    if proc.returncode != 0 or not report:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {proc.returncode}")
    child = json.loads(report[-1])
    for suffix in ("", ".errors.jsonl", ".summary.json"):
        Path(str(output) + suffix).unlink(missing_ok=True)
    step = max(1, len(trace) // 40)
    return {"peak_rss_mib": round(child["peak_rss_mib"], 1), "seconds": round(seconds, 1),
            "scoring_seconds": child["scoring_seconds"], "rss_trace_mib": trace[::step]}


def run(sizes: tuple[int, int], log=print) -> dict[str, Any]:
    model = tiny_model()
    rows = {}
    for n in sizes:
        dump = common.dump_file(n)
        log(f"  memory: scoring {n} articles in a subprocess (tiny model)")
        rows[str(n)] = score_in_child(model, dump) | {"articles": n}
        rows[str(n)]["articles_per_s"] = round(n / rows[str(n)]["scoring_seconds"], 1)
        log(f"    peak RSS {rows[str(n)]['peak_rss_mib']} MiB in {rows[str(n)]['seconds']}s")
    small, large = (rows[str(n)]["peak_rss_mib"] for n in sizes)
    return {"model": "tiny backbone (1 layer, hidden 32), demo tasks and preprocessing",
            "sizes": list(sizes), "rows": rows, "ratio": common.ratio(large, small)}


def main(argv: list[str] | None = None) -> int:
    """``inference.score`` in this process, then one JSON line: peak RSS and scoring time."""
    import contextlib
    import io

    from inference.score import main as score_main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = score_main(argv)
    print(json.dumps({"exit": code, "peak_rss_mib": common.peak_rss_mib(),
                      "scoring_seconds": round(time.perf_counter() - start, 2)}))
    return code


if __name__ == "__main__":
    sys.exit(main())
