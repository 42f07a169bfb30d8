"""Shared benchmark helpers: offline environment, machine description, the model and
dump every benchmark uses, and interleaved timing.

Timing is always *interleaved*: contenders run round-robin (A B C, A B C, ...) in one
process and each reports the median of its rounds, so a burst of load from another
process hits every contender alike and the ratios stay meaningful on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in OFFLINE.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
TRAINED_CANDIDATES = (ROOT / "runs" / "demo" / "best",)


# --------------------------------------------------------------------------- machine
def bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (native or emulated)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_fast() -> bool:
    """Whether bf16 rows are worth timing: oneDNN has bf16 kernels and nabaa's cached probe
    measured them faster than fp32 (on AVX2, or under an AVX2 cap, bf16 is emulated: ~6x slower)."""
    from model.hardware import auto_uses_bf16

    return bf16_kernels() and auto_uses_bf16("cpu")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and the instruction sets that matter for the kernels."""
    import torch
    import transformers

    from model.hardware import ISA_CAP_VARIABLES

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    info = {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "isa": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                                                 "amx_int8", "avx_vnni"}),
        "onednn_bf16": bf16_kernels(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": _memory_gib(),
        "cuda": torch.cuda.is_available(),
        # Libraries capped below the CPU's instruction sets (how other CPUs are emulated here).
        "isa_caps": {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)},
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """``VmHWM`` (peak resident set) of a process, from ``/proc``.

    Not ``ru_maxrss``: Linux carries a process's ``maxrss`` across ``exec`` from the
    memory it was forked (or vforked) from, so a child started by a big parent reports
    the parent's peak. ``VmHWM`` belongs to the process's own address space.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- model and data
def demo_config():
    from training.config import load_config

    return load_config(DEMO_CONFIG)


def demo_preprocessing():
    from model.preprocess import build_preprocessing

    return build_preprocessing(demo_config().model)


def trained_model(explicit: str | None = None) -> Path | None:
    """The trained demo model: ``explicit``, else ``runs/demo/best`` once training has written
    it (it has ``training_state.json``)."""
    if explicit:
        return Path(explicit)
    for path in TRAINED_CANDIDATES:
        if (path / "training_state.json").exists() and (path / "model.safetensors").exists():
            return path
    return None


def untrained_model(dest: Path | None = None) -> Path:
    """A demo-shaped model folder (embedded e5-small backbone, demo tasks and preprocessing,
    heads untrained): same network and cost as the trained demo model, built in seconds."""
    from model.embedded import resolve_backbone
    from model.modeling import MultiTaskClassifier
    from model.serialization import save_model_folder

    dest = dest or OUT / "untrained-demo-model"
    if (dest / "model.safetensors").exists():
        return dest
    import torch
    from transformers import AutoTokenizer

    cfg = demo_config()
    folder = resolve_backbone(cfg.model.backbone)
    torch.manual_seed(0)
    # class_weights "auto" becomes plain weights here: only inference speed matters.
    model = MultiTaskClassifier.from_backbone(folder, cfg.tasks, pooling=cfg.model.pooling)
    save_model_folder(dest, model, AutoTokenizer.from_pretrained(folder), demo_preprocessing())
    return dest


def bench_model(explicit: str | None = None) -> tuple[Path, bool]:
    """(model folder, trained?) for speed work: the trained demo model when there is one."""
    path = trained_model(explicit)
    return (path, True) if path is not None else (untrained_model(), False)


def dump_file(n: int, seed: int = 0) -> Path:
    """A realistic dump of ``n`` articles from ``seeds.make_dump`` (cached in bench/out)."""
    from seeds.make_dump import make_dump

    path = OUT / f"dump-{n}-s{seed}.jsonl.gz"
    if not path.exists():
        make_dump(path, n, seed=seed, progress=False)
    return path


def model_folder_parser(doc: str, out_name: str) -> argparse.ArgumentParser:
    """The command line of a bench script that reads one trained model folder and writes one JSON
    result (``--out``, by default ``bench/out/<out_name>``); the script adds its own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("model", type=Path, help="a trained model folder with a TF-IDF model (best/)")
    parser.add_argument("--out", type=Path, default=OUT / out_name)
    return parser


def report(path: Path, result: Any, text: str) -> None:
    """Save a bench result as JSON and print its table and where it went."""
    save_json(path, result)
    print(text)
    print(f"wrote {path}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines: the header, its rule, one line per row (cells as given).

    >>> markdown_table(["a", "b"], [[1, "x"]])
    ['| a | b |', '|---|---|', '| 1 | x |']
    """
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def save_json(path: Path, obj: Any) -> None:
    """Write a result as indented JSON atomically (temp file + rename), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    import gzip

    out = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if limit is not None and len(out) >= limit:
                break
    return out


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def interleaved(contenders: dict[str, Callable[[Any], Any]], work: Any, rounds: int, warm: Any = None,
                log: Callable[[str], None] | None = print) -> dict[str, Timing]:
    """Run every contender on ``work`` once per round, in rotating order; collect wall times.

    ``warm`` (a small workload) is run once by every contender first, so one-off costs
    (lazy imports, first-call allocations, kernel selection) stay out of the timings.
    A contender may return a dict with ``"seconds"`` (a time it measured itself, e.g.
    without model loading); the last returned dict is kept as ``Timing.extra``.
    """
    timings = {name: Timing(name) for name in contenders}
    names = list(contenders)
    if warm is not None:
        for name in names:
            contenders[name](warm)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            result = contenders[name](work)
            seconds = time.perf_counter() - start
            if isinstance(result, dict):
                timings[name].extra = result
                seconds = result.get("seconds", seconds)
            timings[name].seconds.append(seconds)
            if log:
                log(f"    round {r + 1}/{rounds} {name}: {seconds:.2f}s")
    return timings


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def rounded(values: Sequence[float], digits: int = 3) -> list[float]:
    return [round(v, digits) for v in values]
