"""Batch limits by device: CPU defaults, GPU limits by memory, explicit values win."""

from __future__ import annotations

import pytest
import torch

from model.hardware import CPU_BATCH_LIMITS, GPU_BATCH_LIMITS, batch_limits


def test_cpu_defaults_and_explicit_values() -> None:
    assert batch_limits("cpu") == CPU_BATCH_LIMITS == (64, 16_384)
    assert batch_limits("cpu", 8) == (8, 16_384)
    assert batch_limits("cpu", None, 4096) == (64, 4096)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_gets_larger_batches_by_its_memory() -> None:
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    expected = next((b, t) for floor, b, t in GPU_BATCH_LIMITS if gib >= floor)
    assert batch_limits("cuda") == batch_limits("auto") == expected
    assert expected[1] > CPU_BATCH_LIMITS[1]
