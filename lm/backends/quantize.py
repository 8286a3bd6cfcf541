"""Int8 weights (`weights="int8"`), eager, on CPU: every Linear of the LM becomes a dynamically quantized int8 matmul
(fbgemm kernels).

A decode step at a small batch reads every weight once and does little arithmetic with it, so on CPU it is bound by
memory traffic: int8 weights are a quarter of the fp32 bytes read per step. Weights are quantized once, symmetric
per output channel; activations are quantized per call over their observed range. Embeddings, norms and the KV
cache stay fp32. Use it for generation only: the copy has no gradients, and its logits differ from fp32 by the
quantization noise (tests/lm/test_lm_quantize.py bounds it).
"""
import copy

import torch
from torch import nn

from lm.backends.compiled import is_compiled
from lm.backends.modules import replace_linears
from lm.lm import LMModel

ENGINES = ("x86", "fbgemm")  # the quantized engines with per-channel int8 dynamic linear kernels for x86 CPUs
# The overload itself: calling it skips the op packet's per-call Python dispatch checks, paid by every Linear of
# every step.
LINEAR_DYNAMIC = torch.ops.quantized.linear_dynamic.default


class Int8Linear(nn.Module):
    """A frozen nn.Linear with int8 weights [out, in] (one scale per output row), packed once for fbgemm."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()  # [out, in]
        scales = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127  # [out]
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        quantized = torch.quantize_per_channel(weight, scales.double(), zero_points, axis=0, dtype=torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out]. reduce_range: activations use 7 bits, since the AVX2 kernel sums pairs of
        uint8 x int8 products in int16, which 8-bit activations can saturate."""
        return LINEAR_DYNAMIC(x, self.packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def quantize_int8(model: LMModel) -> LMModel:
    """A copy of `model` for generation with every nn.Linear as an Int8Linear; `model` itself is unchanged.

    Refused, naming the reason, where the kernels do not run: a model not on the CPU or not fp32, or a quantized
    engine other than x86/fbgemm (e.g. ARM's qnnpack); and for a `compile_decoding` copy, whose compiled step
    would keep running the fp32 weights.
    """
    weight = model.embedding.weight
    if weight.device.type != "cpu":
        raise ValueError(f"weights=int8 runs on the CPU only (fbgemm kernels), got a model on {weight.device}; "
                         f"use weights=fp32 on {weight.device.type}")
    if weight.dtype != torch.float32:
        raise ValueError(f"weights=int8 quantizes an fp32 model, got {weight.dtype}")
    if is_compiled(model):
        raise ValueError("weights=int8 quantizes an fp32 model, got a compile_decoding copy (its compiled step would "
                         "keep the fp32 weights); quantize the original model")
    engine = torch.backends.quantized.engine
    if engine not in ENGINES:
        raise ValueError(f"weights=int8 needs torch.backends.quantized.engine in {ENGINES} (x86 CPUs), got {engine!r}; "
                         f"use weights=fp32")
    quantized = copy.deepcopy(model).eval().requires_grad_(False)
    replace_linears(quantized, Int8Linear)
    return quantized

