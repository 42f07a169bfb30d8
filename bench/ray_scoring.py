"""Scoring at scale on this machine: the Ray engine against the single-process scorer, and
in-run dedup on a dump with wire copies.

    python -m bench.ray_scoring                     # 2 x 300 articles, dedup on 500 (~10 minutes on 2 cores)
    python -m bench.ray_scoring --articles 2000 --dedup-articles 1000
    python -m bench.ray_scoring --gpu               # on a GPU node: Ray engine, one actor per GPU (see below)

Contenders run as the user runs them, one command each (``python -m inference.score``),
alternating (A B, A B, ...), on the same model folder and the same input files:

- ``single``: the single-process scorer, torch's threads (2 on a 2-core machine);
- ``ray``: ``--engine ray --actors 2 --threads-per-actor 1`` with a local Ray started by the
  command: reading and tokenising in Ray tasks, two scoring actors;
- ``dedup`` / ``no_dedup``: the single-process scorer on a dump where 20 % of the records are
  wire copies (the text of an earlier record under a new id), with and without ``--no-dedup``.

Reported: wall seconds of the whole command (start-up, Ray start and model loads included),
articles/s over that wall time, and peak memory as the largest total PSS (proportional set
size: shared pages counted once across processes) of the command's process tree, sampled
every 0.2 s. ``--gpu`` runs the Ray engine alone on the GPU and prints its rate: the
one-command check for a GPU node.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, ROOT, bench_model, dump_file, read_records


def write_parts(records: list[dict[str, Any]], folder: Path, parts: int) -> Path:
    """``records`` split into ``parts`` JSONL files (a dump as archives ship it)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    size = -(-len(records) // parts)
    for k in range(parts):
        chunk = records[k * size:(k + 1) * size]
        (folder / f"part-{k}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk),
                                                encoding="utf-8")
    return folder


def with_wire_copies(records: list[dict[str, Any]], share: float, seed: int = 0) -> list[dict[str, Any]]:
    """Replace ``share`` of the records by copies of earlier ones (same title and text, new id)."""
    rng = random.Random(seed)
    out = [dict(r) for r in records]
    # In index order, so that a copied record is never replaced afterwards: exactly `share` repeats.
    for i in sorted(rng.sample(range(1, len(out)), int(share * len(out)))):
        source = out[rng.randrange(i)]
        out[i] = dict(source, id=f"{out[i]['id']}-wire")
    return out


def tree_pss_mib(root: int) -> float:
    """Total PSS of ``root`` and its descendants (MiB)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total / 1024


def run_command(args: list[str]) -> dict[str, Any]:
    """Run one scoring command; wall time, peak total PSS and its printed summary."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "inference.score", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mib(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{args}: exit {proc.returncode}\n{stderr[-3000:]}")
    summary_line = next((line for line in stdout.splitlines() if line.startswith("scored ")), "")
    return {"wall_s": round(wall, 1), "peak_pss_mib": round(peak[0]), "summary": summary_line}


def contend(contenders: dict[str, list[str]], rounds: int, articles: int) -> dict[str, Any]:
    """Alternate the commands ``rounds`` times; keep each one's fastest round."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, cmd in contenders.items():
            out_dir = Path(cmd[cmd.index("--output") + 1])
            shutil.rmtree(out_dir, ignore_errors=True)
            results[name].append(run_command(cmd))
            print(f"  round {r + 1} {name}: {results[name][-1]}", flush=True)
    best = {}
    for name, runs in results.items():
        fastest = min(runs, key=lambda x: x["wall_s"])
        best[name] = {**fastest, "articles_per_s": round(articles / fastest["wall_s"], 2),
                      "peak_pss_mib": max(x["peak_pss_mib"] for x in runs), "rounds": [x["wall_s"] for x in runs]}
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the trained demo model, else "
                                                      "a demo-shaped one)")
    parser.add_argument("--articles", type=int, default=600, help="articles for Ray vs single (2 files)")
    parser.add_argument("--dedup-articles", type=int, default=500, help="articles of the dump with wire copies")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="only the Ray engine, with GPU actors")
    args = parser.parse_args(argv)
    model, trained = bench_model(args.model)
    work = OUT / "ray_scoring"
    records = read_records(dump_file(max(args.articles, args.dedup_articles)))
    parts = write_parts(records[:args.articles], work / "parts", 2)
    common = ["--model", str(model), "--input", str(parts), "--format", "jsonl"]
    print(f"model {model} ({'trained' if trained else 'untrained heads'}); {args.articles} articles in 2 files")
    results: dict[str, Any] = {"model": str(model), "articles": args.articles}
    if args.gpu:
        gpu = contend({"ray_gpu": [*common, "--output", str(work / "ray_gpu"), "--engine", "ray"]},
                      args.rounds, args.articles)
        results["ray_gpu"] = gpu["ray_gpu"]
    else:
        results["ray_vs_single"] = contend({
            "single": [*common, "--output", str(work / "single"), "--device", "cpu"],
            "ray": [*common, "--output", str(work / "ray"), "--device", "cpu", "--engine", "ray", "--actors", "2",
                    "--threads-per-actor", "1"],
        }, args.rounds, args.articles)
        pair = results["ray_vs_single"]
        pair["ratio_ray_over_single"] = round(pair["ray"]["articles_per_s"] / pair["single"]["articles_per_s"], 3)
        wired = with_wire_copies(records[:args.dedup_articles], 0.2)
        dedup_in = write_parts(wired, work / "wired", 1)
        common = ["--model", str(model), "--input", str(dedup_in), "--format", "jsonl", "--device", "cpu"]
        results["dedup"] = contend({
            "dedup": [*common, "--output", str(work / "dedup")],
            "no_dedup": [*common, "--output", str(work / "no_dedup"), "--no-dedup"],
        }, args.rounds, args.dedup_articles)
        results["dedup"]["speedup"] = round(results["dedup"]["dedup"]["articles_per_s"]
                                            / results["dedup"]["no_dedup"]["articles_per_s"], 3)
    path = OUT / ("ray_scoring_gpu.json" if args.gpu else "ray_scoring.json")
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
