"""Which backend runs a trained codec's `encode` / `decode` (`CodecBackendConfig`, configs/codec_backend/) and the
codec that runs it (`with_backend`)."""

import copy
from dataclasses import dataclass
from typing import Literal, get_args

from codec.backends.quantizer import PrecomputedNormQuantizer
from codec.backends.time_major import TimeMajorDecoder, TimeMajorEncoder
from codec.codec import Codec
from codec.seanet import SEANetDecoder
from codec.vq import EMACodebook

Kind = Literal["reference", "time_major"]
KINDS = get_args(Kind)


@dataclass
class CodecBackendConfig:
    """How the codec runs at inference. The default is the reference path: the trained modules as they are."""

    # "time_major": an inference copy with time-major activations, weight norm folded and fused branches
    # (codec/backends/time_major.py) and precomputed codebook norms (codec/backends/quantizer.py)
    kind: str = "reference"  # Kind: hydra structured configs take no Literal

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"codec backend kind must be one of {KINDS}, got {self.kind!r}")


def time_major_codec(codec: Codec) -> Codec:
    """An inference copy of `codec` (eval mode, no gradients): the SEANet encoder and decoder become their time-major
    versions, and EMA codebooks a `PrecomputedNormQuantizer`; an iSTFT decoder and factorized codebooks stay as
    they are. `codec` is unchanged, and later changes to it are not seen by the copy."""
    fast = copy.deepcopy(codec).eval().requires_grad_(False)
    fast.encoder = TimeMajorEncoder(codec.encoder)
    if isinstance(codec.decoder, SEANetDecoder):
        fast.decoder = TimeMajorDecoder(codec.decoder)
    if all(isinstance(codebook, EMACodebook) for codebook in codec.quantizer.codebooks):
        fast.quantizer = PrecomputedNormQuantizer(codec.quantizer)
    return fast


def with_backend(codec: Codec, backend: CodecBackendConfig) -> Codec:
    """The codec that encodes and decodes as `backend` says: `codec` itself on the reference path, otherwise an
    inference copy; `codec` keeps its modules either way."""
    if backend.kind == "time_major":
        return time_major_codec(codec)
    return codec
