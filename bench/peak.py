"""The machine's measured matmul peak (the ceiling scoring is compared against) and,
where CUDA is present, the GPU scoring row.

Peak: the best of several square ``torch.matmul`` calls (2·n³ FLOPs each) with the
process's torch threads, fp32 and bf16.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def run_peak(reps: int = 5) -> dict[str, Any]:
    from bench.common import bf16_fast

    out = {"fp32_gflop_per_s": round(matmul_gflops(torch.float32, reps=reps), 1), "n": 2048, "reps": reps}
    if not bf16_fast():  # emulated bf16 (an AVX2 CPU or cap): minutes of a slow fallback, no peak worth the name
        out["bf16_gflop_per_s"], out["bf16_error"] = None, "bf16 is emulated on this CPU (or under its caps)"
        return out
    try:
        out["bf16_gflop_per_s"] = round(matmul_gflops(torch.bfloat16, reps=reps), 1)
    except RuntimeError as e:  # no bf16 matmul kernel on this CPU
        out["bf16_gflop_per_s"] = None
        out["bf16_error"] = str(e)[:200]
    return out


def run_gpu(folder: Path, records: list[dict[str, Any]], log=print) -> dict[str, Any]:
    """bf16 scoring on the first CUDA device: articles/s at the default batch and at the
    largest batch of full windows that fits. Skipped cleanly without CUDA."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    from inference import Classifier

    device = "cuda"
    clf = Classifier.from_pretrained(folder, device=device, dtype="bf16", keep_freed_memory=True)
    length = clf.pre.max_length
    largest, batch = None, 64
    while batch <= 16384:
        try:
            with torch.inference_mode():
                ids = torch.full((batch, length), 5, dtype=torch.long, device=device)
                clf.model(input_ids=ids, attention_mask=torch.ones_like(ids))
            torch.cuda.synchronize()
            largest, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "dtype": "bf16", "largest_batch_windows": largest,
                           "articles": len(records), "matmul_bf16_peak_gflop_per_s":
                           round(matmul_gflops(torch.bfloat16, n=8192, device=device), 1)}
    for label, bs in (("default_batch", clf.batch_size), ("largest_batch", largest)):
        if bs is None:
            continue
        clf.batch_size, clf.max_batch_tokens = bs, bs * length
        clf.predict_proba(records[:64])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        clf.predict_proba(records)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out[label] = {"batch_size": bs, "articles_per_s": round(len(records) / seconds, 1)}
        log(f"  gpu: batch {bs}: {out[label]['articles_per_s']} articles/s")
    return out
