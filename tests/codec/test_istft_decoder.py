"""The iSTFT decoder (codec/istft_decoder.py): streaming == offline, the overlap-add against torch.istft,
causality, faster learning than the SEANet decoder on the harmonic test signals, and save / load."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from codec import Codec, CodecConfig
from codec.istft_decoder import DecoderConfig, InverseSTFT, ISTFTDecoder, synthesis_window
from codec.losses import MelLossConfig, MultiScaleMelLoss
from codec.seanet import SEANetDecoder
from interop.encodec import codec_config_to_hf
from interop.state import ConversionError
from tests.codec.test_codec_model_training import SAMPLE_RATE, harmonic_batch

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CHUNKINGS = [[1] * 12, [3, 3, 3, 3], [3, 1, 5, 3], [2, 7, 3]]  # frames per chunk, 12 frames in all


def preset(name: str, overrides: tuple[str, ...] = ()) -> CodecConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        config = compose(config_name=None, overrides=[f"+codec={name}", *overrides])
    return CodecConfig(**config.codec)


def small_istft_codec(channels: int, window_hops: int) -> Codec:
    """Hop 20, n_fft 40 or 80; decoder weights drawn large so that its output is far from silence."""
    config = CodecConfig(
        channels=channels,
        seanet=dict(dimension=16, n_filters=4, ratios=(4, 5), lstm_layers=1, pad_mode="constant"),
        decoder=dict(kind="istft", width=24, intermediate_width=48, num_blocks=2, kernel_size=3,
                     window_hops=window_hops),
        quantizer=dict(num_codebooks=3, codebook_size=32),
    )
    codec = Codec(config).eval()
    with torch.no_grad():
        for parameter in codec.decoder.parameters():
            parameter.normal_(0, 0.3)
    return codec


@pytest.mark.parametrize("channels,window_hops", [(1, 2), (2, 2), (1, 4), (2, 4)])
def test_streamed_decode_equals_offline_decode(channels, window_hops):
    codec = small_istft_codec(channels, window_hops)
    codes = torch.randint(0, codec.cardinality, (3, codec.num_codebooks, 12))
    offline = codec.decode(codes)
    assert offline.shape == (3, channels, 12 * codec.hop_length)
    assert offline.abs().amax(-1).min() > 0.1  # every item and channel is loud: 1e-5 is a real bound
    for frames in CHUNKINGS:
        with codec.streaming(batch_size=3):
            streamed = torch.cat([codec.decode(piece) for piece in torch.split(codes, frames, dim=-1)], dim=-1)
        assert (streamed - offline).abs().max() <= 1e-5, frames


@pytest.mark.parametrize("window", ["hann", "sqrt_hann"])
@pytest.mark.parametrize("window_hops", [2, 4])
def test_overlap_add_is_torch_istft_with_the_steady_state_envelope(window, window_hops):
    hop, num_frames = 20, 9
    n_fft = window_hops * hop
    inverse_stft = InverseSTFT(channels=2, n_fft=n_fft, hop_length=hop, window=window)
    spectra = torch.randn(3, 2, n_fft // 2 + 1, num_frames, dtype=torch.complex64)
    wav = inverse_stft(spectra)  # [3, 2, 9 * hop]
    assert wav.shape == (3, 2, num_frames * hop)

    # torch.istft refuses center=False with a window that starts at 0 (its envelope is 0 at sample 0), so the
    # reference is center=True: the same overlap-add, returned from sample n_fft / 2 on.
    window_tensor = synthesis_window(window, n_fft)
    reference = torch.istft(spectra.flatten(0, 1), n_fft, hop, window=window_tensor, center=True).view(3, 2, -1)
    steady = slice(n_fft - hop, num_frames * hop)  # every sample has all window_hops frames
    shifted = slice(steady.start - n_fft // 2, steady.stop - n_fft // 2)
    torch.testing.assert_close(wav[..., steady], reference[..., shifted], atol=1e-6, rtol=0)

    # Before that, the documented rule: the plain overlap-add divided by the steady-state envelope.
    overlap_add = torch.zeros(3, 2, (num_frames - 1) * hop + n_fft)
    for frame in range(num_frames):
        segment = torch.fft.irfft(spectra[..., frame], n=n_fft) * window_tensor
        overlap_add[..., frame * hop : frame * hop + n_fft] += segment
    envelope = sum(window_tensor[k * hop : (k + 1) * hop] ** 2 for k in range(window_hops))
    expected = overlap_add[..., : num_frames * hop] / envelope.repeat(num_frames)
    torch.testing.assert_close(wav, expected, atol=1e-6, rtol=0)


def test_output_block_ignores_later_frames():
    decoder = small_istft_codec(channels=1, window_hops=4).decoder
    hop = 20
    latents = torch.randn(1, 16, 8, requires_grad=True)
    decoder(latents)[..., 3 * hop : 4 * hop].sum().backward()  # block 3 is complete once frame 3 is added
    assert latents.grad[..., 4:].abs().max() == 0
    assert latents.grad[..., :4].abs().amax(dim=1).min() > 0  # and it uses frames 0..3 (kernel 3, 2 blocks)


def test_learns_the_harmonic_signals_faster_than_the_seanet_decoder():
    """Reconstruction-only training (the tiny codec_loss weights) of `tiny` and `tiny_istft`: same encoder and
    quantizer, same initial weights for them (seed), same batches, same steps."""
    losses = OmegaConf.load(CONFIGS / "codec_loss" / "tiny.yaml")
    weights = losses.weights
    mel_loss = MultiScaleMelLoss(SAMPLE_RATE, MelLossConfig(**losses.mel))
    batches = [harmonic_batch(4, 4800) for _ in range(60)]  # 4 x 0.2 s each
    held_out = harmonic_batch(8, 4800)

    def held_out_mel_after_training(config: CodecConfig) -> float:
        torch.manual_seed(0)
        codec = Codec(config).train()
        optimizer = torch.optim.Adam(codec.parameters(), lr=3e-3)
        for wav in batches:
            output = codec(wav)
            loss = (weights.mel * mel_loss(output.wav, wav) + weights.waveform_l1 * (output.wav - wav).abs().mean()
                    + weights.commitment * output.commit_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return mel_loss(codec.eval()(held_out).wav, held_out).item()

    seanet = held_out_mel_after_training(preset("tiny"))
    istft = held_out_mel_after_training(preset("tiny_istft"))
    # Measured with seeds 0-3 (data and weights): SEANet 3.15-3.17, iSTFT 1.79-1.94, ratio 0.56-0.62; the untrained
    # codecs score 6.5-8.
    assert istft < 0.8 * seanet, (istft, seanet)


def test_tiny_istft_is_no_larger_than_tiny_and_keeps_its_rates():
    tiny, tiny_istft = Codec(preset("tiny")), Codec(preset("tiny_istft"))
    assert isinstance(tiny.decoder, SEANetDecoder) and isinstance(tiny_istft.decoder, ISTFTDecoder)
    parameters = [sum(p.numel() for p in codec.decoder.parameters()) for codec in (tiny, tiny_istft)]
    assert parameters[1] <= parameters[0], parameters
    assert tiny_istft.config.seanet == tiny.config.seanet and tiny_istft.config.quantizer == tiny.config.quantizer


def test_save_load_round_trip_decodes_identically(tmp_path):
    codec = Codec(preset("tiny_istft")).train()
    codec(harmonic_batch(2, 1600))  # k-means init and one EMA step: buffers differ from a fresh model
    codec.eval()
    codes = codec.encode(harmonic_batch(2, 1600))
    codec.save(tmp_path / "codec")
    assert json.loads((tmp_path / "codec" / "config.json").read_text())["decoder"]["kind"] == "istft"
    loaded = Codec.load(tmp_path / "codec")
    assert loaded.config == codec.config
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    assert not torch.equal(Codec(codec.config).eval().decode(codes), codec.decode(codes))


def test_a_config_json_without_decoder_loads_a_seanet_decoder(tmp_path):
    codec = Codec(preset("tiny")).eval()
    codec.save(tmp_path / "codec")
    config = asdict(codec.config)
    del config["decoder"]  # as written before the decoder group existed
    (tmp_path / "codec" / "config.json").write_text(json.dumps(config))
    loaded = Codec.load(tmp_path / "codec")
    assert isinstance(loaded.decoder, SEANetDecoder)
    codes = torch.randint(0, codec.cardinality, (1, codec.num_codebooks, 5))
    assert torch.equal(loaded.decode(codes), codec.decode(codes))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(kind="vocos"), "decoder.kind must be one of"),
        (dict(window="hamming"), "decoder.window must be one of"),
        (dict(window_hops=1), "decoder.window_hops must be >= 2"),
        (dict(num_blocks=0), "decoder.num_blocks must be >= 1"),
    ],
)
def test_bad_decoder_config_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**{"kind": "istft", **change})


def test_a_misspelled_decoder_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="widht"):
        preset("tiny_istft", ("codec.decoder.widht=64",))


def test_export_to_hf_encodec_is_refused():
    with pytest.raises(ConversionError, match="decoder.kind='istft'"):
        codec_config_to_hf(preset("tiny_istft"))
