"""Which backend decodes (`DecodeBackendConfig`, configs/decode_backend/default.yaml) and the model that runs it
(`with_backend`)."""
from dataclasses import dataclass
from typing import Literal, get_args

from lm.backends.compiled import compile_decoding
from lm.backends.quantize import quantize_int8
from lm.lm import LMModel

Weights = Literal["fp32", "int8", "fp16"]
WEIGHTS = get_args(Weights)


@dataclass
class DecodeBackendConfig:
    """How the LM's decode steps run. The defaults are the reference path: eager, fp32 weights and KV cache."""

    # "int8": an int8 copy of the model's Linears (CPU, eager; quantize.py);
    # "fp16": the compiled copy stores its Linears and KV cache in fp16 (CPU, compile=True only; compiled.py)
    weights: Weights = "fp32"
    compile: bool = False  # one-step decode calls run a torch.compile graph of a copy of the model (CPU; compiled.py)
    int8_kv_cache: bool = False  # the compiled copy's KV cache in int8, a scale per vector (int8_cache.py)

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.compile and self.weights == "int8":
            raise ValueError("compile=True compiles fp32 or fp16 weights (fbgemm's int8 kernels do not trace), got "
                             "weights='int8'")
        if self.weights == "fp16" and not self.compile:
            raise ValueError("weights='fp16' needs compile=True: only the compiled graph has a fast fp16 matmul on CPU")
        if self.int8_kv_cache and not self.compile:
            raise ValueError("int8_kv_cache=True needs compile=True: the int8 cache is the compiled copy's")


def with_backend(model: LMModel, backend: DecodeBackendConfig) -> LMModel:
    """The model that decodes as `backend` says: `model` itself on the reference path, otherwise a copy with its
    modules swapped; `model` keeps its weights either way."""
    if backend.weights == "int8":
        return quantize_int8(model)
    if backend.compile:
        return compile_decoding(model, weights=backend.weights, int8_kv_cache=backend.int8_kv_cache)
    return model
