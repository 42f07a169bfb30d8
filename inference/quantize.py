"""int8 dynamic quantisation for CPU scoring, with outlier input channels kept in fp32.

Plain dynamic quantisation (``torch.ao.quantization.quantize_dynamic``) picks one activation
scale per call from the largest absolute value in the whole input. BERT-style encoders carry a
few "massive" activations — one or two hidden channels reaching 30-60 on the first token and on
some punctuation, where ordinary values stay under 3 — so one such value flattens every other
token of the batch onto a handful of int8 levels. On the demo model that cost 6.3 points of
mean macro-F1 on seeds/dev (docs/benchmarks.md, section 2).

:class:`OutlierInt8Linear` follows the decomposition of LLM.int8() (Dettmers et al., 2022):
values whose magnitude exceeds ``threshold`` (6.0, that paper's value) are multiplied in fp32
against the matching weight columns, and everything else goes through the int8 kernel with a
scale set by ordinary values. The outlier channels of a layer are few and the same from batch
to batch, so each layer remembers the ones it has met; per call it takes the large values of
those channels out (a few rows) and checks the rest with one whole-tensor min/max.

Memory: a layer holds its int8 weights and, in fp32, only the weight columns of the outlier
channels it has met (a handful of ``out_features``-long columns), so an int8 model is about a
quarter of the fp32 one. Those columns are the int8 weights dequantised (per-channel scale,
rounding error at most half a step): the source fp32 weight is not kept, and the large
activation values they multiply, the part int8 activations would ruin, stay exact.

>>> model = quantize_int8(model)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from model.hardware import cpu_has_amx, cpu_has_vnni

OUTLIER_THRESHOLD = 6.0
# With 7-bit activations (fbgemm without VNNI: AVX2 CPUs) each step is twice as coarse, so half the
# clipping range keeps the quantised part's step as fine as 8 bits give at 6.0. Measured on the
# demo model, seeds dev + test, 7-bit path: labels equal to fp32 98.4 % at 6.0, 98.9 % at 4.0,
# 99.4 % at 3.0 (docs/benchmarks.md §8).
OUTLIER_THRESHOLD_7BIT = 3.0


class OutlierInt8Linear(nn.Module):
    """A Linear layer with int8 weights (one scale per output channel) and dynamically quantised
    activations, except the input channels above ``threshold``, which stay fp32."""

    def __init__(self, linear: nn.Linear, threshold: float | None = None) -> None:
        super().__init__()
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        source = copy.deepcopy(linear).float()
        source.qconfig = per_channel_dynamic_qconfig
        engine = int8_engine()
        with warnings.catch_warnings(), _packing_engine(engine):
            warnings.simplefilter("ignore")  # torch's deprecation notice about quantized tensor creation
            self.int8 = DynamicInt8Linear.from_float(source)
        del source  # no fp32 copy of the weight stays: outlier columns come from the int8 weights
        self.full_range = int8_full_range(engine)
        if threshold is None:  # see OUTLIER_THRESHOLD_7BIT
            seven_bit = engine in ("fbgemm", "x86") and not self.full_range
            threshold = OUTLIER_THRESHOLD_7BIT if seven_bit else OUTLIER_THRESHOLD
        self.threshold = threshold
        self.outliers = torch.empty(0, dtype=torch.long)
        # fp32 weight columns of ``outliers``, in the same order: [out_features, len(outliers)]
        self.register_buffer("outlier_weight", torch.empty(self.int8.out_features, 0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.requires_grad:  # the in-place trick below is for inference only
            flat = flat.clone()
        channels = self.outliers
        if channels.numel() == 0:
            if self._within_threshold(flat):
                return self._int8(x)
            return self._learn_and_retry(x, flat)
        # Only the outlying entries of the known channels are taken out (in place, put back
        # below): a copy of the whole activation would cost more than the int8 product saves,
        # and the caller may reuse the input (the residual branch), so it is restored exactly.
        values = flat.index_select(1, channels)
        outlying = values.abs() > self.threshold
        flat.index_copy_(1, channels, values.masked_fill(outlying, 0))
        try:
            if not self._within_threshold(flat):
                flat.index_copy_(1, channels, values)
                return self._learn_and_retry(x, flat)
            y = self._int8(flat)
        finally:
            flat.index_copy_(1, channels, values)
        rows = outlying.any(1).nonzero().flatten()
        if rows.numel():
            exact = (values[rows] * outlying[rows]) @ self.outlier_weight.t()
            y = y.reshape(-1, y.shape[-1]).index_add_(0, rows, exact)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        if not self.full_range:
            return self.int8(x)  # torch's own call: 7-bit activations on fbgemm
        packed = self.int8._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    def _within_threshold(self, flat: torch.Tensor) -> bool:
        low, high = torch.aminmax(flat)  # one pass; cheap next to the matrix product
        return max(-low.item(), high.item()) <= self.threshold

    def _learn_and_retry(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Add the channels above the threshold that this layer has not met before (rare: the
        outlier channels of a layer are few and fixed by the model) and run again."""
        peak = torch.maximum(flat.amax(0), -flat.amin(0))
        found = (peak > self.threshold).nonzero().flatten()
        new = found[~torch.isin(found, self.outliers)]
        if new.numel() == 0:  # NaN in the input: nothing to learn, and no retry that could loop
            return self._int8(x)
        columns = self.int8.weight().dequantize()[:, new]  # one full dequantisation, once per new channel set
        channels, order = torch.cat([self.outliers, new]).sort()
        self.outliers = channels
        self.outlier_weight = torch.cat([self.outlier_weight, columns], dim=1)[:, order].contiguous()
        return self.forward(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.int8.in_features}, out_features={self.int8.out_features}, "
                f"threshold={self.threshold}, outlier_channels={self.outliers.tolist()}")


def int8_engine() -> str:
    """The quantised engine to pack weights for: oneDNN on CPUs with AMX (its int8 kernels use
    the AMX tiles; 1.2x faster than fbgemm's here), else torch's current engine."""
    if cpu_has_amx() and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return torch.backends.quantized.engine


def int8_full_range(engine: str) -> bool:
    """Whether activations may use all 8 bits. torch's dynamic int8 ``Linear`` asks fbgemm for
    7-bit activations (``reduce_range=True``) because without VNNI fbgemm sums pairs of
    u8 × s8 products in int16, which full-range values can saturate; with VNNI the products go
    straight into int32, so the 8th bit is safe and halves the activation rounding error (the
    pooled e5-small embedding of seeds dev articles: 6.5 % → 3.5 % relative error against fp32,
    docs/benchmarks.md). oneDNN (the AMX path) is left as torch calls it.

    >>> int8_full_range("onednn")
    False
    """
    return engine in ("fbgemm", "x86") and cpu_has_vnni()


@contextlib.contextmanager
def _packing_engine(engine: str) -> Iterator[None]:
    """Pack weights for ``engine`` without changing the process-wide setting for anyone else
    (a packed weight carries its engine, so the int8 calls need no setting at run time)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def quantize_int8(model: nn.Module, threshold: float | None = None) -> nn.Module:
    """Return a copy of ``model`` on CPU in fp32 with every ``nn.Linear`` replaced by an
    :class:`OutlierInt8Linear` (for inference; the copy cannot be trained or saved as int8).

    >>> quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 2)))[0].int8.in_features
    4
    """
    model = copy.deepcopy(model).float().cpu()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, OutlierInt8Linear(module, threshold))
    return model
