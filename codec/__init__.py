"""Audio <-> codes: streamable convs, SEANet, the iSTFT decoder, residual VQ, the codec (and its training losses).

Shapes: B batch, C audio channels, T samples, D latent width, F frames, K codebooks, card codebook size.
"""

from codec.codec import Codec, CodecConfig, CodecOutput
from codec.istft_decoder import DecoderConfig
from codec.rvq import QuantizerConfig
from codec.seanet import SEANetConfig

__all__ = ["Codec", "CodecConfig", "CodecOutput", "DecoderConfig", "QuantizerConfig", "SEANetConfig"]
