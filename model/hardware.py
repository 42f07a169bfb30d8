"""What this machine computes fast; shared by training and inference.

On CPUs with Intel AMX, bf16 matrix products run in hardware and a BERT-size
encoder trains ~1.4× and scores ~2.8× faster than in fp32 (docs/benchmarks.md),
so ``auto`` precision settings pick bf16 there as they do on bf16 GPUs.

    >>> isinstance(cpu_has_fast_bf16(), bool)
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

# Set to 0 to keep CPU work in fp32 even where bf16 is fast (e.g. to compare runs bit for bit).
ENV_SWITCH = "NABAA_CPU_BF16"


# Set to 0 to leave glibc's allocator as it is (see keep_freed_memory).
MALLOC_SWITCH = "NABAA_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h


def cpu_has_amx() -> bool:
    """True when the CPU has Intel AMX tiles (bf16 and int8 matrix units)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without this probe: assume no
        return False


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX tiles and AVX-512 bf16 (and ``NABAA_CPU_BF16`` is not ``0``)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    try:
        return cpu_has_amx() and bool(torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


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


def auto_uses_bf16(device: str | torch.device) -> bool:
    """Whether ``auto`` precision means bf16 on ``device`` (a bf16 GPU or an AMX CPU)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_fast_bf16()


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
