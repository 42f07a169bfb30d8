"""Run nabaa's benchmarks and regenerate the tables in ``docs/benchmarks.md``.

    python -m bench.run --quick            # what `make bench` runs: small sizes, under 10 minutes
    python -m bench.run --full             # the sizes quoted in docs/benchmarks.md
    python -m bench.run --full --only scoring,quant   # some sections; the others keep their last results
    python -m bench.run --quick --model runs/demo/best --threads 2

Sections: ``peak`` (matmul ceiling), ``scoring`` (articles/s against pipelines and a naive
loop), ``quant`` (int8 / bf16 speed and F1), ``training`` (nabaa's loop against
``Trainer``), ``memory`` (peak RSS of the scoring CLI at two dump sizes), ``gpu`` (skipped
without CUDA). Results go to ``bench/out/results.json`` (merged section by section) and the
tables between ``<!-- bench:NAME:begin -->`` / ``<!-- bench:NAME:end -->`` markers in the
docs are rewritten from it. Every comparison runs its contenders side by side in one
process, interleaved, and reports ratios: absolute numbers on a shared machine move, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench.common as common

SECTIONS = ("peak", "scoring", "quant", "training", "memory", "gpu")
RESULTS = common.OUT / "results.json"
DOCS = common.ROOT / "docs" / "benchmarks.md"

SIZES = {
    "smoke": {"scoring_articles": 4, "scoring_rounds": 1, "quant_articles": 4, "quant_rounds": 1,
              "memory_sizes": (50, 200), "train_steps": 2, "train_rounds": 1, "train_memory_steps": 2,
              "gpu_articles": 64},
    "quick": {"scoring_articles": 24, "scoring_rounds": 2, "quant_articles": 24, "quant_rounds": 2,
              "memory_sizes": (2_000, 20_000), "train_steps": 3, "train_rounds": 2, "train_memory_steps": 2,
              "gpu_articles": 2_000},
    "full": {"scoring_articles": 96, "scoring_rounds": 2, "quant_articles": 64, "quant_rounds": 3,
             "memory_sizes": (10_000, 100_000), "train_steps": 5, "train_rounds": 2, "train_memory_steps": 3,
             "gpu_articles": 10_000},
}
GOALS = {"vs_pipelines": 4.0, "vs_naive": 2.0, "int8_speed": 1.5, "int8_f1_points": 1.0, "memory_ratio": 1.2,
         "training_ratio": 1.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- running
def run_sections(mode: str, only: list[str], model: str | None, threads: int | None,
                 results_path: Path = RESULTS) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    sizes = SIZES[mode]
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    folder, trained = common.bench_model(model)
    stamp = {"mode": mode, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    results["machine"] = common.machine_info() | stamp | {"model": str(folder), "trained_model": trained}
    log(f"mode {mode}; model {folder} ({'trained' if trained else 'UNTRAINED: speed only'}); "
        f"torch threads {torch.get_num_threads()}")
    # The dump for every section; the memory section makes its own sizes.
    dump = common.dump_file(max(sizes["scoring_articles"], sizes["quant_articles"], sizes["gpu_articles"]))
    for section in only:
        start = time.perf_counter()
        log(f"section {section}")
        if section == "peak":
            from bench.peak import run_peak

            out = run_peak()
        elif section == "scoring":
            from bench import scoring

            out = scoring.run(folder, dump, sizes["scoring_articles"], sizes["scoring_rounds"], log=log)
        elif section == "quant":
            from bench import quant

            out = quant.run(folder, trained, dump, sizes["quant_articles"], sizes["quant_rounds"], log=log)
        elif section == "training":
            from bench import training_speed

            out = training_speed.run(sizes["train_steps"], sizes["train_rounds"], sizes["train_memory_steps"], log=log)
        elif section == "memory":
            from bench import memory

            out = memory.run(sizes["memory_sizes"], log=log)
        elif section == "gpu":
            from bench.peak import run_gpu

            out = run_gpu(folder, common.read_records(dump, sizes["gpu_articles"]), log=log)
        else:
            raise ValueError(section)
        out = {**stamp, "torch_threads": torch.get_num_threads(), **out,
               "section_seconds": round(time.perf_counter() - start, 1)}
        results[section] = out
        log(f"section {section} done in {out['section_seconds']}s")
        save(results, results_path)
    return results


def save(results: dict[str, Any], path: Path = RESULTS) -> None:
    common.save_json(path, results)


# --------------------------------------------------------------------------- tables
def _goal(value: float | None, goal: float, higher: bool = True) -> str:
    if value is None or value != value:
        return "n/a"
    ok = value >= goal if higher else value <= goal
    return "met" if ok else "**missed**"


def _when(section: dict[str, Any]) -> str:
    return (f"_{section.get('mode', '?')} run, {section.get('date', '?')}, torch threads "
            f"{section.get('torch_threads', '?')}_")


def table_machine(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    isa = ", ".join(m.get("isa", [])) or "none listed"
    return [
        f"- CPU: {m['cpu']}; {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"instruction sets: {isa}; oneDNN bf16 kernels: {'yes' if m.get('onednn_bf16') else 'no'}",
        f"- torch threads {m['torch_threads']}; torch {m['torch']}, transformers {m['transformers']}, "
        f"Python {m['python']}; {m.get('memory_gib')} GiB RAM; CUDA: {'yes, ' + m.get('gpu', '') if m['cuda'] else 'no'}",
        f"- load average when the last run started: {m.get('load_average_at_start')} (shared machine)",
        *([f"- instruction-set caps: {', '.join(f'`{k}={v}`' for k, v in m['isa_caps'].items())}"]
          if m.get("isa_caps") else []),
        f"- model: `{m['model']}` ({'trained demo model' if m['trained_model'] else 'untrained demo-shaped model'}); "
        f"last run: {m['mode']}, {m['date']}",
    ]


SCORING_LABELS = {
    "nabaa": "nabaa `Classifier`, fp32, ≤ {w} windows/article",
    "nabaa_1window": "nabaa `Classifier`, fp32, 1 window (baselines' truncation)",
    "nabaa_cli": "nabaa `python -m inference.score`, as shipped (`--dtype auto`)",
    "pipelines_3x": "(a) 3 × `pipeline(\"text-classification\")`, batch 8",
    "naive_loop": "(b) naive loop, multi-task model, pad to 256, batch 8",
    "naive_windows": "(b′) the same naive loop over nabaa's windows (≤ {w}/article), averaged",
    "nabaa_bf16": "nabaa `Classifier`, bf16 (= `auto` on AMX CPUs), ≤ {w} windows/article",
    "nabaa_1window_bf16": "nabaa `Classifier`, bf16, 1 window",
    "naive_loop_bf16": "(b) naive loop in bf16 (`model.to(torch.bfloat16)`)",
    "naive_windows_bf16": "(b′) naive loop over nabaa's windows in bf16",
}


def naive_twin(name: str) -> str:
    """The naive loop that makes the same predictions as a nabaa row: (b) for one window,
    (b′) for nabaa as shipped."""
    return "naive_loop" if "1window" in name else "naive_windows"


def twin_ratio(row: dict[str, Any], name: str) -> float:
    """A nabaa row against its naive twin in the same precision (bf16 rows against the bf16
    loops where the run has them; older results: the fp32 loop)."""
    twin = naive_twin(name)
    return row.get(f"x_vs_{twin}_same_dtype", row.get(f"x_vs_{twin}", float("nan")))


def table_scoring(r: dict[str, Any]) -> list[str]:
    s = r["scoring"]
    rows = s["rows"]
    out = [_when(s) + f"; {s['articles']} dump articles, {s['rounds']} interleaved rounds, median", "",
           "| contender | windows / article | articles/s | real tokens/s | × (a) | × (b) | × (b′) | × (a) per token | "
           f"goal ≥{GOALS['vs_pipelines']:g}× (a) | goal ≥{GOALS['vs_naive']:g}× its naive twin |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    base_tps = rows["pipelines_3x"]["real_tokens_per_s"]
    for name, row in rows.items():
        label = SCORING_LABELS.get(name, name).format(w=s["predict_max_windows"])
        ours = name.startswith("nabaa")
        twin = naive_twin(name)
        same = " bf16" if name.endswith("_bf16") and "x_vs_naive_loop_same_dtype" in row else ""
        twin_goal = f"{_goal(twin_ratio(row, name), GOALS['vs_naive'])} ({'b' if twin == 'naive_loop' else 'b′'}{same})"
        out.append(
            f"| {label} | {row['windows_per_article']:.2f} | {row['articles_per_s']:.2f} | "
            f"{row['real_tokens_per_s']:.0f} | {row['x_vs_pipelines_3x']:.2f} | {row['x_vs_naive_loop']:.2f} | "
            f"{row.get('x_vs_naive_windows', float('nan')):.2f} | "
            f"{common.ratio(row['real_tokens_per_s'], base_tps):.2f} | "
            f"{_goal(row['x_vs_pipelines_3x'], GOALS['vs_pipelines']) if ours else ''} | "
            f"{twin_goal if ours else ''} |")
    out += ["", "Largest logit difference between nabaa (fp32) and the naive loop doing the same work: "
                f"one window against (b) {s.get('max_abs_logit_diff_1window_vs_naive', float('nan')):.2e}, "
                f"as shipped against (b′) {s.get('max_abs_logit_diff_shipped_vs_naive_windows', float('nan')):.2e} "
                "(other padding and batching)."]
    return out


QUANT_LABELS = {"int8": "int8 (`quantize=\"int8\"`: outlier channels in fp32)",
                "int8_plain": "int8, torch's plain `quantize_dynamic` (no outlier handling)"}


def table_quant(r: dict[str, Any]) -> list[str]:
    q = r["quant"]
    note = "" if q["trained_model"] else " — **untrained model: F1 meaningless, agreement only**"
    out = [_when(q) + f"; speed: {q['articles']} dump articles, {q['rounds']} interleaved rounds, as shipped; "
           f"F1: seeds/test.jsonl{note}", "",
           "| variant | articles/s | × fp32 | mean macro-F1 | Δ F1 (points) | labels = fp32 | goal |",
           "|---|---|---|---|---|---|---|"]
    for name, row in q["rows"].items():
        goal = ""
        if name == "int8":
            quality = (_goal(-row['f1_points_vs_fp32'], GOALS['int8_f1_points'], higher=False)
                       if q["trained_model"] else "not judged (untrained model)")
            goal = (f"≥{GOALS['int8_speed']:g}×: {_goal(row['x_vs_fp32'], GOALS['int8_speed'])}; "
                    f"≤{GOALS['int8_f1_points']:g} point lost: {quality}")
        out.append(f"| {QUANT_LABELS.get(name, name)} | {row['articles_per_s']:.2f} | {row['x_vs_fp32']:.2f} | {row['mean_macro_f1']:.4f} | "
                   f"{row['f1_points_vs_fp32']:+.2f} | {100 * row['label_agreement_with_fp32']:.1f}% | {goal} |")
    out += ["", f"bf16 kernels (oneDNN) available: {'yes' if q['bf16_kernels'] else 'no'}; "
                f"quantized engine: `{q['quantized_engine']}`."]
    return out


def table_memory(r: dict[str, Any]) -> list[str]:
    m = r["memory"]
    out = [_when(m) + f" in the parent; model: {m['model']}; one subprocess per size, 1 torch thread", "",
           "| articles | peak RSS (MiB) | wall time (s) | articles/s |", "|---|---|---|---|"]
    for row in m["rows"].values():
        out.append(f"| {row['articles']:,} | {row['peak_rss_mib']:.0f} | {row['seconds']:.0f} | "
                   f"{row['articles_per_s']:.0f} |")
    small, large = m["sizes"]
    out += ["", f"peak RSS ratio {large:,} / {small:,}: **{m['ratio']:.2f}** "
                f"(goal ≤ {GOALS['memory_ratio']:g}: {_goal(m['ratio'], GOALS['memory_ratio'], higher=False)})"]
    return out


def table_training(r: dict[str, Any]) -> list[str]:
    t = r["training"]
    out = [_when(t) + f"; batch {t['batch_size']}, max_length {t['max_length']}, fp32 unless named, {t['steps']} steps "
           f"(first one untimed) × {t['rounds']} rounds per loop, interleaved; peak RSS: "
           f"{t['memory_steps']} steps in a process of its own", "",
           "| loop | real tokens/s | median step (s) | × Trainer | peak RSS (MiB) | goal |", "|---|---|---|---|---|---|"]
    names = {"nabaa": "nabaa (`training.train._train_epoch`)", "trainer": "transformers `Trainer`",
             "nabaa_bf16": "nabaa, bf16 autocast (= `mixed_precision: auto` on AMX CPUs)"}
    for name, row in t["rows"].items():
        goal = (f"≥{GOALS['training_ratio']:g}×: {_goal(row['x_vs_trainer'], GOALS['training_ratio'])}"
                if name.startswith("nabaa") else "")
        out.append(f"| {names.get(name, name)} | {row['real_tokens_per_s']:.0f} | {row['median_step_s']:.2f} | "
                   f"{row['x_vs_trainer']:.2f} | {row.get('peak_rss_mib', float('nan')):.0f} | {goal} |")
    return out


def table_peak(r: dict[str, Any]) -> list[str]:
    p = r.get("peak")
    if not p:
        return ["_not run_"]
    fp32, bf16 = p["fp32_gflop_per_s"], p.get("bf16_gflop_per_s")
    out = [_when(p) + f"; peak: best of {p['reps']} × {p['n']}² matmuls", "",
           "| what | dtype | GFLOP/s | % of that dtype's matmul peak |", "|---|---|---|---|",
           f"| torch.matmul (measured peak) | fp32 | {fp32:.0f} | 100 |"]
    if bf16:
        out.append(f"| torch.matmul (measured peak) | bf16 | {bf16:.0f} | 100 |")

    def row(label: str, dtype: str, gflops: float) -> str:
        peak = bf16 if dtype == "bf16" and bf16 else fp32
        note = " (of fp32 peak)" if dtype == "int8" else ""
        return f"| {label} | {dtype} | {gflops:.0f} | {100 * gflops / peak:.0f}{note} |"

    s = r.get("scoring")
    if s:
        for name, data in s["rows"].items():
            label = "scoring: " + SCORING_LABELS.get(name, name).format(w=s["predict_max_windows"])
            dtype = s.get("cli_dtype", "fp32") if name == "nabaa_cli" else "bf16" if name.endswith("bf16") else "fp32"
            out.append(row(label, dtype, data["gflop_per_s"]))
    q = r.get("quant")
    if q and "gflop_per_s" in q["rows"].get("int8", {}):
        out.append(row("scoring: nabaa as shipped, `quantize=\"int8\"` (quant section)", "int8",
                       q["rows"]["int8"]["gflop_per_s"]))
    return out


def table_gpu(r: dict[str, Any]) -> list[str]:
    g = r.get("gpu")
    if not g:
        return ["_not run_"]
    if "skipped" in g:
        return [f"_{g['skipped']}: GPU row skipped ({g.get('date', '')})_"]
    out = [_when(g) + f"; {g['gpu']}, {g['dtype']}, {g['articles']} articles", "",
           "| batch (windows) | articles/s |", "|---|---|"]
    for key in ("default_batch", "largest_batch"):
        if key in g:
            out.append(f"| {g[key]['batch_size']} | {g[key]['articles_per_s']:.0f} |")
    out += ["", f"largest batch of {g.get('largest_batch_windows')} full windows fits; "
                f"bf16 matmul peak {g['matmul_bf16_peak_gflop_per_s']:.0f} GFLOP/s"]
    return out


TABLES = {"machine": table_machine, "scoring": table_scoring, "quant": table_quant, "memory": table_memory,
          "training": table_training, "peak": table_peak, "gpu": table_gpu}


def render_docs(results: dict[str, Any], path: Path = DOCS, tag: str = "") -> list[str]:
    """Rewrite every marked block of ``path`` that has results; return the blocks rewritten.
    With ``tag`` (an instruction-set run, ``--tag avx2``) the blocks are ``bench:NAME-TAG``."""
    text = path.read_text(encoding="utf-8")
    done = []
    for name, render in TABLES.items():
        marker = f"{name}-{tag}" if tag else name
        pattern = re.compile(rf"(<!-- bench:{marker}:begin -->\n).*?(<!-- bench:{marker}:end -->)", re.S)
        if not pattern.search(text) or (name not in results and name not in ("peak", "gpu")):
            continue
        try:
            body = "\n".join(render(results)) + "\n"
        except (KeyError, TypeError, ZeroDivisionError) as e:
            body = f"_table could not be rendered: {e!r}_\n"
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
        done.append(marker)
    path.write_text(text, encoding="utf-8")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (default; `make bench`)")
    mode.add_argument("--full", action="store_true", help="the sizes quoted in docs/benchmarks.md")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, numbers meaningless")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--model", default=None, help="trained model folder (default: runs/demo/best if trained)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--docs-only", action="store_true", help="only regenerate the docs tables from results.json")
    parser.add_argument("--tag", default="", help="an instruction-set run, e.g. avx2 (with the ISA caps in the "
                        "environment): results in bench/out/results-TAG.json, tables in the docs' bench:NAME-TAG blocks")
    args = parser.parse_args(argv)
    results_path = common.OUT / f"results-{args.tag}.json" if args.tag else RESULTS
    if args.docs_only:
        print("rewrote:", ", ".join(render_docs(json.loads(results_path.read_text(encoding="utf-8")), tag=args.tag)))
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    start = time.perf_counter()
    mode_name = "full" if args.full else "smoke" if args.smoke else "quick"
    # A smoke run checks the harness only: its numbers go to a file of their own, never to the docs.
    path = common.OUT / "results-smoke.json" if args.smoke else results_path
    results = run_sections(mode_name, only, args.model, args.threads, path)
    if not args.no_docs and not args.smoke and DOCS.exists():
        log(f"rewrote tables in {DOCS.relative_to(common.ROOT)}: {', '.join(render_docs(results, tag=args.tag))}")
    log(f"results: {path.relative_to(common.ROOT)}; total {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
