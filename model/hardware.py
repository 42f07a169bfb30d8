"""What this machine computes fast; shared by training and inference.

Whether bf16 pays on a CPU depends on more than one flag: with Intel AMX a BERT-size encoder
scores ~2.8x faster in bf16 than in fp32, with AVX512-BF16 alone (AMD Zen 4, Cooper Lake)
bf16 matrix products run ~1.7x faster, and without bf16 instructions (AVX2 CPUs, or a library
capped by ``ONEDNN_MAX_CPU_ISA``) every bf16 product is emulated at ~0.1-0.2x of fp32. So
``auto`` precision on CPU is decided by measurement (:func:`cpu_bf16_decision`): a short probe
times bf16 and fp32 matrix products of the model's shapes and picks bf16 only when it is
clearly faster. The verdict is cached per CPU model, torch version and
instruction-set cap, under the nabaa cache folder.

    >>> isinstance(cpu_has_fast_bf16(), bool)
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# 0: keep CPU work in fp32 (e.g. to compare runs bit for bit); 1: use bf16 on CPU without probing.
ENV_SWITCH = "NABAA_CPU_BF16"
# bf16 must beat fp32 by this factor at the model's shapes: a marginal gain is not worth the
# rounding, and an emulated bf16 (0.1-0.2x) must never be picked.
BF16_MIN_SPEEDUP = 1.3
# Environment variables that cap the instruction sets the math libraries use: part of the cache key.
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
PROBE_FILE = "cpu_precision_probe.json"
_decisions: dict[str, bool] = {}  # this process's verdicts, by cache key


# Set to 0 to leave glibc's allocator as it is (see keep_freed_memory).
MALLOC_SWITCH = "NABAA_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h


def cpu_has_amx() -> bool:
    """True when the CPU has Intel AMX tiles (bf16 and int8 matrix units)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without this probe: assume no
        return False


def cpu_has_vnni() -> bool:
    """True when the CPU reports AVX512-VNNI or AVX-VNNI (int8 dot products into int32), from
    ``/proc/cpuinfo``: that is what fbgemm, torch's int8 engine on x86, checks itself.

    False under an instruction-set cap below VNNI (``ATEN_CPU_CAPABILITY=avx2`` or ``default``,
    ``ONEDNN_MAX_CPU_ISA=AVX2``/``AVX``/``SSE41``): fbgemm ignores those caps, but nabaa then takes
    the int8 path of the emulated CPU (7-bit activations), so its labels are those of that CPU."""
    if _capped_below_vnni():
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def _capped_below_vnni() -> bool:
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    return aten in ("avx2", "default") or onednn in ("AVX2", "AVX", "SSE41")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX tiles and AVX-512 bf16 (and ``NABAA_CPU_BF16`` is not ``0``).

    A flag check only; ``auto`` precision uses the measured :func:`cpu_bf16_decision` instead.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    try:
        return cpu_has_amx() and bool(torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def nabaa_cache_dir() -> Path:
    """``$NABAA_CACHE_DIR``, else ``~/.cache/nabaa`` (built backbones, probe verdicts).

    >>> nabaa_cache_dir().is_absolute()
    True
    """
    return Path(os.environ.get("NABAA_CACHE_DIR") or "~/.cache/nabaa").expanduser()


@dataclass(frozen=True)
class ProbeShape:
    """One encoder layer's matrix products: ``tokens`` rows through hidden→intermediate→hidden."""

    hidden: int = 384
    intermediate: int = 1536
    tokens: int = 256


DEFAULT_SHAPE = ProbeShape()  # multilingual-e5-small's layer (the demo backbone)


@dataclass
class ProbeResult:
    fp32_gflops: float  # best of the rounds
    bf16_gflops: float
    seconds: float
    speedup: float  # median over interleaved pairs of fp32 time / bf16 time


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(shape: ProbeShape) -> str:
    """What the verdict depends on: CPU model, torch version, ISA caps and shapes. Not the
    thread count: the ranks of one launch run fewer threads each and must agree with each other."""
    parts = {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "caps": {name: os.environ.get(name, "") for name in ISA_CAP_VARIABLES},
        "shape": asdict(shape),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def measure_bf16_speedup(shape: ProbeShape = DEFAULT_SHAPE, budget_s: float = 0.4) -> ProbeResult:
    """Time one encoder layer's feed-forward products in fp32 and in bf16, in interleaved pairs.

    The speed-up is the median of the per-pair ratios: on shared cores a burst of other work
    slows both members of a pair, so the ratio survives noise that would swamp either time.
    At least five pairs; when the ratio sits near :data:`BF16_MIN_SPEEDUP` the probe keeps
    going up to three times ``budget_s`` before it answers.

    >>> measure_bf16_speedup(ProbeShape(64, 256, 64), budget_s=0.05).speedup > 0
    True
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape.tokens, shape.hidden, generator=generator)
    up = torch.randn(shape.intermediate, shape.hidden, generator=generator) / shape.hidden**0.5
    down = torch.randn(shape.hidden, shape.intermediate, generator=generator) / shape.intermediate**0.5
    operands = {dtype: (x.to(dtype), up.to(dtype), down.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}

    def seconds(dtype: torch.dtype) -> float:
        a, w1, w2 = operands[dtype]
        t = time.perf_counter()
        torch.nn.functional.linear(torch.nn.functional.linear(a, w1), w2)
        return time.perf_counter() - t

    pairs: list[tuple[float, float]] = []
    with torch.inference_mode():
        seconds(torch.float32), seconds(torch.bfloat16)  # first calls pick kernels: not timed
        while True:
            pairs.append((seconds(torch.float32), seconds(torch.bfloat16)))
            elapsed = time.perf_counter() - start
            ratio = statistics.median(f / b for f, b in pairs)
            unsure = 0.8 * BF16_MIN_SPEEDUP < ratio < 1.25 * BF16_MIN_SPEEDUP
            if len(pairs) >= 5 and (elapsed > 3 * budget_s or (elapsed > budget_s and not unsure)):
                break
    flops = 2 * 2 * shape.tokens * shape.hidden * shape.intermediate
    return ProbeResult(fp32_gflops=flops / min(f for f, _ in pairs) / 1e9,
                       bf16_gflops=flops / min(b for _, b in pairs) / 1e9,
                       seconds=time.perf_counter() - start, speedup=ratio)


def cpu_bf16_decision(shape: ProbeShape = DEFAULT_SHAPE) -> bool:
    """Whether ``auto`` precision means bf16 on this CPU for a model of ``shape``.

    ``NABAA_CPU_BF16=0`` / ``1`` decides without measuring. Otherwise the cached verdict for
    this CPU, torch version and ISA caps is used (one process probes at a time, under a lock), or :func:`measure_bf16_speedup` runs
    once (a few hundred ms) and bf16 is chosen only at :data:`BF16_MIN_SPEEDUP` or more.

    >>> isinstance(cpu_bf16_decision(), bool)  # doctest: +SKIP
    True
    """
    forced = os.environ.get(ENV_SWITCH)
    if forced in ("0", "1"):
        return forced == "1"
    key = probe_key(shape)
    if key in _decisions:
        return _decisions[key]
    path = nabaa_cache_dir() / PROBE_FILE
    # One process probes, the others (ranks of one launch, parallel scorers) wait and read its
    # verdict: processes that disagreed would train or score in different precisions.
    with _probe_lock(path):
        cached = _read_probe_cache(path).get(key)
        if cached is None:
            cached = _probe_and_store(path, key, shape)
    _decisions[key] = bool(cached["bf16"])
    return _decisions[key]


def _probe_and_store(path: Path, key: str, shape: ProbeShape) -> dict:
    result = measure_bf16_speedup(shape)
    verdict = {"bf16": result.speedup >= BF16_MIN_SPEEDUP, "speedup": round(result.speedup, 3),
               "fp32_gflops": round(result.fp32_gflops, 1), "bf16_gflops": round(result.bf16_gflops, 1),
               "cpu": _cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "caps": {n: os.environ[n] for n in ISA_CAP_VARIABLES if n in os.environ},
               "shape": asdict(shape), "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_probe_cache(path, key, verdict)
    return verdict


@contextlib.contextmanager
def _probe_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` beside the cache file; no lock where that is impossible."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def _read_probe_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or half-written by a foreign tool: probe again
        return {}
    return data if isinstance(data, dict) else {}


def _write_probe_cache(path: Path, key: str, verdict: dict) -> None:
    """Merge one verdict into the cache file (temp file + rename); a read-only cache is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_probe_cache(path)
        data[key] = verdict
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    By default glibc gives every allocation above 32 MiB its own fresh pages and unmaps them on
    free, so each large activation of an encoder forward pass (100 MB for one feed-forward
    layer of a full batch) is page-faulted in again, zeroed by the kernel, and thrown away.
    Keeping the freed memory (up to ``trim_threshold`` bytes of free heap) made CPU scoring
    ~15 % faster in fp32 and int8 scoring ~20 % faster (docs/benchmarks.md), for a higher
    resident size (the peak stays resident); CPU training of the demo ran 1.23-1.31x faster
    with 28 % more peak memory. Called by ``Classifier.from_pretrained`` on CPU and by the
    training loop on machines without CUDA; process-wide and idempotent. Returns whether the setting took effect: False
    off glibc Linux or when ``NABAA_KEEP_FREED_MEMORY=0``.

    >>> isinstance(keep_freed_memory(), bool)
    True
    """
    if os.environ.get(MALLOC_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (mallopt elsewhere differs)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def auto_uses_bf16(device: str | torch.device, shape: ProbeShape | None = None) -> bool:
    """Whether ``auto`` precision means bf16 on ``device``: a bf16 GPU, or a CPU where the
    measured bf16 products at ``shape`` (default: e5-small's) are clearly faster than fp32.

    >>> auto_uses_bf16("cpu", ProbeShape(384, 1536, 256)) in (True, False)  # doctest: +SKIP
    True
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_bf16_decision(shape or DEFAULT_SHAPE)


def probe_shape_of(encoder_config: object) -> ProbeShape:
    """The probe shape of a transformers encoder config (hidden and intermediate sizes)."""
    hidden = int(getattr(encoder_config, "hidden_size", 384))
    return ProbeShape(hidden=hidden, intermediate=int(getattr(encoder_config, "intermediate_size", 4 * hidden)))


# Windows / padded tokens per forward pass on a GPU, by its memory. The CPU default (64 / 16,384)
# is sized for cache reuse; a GPU wants big batches to stay busy. e5-small / AraBERT-base at 512
# tokens: 131,072 tokens of bf16 activations stay well under 10 GB on a 40+ GB card.
GPU_BATCH_LIMITS = ((40, 512, 131_072), (16, 256, 65_536), (0, 128, 32_768))
CPU_BATCH_LIMITS = (64, 16_384)


def batch_limits(device: str | torch.device, batch_size: int | None = None,
                 max_batch_tokens: int | None = None) -> tuple[int, int]:
    """``(batch_size, max_batch_tokens)`` for ``device``; values given explicitly win.

    >>> batch_limits("cpu")
    (64, 16384)
    """
    default = CPU_BATCH_LIMITS
    device = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available() else
                          "cpu" if str(device) == "auto" else device)
    if device.type == "cuda":
        gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        default = next((b, t) for floor, b, t in GPU_BATCH_LIMITS if gib >= floor)
    return batch_size or default[0], max_batch_tokens or default[1]
