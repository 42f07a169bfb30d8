"""``auto`` precision on CPU is decided by a cached measurement; batch limits by device
(CPU defaults, GPU limits by memory, explicit values win) (model/hardware.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import hardware
from model.hardware import (
    CPU_BATCH_LIMITS,
    GPU_BATCH_LIMITS,
    ProbeResult,
    ProbeShape,
    auto_uses_bf16,
    batch_limits,
    cpu_bf16_decision,
    measure_bf16_speedup,
)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """A fake probe whose bf16 speed-up the test sets; counts its calls. Fresh cache dir,
    no verdicts remembered from other tests, no forcing switch."""
    monkeypatch.setenv("NABAA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NABAA_CPU_BF16", raising=False)
    monkeypatch.setattr(hardware, "_decisions", {})
    calls: list = [1.0]  # calls[0] is the speed-up to report; later items record the shapes probed

    def fake(shape: ProbeShape = hardware.DEFAULT_SHAPE, budget_s: float = 0.4) -> ProbeResult:
        calls.append(shape)
        return ProbeResult(fp32_gflops=100.0, bf16_gflops=100.0 * calls[0], seconds=0.01, speedup=calls[0])

    monkeypatch.setattr(hardware, "measure_bf16_speedup", fake)
    return calls


@pytest.mark.parametrize(("speedup", "bf16"), [(2.9, True), (1.7, True), (1.3, True), (1.2, False),
                                              (1.0, False), (0.15, False)])
def test_bf16_only_when_clearly_faster(probe: list, speedup: float, bf16: bool) -> None:
    probe[0] = speedup
    assert cpu_bf16_decision() is bf16
    assert auto_uses_bf16("cpu") is bf16


def test_verdict_is_cached_on_disk(probe: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    probe[0] = 1.8
    assert cpu_bf16_decision()
    assert len(probe) == 2
    saved = json.loads((tmp_path / hardware.PROBE_FILE).read_text())
    (verdict,) = saved.values()
    assert verdict["bf16"] is True and verdict["speedup"] == 1.8
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed into place
    monkeypatch.setattr(hardware, "_decisions", {})  # as in a new process
    probe[0] = 0.1  # a second probe would now say fp32
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in one rank of a multi-process launch: must agree with the others
    try:
        assert cpu_bf16_decision()
    finally:
        torch.set_num_threads(threads)
    assert len(probe) == 2  # read from the cache, not measured again


def test_cache_key_follows_isa_cap_and_shape(probe: list, monkeypatch: pytest.MonkeyPatch) -> None:
    probe[0] = 1.8
    assert cpu_bf16_decision()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    probe[0] = 0.12
    assert not cpu_bf16_decision()  # the capped library is a different machine: measured again
    assert not cpu_bf16_decision(ProbeShape(768, 3072, 512))
    assert len(probe) == 4 and probe[-1] == ProbeShape(768, 3072, 512)


def test_unreadable_cache_is_measured_again(probe: list, tmp_path: Path) -> None:
    (tmp_path / hardware.PROBE_FILE).write_text("{not json")
    probe[0] = 2.0
    assert cpu_bf16_decision()
    assert len(probe) == 2
    assert json.loads((tmp_path / hardware.PROBE_FILE).read_text())


@pytest.mark.parametrize(("value", "bf16"), [("0", False), ("1", True)])
def test_switch_forces_without_probing(probe: list, monkeypatch: pytest.MonkeyPatch, value: str, bf16: bool) -> None:
    probe[0] = 0.1 if bf16 else 3.0  # the measurement would say the opposite
    monkeypatch.setenv("NABAA_CPU_BF16", value)
    assert cpu_bf16_decision() is bf16
    assert len(probe) == 1


def test_real_probe_is_short_and_positive() -> None:
    result = measure_bf16_speedup(ProbeShape(128, 512, 128), budget_s=0.2)
    assert result.fp32_gflops > 0 and result.bf16_gflops > 0
    assert result.seconds < 5


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


@pytest.mark.parametrize("variable,value", [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")])
def test_an_avx2_cap_takes_the_int8_path_of_a_cpu_without_vnni(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                                value: str) -> None:
    # fbgemm ignores the caps, so nabaa itself must pick 7-bit activations, as on a real AVX2 CPU.
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    assert hardware.cpu_has_vnni() is False
    monkeypatch.setenv(variable, "AVX512_CORE_BF16" if variable == "ONEDNN_MAX_CPU_ISA" else "avx512")
    assert hardware.cpu_has_vnni() == ("vnni" in Path("/proc/cpuinfo").read_text())
