"""What this machine computes fast; shared by training and inference.

On CPUs with Intel AMX, bf16 matrix products run in hardware and a BERT-size
encoder trains ~1.4× and scores ~2.8× faster than in fp32 (docs/benchmarks.md),
so ``auto`` precision settings pick bf16 there as they do on bf16 GPUs.

    >>> isinstance(cpu_has_fast_bf16(), bool)
    True
"""

from __future__ import annotations

import os

import torch

# Set to 0 to keep CPU work in fp32 even where bf16 is fast (e.g. to compare runs bit for bit).
ENV_SWITCH = "NABAA_CPU_BF16"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX tiles and AVX-512 bf16 (and ``NABAA_CPU_BF16`` is not ``0``)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: assume no
        return False


def auto_uses_bf16(device: str | torch.device) -> bool:
    """Whether ``auto`` precision means bf16 on ``device`` (a bf16 GPU or an AMX CPU)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_fast_bf16()
