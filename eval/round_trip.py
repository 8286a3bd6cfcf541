"""A codec round trip: audio encoded and decoded by a codec, analysed at the caller's rate. What a codec keeps of
real audio is the ceiling of anything an LM generates through it, so eval.adherence and eval.speech put a `codec`
row beside their real and generated rows."""
import hashlib

import torch
from torch import Tensor

from codec.codec import Codec
from codec.snac import SNACCodec
from data.audio import convert_audio


def codec_round_trip(codec: Codec | SNACCodec, wav: Tensor, sample_rate: int) -> Tensor:
    """Mono wav [T] at sample_rate -> codec.decode(codec.encode(wav)) at the codec's rate and channel count, back to
    mono [T] at sample_rate (the codec's padding to whole frames cut off). A SNAC decoder's noise blocks draw from
    torch's global generator: seed it for a reproducible result."""
    device = next(codec.parameters()).device
    with torch.no_grad():
        audio = convert_audio(wav[None], sample_rate, codec.sample_rate, codec.config.channels)  # [C, T']
        decoded = codec.decode(codec.encode(audio[None].to(device)))[0, :, :audio.shape[-1]].float().cpu()  # [C, T']
    mono = convert_audio(decoded, codec.sample_rate, sample_rate, channels=1)[0]
    return torch.nn.functional.pad(mono, (0, max(0, len(wav) - len(mono))))[:len(wav)]


def weights_digest(codec: Codec | SNACCodec) -> str:
    """SHA-256 over the codec's weight names, dtypes, shapes and bytes, in name order: what a cache of anything
    trained on round trips must name, since a codec retrained into the same directory is another codec."""
    digest = hashlib.sha256()
    for name, tensor in sorted(codec.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
