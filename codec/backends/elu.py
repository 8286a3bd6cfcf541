"""ELU for the time-major backend, in place or into a given buffer: elu.cpp's AVX2 kernel where it runs, torch's
ELU elsewhere.

The activations between the SEANet convs cost about a fifth of an offline encode + decode on the reference path's
ELU (docs/codec_speed.md); the kernel computes the same function within ~1e-7. It is compiled once per machine on
first use (torch's extension build cache keeps it) and registered as `torch.ops.codeclm_codec.elu_` and `elu_into`.
"""

import functools
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

SOURCE = Path(__file__).with_name("elu.cpp")


@functools.cache
def kernel_available() -> bool:
    """Builds (or loads the built) kernel on an x86 CPU with AVX2; False on other CPUs."""
    if platform.machine() not in ("x86_64", "AMD64") or torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        return False
    from torch.utils import cpp_extension  # here: importing it logs a CUDA warning on machines without CUDA

    # -fopenmp: at::parallel_for runs on torch's threads; CPU_CAPABILITY_AVX2: ATen's AVX2 vectors and Sleef's exp
    flags = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-DCPU_CAPABILITY_AVX2"]
    cpp_extension.load(name="codeclm_codec_elu", sources=[str(SOURCE)], extra_cflags=flags, is_python_module=False)
    return True


def elu_(x: Tensor) -> Tensor:
    """ELU (alpha 1) of x in place; returns x."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and kernel_available():
        return torch.ops.codeclm_codec.elu_(x)
    return F.elu_(x)


def elu_into(x: Tensor, out: Tensor) -> Tensor:
    """out[...] = ELU (alpha 1) of x, same shape; returns out."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in (x, out)) and (
            kernel_available()):
        return torch.ops.codeclm_codec.elu_into(x, out)
    return out.copy_(F.elu(x))
