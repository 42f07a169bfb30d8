"""int8 with outlier channels in fp32 (inference/quantize.py) and the allocator setting that
scoring relies on (model/hardware.py: keep_freed_memory)."""

from __future__ import annotations

import copy
import ctypes
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from inference import Classifier, quantize
from inference.quantize import OUTLIER_THRESHOLD, OutlierInt8Linear, int8_engine, quantize_int8
from model.hardware import cpu_has_vnni, keep_freed_memory
from model.modeling import MultiTaskClassifier
from model.preprocess import Preprocessing


def linear_and_input(outlier: float = 60.0) -> tuple[torch.nn.Linear, torch.Tensor]:
    """A layer and a batch shaped like BERT's "massive activations": one channel far above the
    rest on a few tokens."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(4, 50, 64)
    x[0, 0, 5] = outlier
    x[2, 17, 5] = -outlier
    return layer, x


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y - reference).norm() / reference.norm())


def test_outlier_channel_keeps_int8_close_to_fp32() -> None:
    layer, x = linear_and_input()
    with torch.no_grad():
        exact = layer(x)
        ours = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear: per_channel_dynamic_qconfig})(x)
    # One value of 60 sets plain int8's scale for the whole batch; ours keeps it out.
    assert relative_error(ours, exact) < 0.02
    assert relative_error(plain, exact) > 3 * relative_error(ours, exact)


def test_input_is_left_exactly_as_it_was() -> None:
    """The residual branch reuses a Linear's input: the in-place trick must leave no trace."""
    layer, x = linear_and_input()
    before = x.clone()
    module = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)
    with torch.no_grad():
        module(x)
        module(x)  # second call takes the known-channel path
    assert torch.equal(x, before)


def test_layer_remembers_its_outlier_channels() -> None:
    layer, x = linear_and_input()
    module = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)
    with torch.no_grad():
        first = module(x)
        assert module.outliers.tolist() == [5]
        again = module(x)
        ordinary = module(torch.randn(3, 64).clamp(-OUTLIER_THRESHOLD, OUTLIER_THRESHOLD))
    assert torch.allclose(first, again, atol=1e-5)
    assert ordinary.shape == (3, 32)


def test_layer_holds_no_fp32_copy_of_its_weight() -> None:
    torch.manual_seed(1)
    layer = torch.nn.Linear(256, 128)
    x = torch.randn(6, 256)
    x[0, 9], x[3, 200] = 40.0, -25.0
    module = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)
    with torch.no_grad():
        y = module(x)
    fp32_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())
                     if t.dtype == torch.float32 and t.numel() >= 256)
    assert fp32_bytes <= 2 * 128 * 4 + 128 * 4  # the two outlier columns and the bias, not 256 x 128
    assert module.outliers.tolist() == [9, 200] and module.outlier_weight.shape == (128, 2)
    with torch.no_grad():
        assert relative_error(y, layer(x)) < 0.02


def test_activations_use_8_bits_only_where_vnni_makes_it_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    layer, x = torch.nn.Linear(384, 256), torch.randn(64, 384)
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    seven = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)
    with torch.no_grad():
        assert not seven.full_range and torch.equal(seven(x), seven.int8(x))  # torch's own 7-bit call
        if int8_engine() not in ("fbgemm", "x86") or not cpu_has_vnni():
            return  # full range is only for fbgemm on VNNI CPUs; nothing more to compare here
        monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
        eight = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)
        exact = layer(x)
        assert eight.full_range
        assert relative_error(eight(x), exact) < 0.75 * relative_error(seven(x), exact)


def test_seven_bit_activations_keep_more_channels_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    # 7-bit steps are twice as coarse: the default threshold halves so the quantised part keeps
    # 8-bit's resolution (on the demo model: 98.4 % -> 99.4 % of fp32's labels on an AVX2 path).
    torch.manual_seed(3)
    layer, x = torch.nn.Linear(64, 32), torch.randn(200, 64) * 2
    monkeypatch.setattr(quantize, "int8_engine", lambda: "fbgemm")
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    seven = OutlierInt8Linear(layer)
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
    eight = OutlierInt8Linear(layer)
    assert (seven.threshold, eight.threshold) == (quantize.OUTLIER_THRESHOLD_7BIT, OUTLIER_THRESHOLD)
    with torch.no_grad():
        exact = layer(x)
        coarse = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)  # made 7-bit on the next line, at 8-bit's threshold
        coarse.full_range = False
        assert relative_error(seven(x), exact) < relative_error(coarse(x), exact)


def test_nan_input_returns_instead_of_looping() -> None:
    layer, x = linear_and_input()
    x[1, 3, 7] = float("nan")
    with torch.no_grad():
        y = OutlierInt8Linear(layer, OUTLIER_THRESHOLD)(x)
    assert y.shape == (4, 50, 32)


def test_quantize_int8_replaces_every_linear_and_leaves_the_original() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    q = quantize_int8(model)
    assert [type(m).__name__ for m in q] == ["OutlierInt8Linear", "GELU", "OutlierInt8Linear"]
    assert all(isinstance(m, (torch.nn.Linear, torch.nn.GELU)) for m in model)


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_info() -> MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def test_keep_freed_memory_keeps_large_tensors_in_the_heap() -> None:
    """Large tensors come from the heap (not a fresh mapping each) and their memory stays there
    for the next batch once freed."""
    if not keep_freed_memory() or not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("not glibc >= 2.33 on Linux")
    size = 64 << 20
    tensor = torch.empty(size, dtype=torch.uint8).fill_(1)
    assert malloc_info().hblkhd < size  # glibc as shipped maps anything over 32 MiB on its own
    del tensor
    assert malloc_info().fordblks >= size  # freed, kept for reuse rather than unmapped


def test_keep_freed_memory_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NABAA_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


# --------------------------------------------------------------------------- a whole model
def reading_model(texts: list[str], outlier: float, folder: Path) -> tuple[MultiTaskClassifier, object]:
    """A tiny encoder with BERT's "massive activation" (one embedding channel far above the rest
    on every token) and heads that read the texts' main directions of variation, so labels
    differ from text to text. The session's trained tiny model gives every text nearly the
    same scores, and has no outlier at all: int8 could not fail on it."""
    from transformers import AutoTokenizer

    from model.schema import Task
    from model.tiny import build_tiny_backbone
    from tests.conftest import TASKS, seed_records

    folder = build_tiny_backbone([r["text"] for r in seed_records("train", 120)], folder / "bb",
                                 vocab_size=2000, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(folder, [Task(n, tuple(labels)) for n, labels in TASKS.items()],
                                              pooling="mean").eval()
    with torch.no_grad():
        model.encoder.embeddings.LayerNorm.bias[5] += outlier
        enc = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        features = model.pool(model.encoder(**enc).last_hidden_state, enc["attention_mask"])
        mean = features.mean(0)
        _, spread, directions = torch.linalg.svd(features - mean, full_matrices=False)
        for head in model.heads.values():
            weight = directions[: head.weight.shape[0]] / spread[0] * len(texts) ** 0.5
            head.weight.copy_(weight)
            head.bias.copy_(-(weight @ mean))
    return model, tokenizer


def int8_paths() -> list[str]:
    """The int8 kernels this machine can run: fbgemm/x86 with 7-bit activations everywhere,
    8-bit activations only with VNNI (without it they can saturate), oneDNN where torch has it
    (the AMX path). CI machines differ from the dev machine, so each path is tested here."""
    paths = ["7-bit"]
    if cpu_has_vnni():
        paths.append("8-bit")
    if "onednn" in torch.backends.quantized.supported_engines:
        paths.append("onednn")
    return paths


@pytest.mark.parametrize("path", int8_paths())
def test_int8_model_keeps_fp32_labels_where_plain_int8_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from tests.conftest import seed_records

    monkeypatch.setattr(quantize, "int8_engine", lambda: "onednn" if path == "onednn" else "x86")
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: path == "8-bit")
    texts = [r["text"] for r in seed_records("dev", 48)]
    model, tokenizer = reading_model(texts, outlier=30.0, folder=tmp_path)
    pre = Preprocessing(max_length=128, stride=16, predict_max_windows=2)
    exact = Classifier(model, tokenizer, pre, {}, "cpu").predict_proba(texts)
    ours_model = quantize_int8(model)
    ours = Classifier(ours_model, tokenizer, pre, {}, "cpu").predict_proba(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain_model = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig})
    plain = Classifier(plain_model, tokenizer, pre, {}, "cpu").predict_proba(texts)

    # Preconditions: labels vary from text to text, and the outlier path is taken.
    assert all(len(set(exact[t].argmax(1))) >= 3 for t in exact)
    assert sum(m.outliers.numel() > 0 for m in ours_model.modules() if isinstance(m, OutlierInt8Linear)) >= 3

    def agreement(probs: dict, margin: float = 0.0) -> float:
        """The smallest share, over tasks, of fp32 labels kept, counting only texts whose fp32
        top-two probabilities are at least ``margin`` apart. The heads of this model leave many
        texts near a tie, where any rounding flips a label; confident labels must never flip."""
        shares = []
        for task, reference in exact.items():
            top2 = np.sort(reference, axis=1)[:, -2:]
            sure = top2[:, 1] - top2[:, 0] >= margin
            shares.append(float((reference.argmax(1) == probs[task].argmax(1))[sure].mean()))
        return min(shares)

    def mean_error(probs: dict) -> float:
        return max(float(np.abs(exact[t] - probs[t]).mean()) for t in exact)

    assert agreement(ours, margin=0.2) == 1.0, agreement(ours, margin=0.2)
    assert agreement(plain) <= agreement(ours) - 0.1, (agreement(plain), agreement(ours))
    assert mean_error(plain) >= 3 * mean_error(ours), (mean_error(plain), mean_error(ours))
