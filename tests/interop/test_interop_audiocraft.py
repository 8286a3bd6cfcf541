"""AudioCraft layout -> codeclm: the test writes `state_dict.bin` and `compression_state_dict.bin` as AudioCraft's
export lays them out (HF's conversion map inverted, from a tiny random HF MusicGen), converts the folder, and
compares with AudioCraft's semantics computed by HF's decoder given no cross-attention mask: padded text
positions are zeros that still take softmax mass."""
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

from builders import load_lm_export, init_from_export
from conditioners.attributes import ConditioningAttributes
from interop.convert import convert
from interop.state import ConversionError
from interop.tiny import tiny_hf_musicgen

CAPTIONS = ["calm piano in a minor", "a fast folk reel played on violin in d major with drums"]
XP_CONFIG = {
    "transformer_lm": {"dim": 48, "num_heads": 4, "num_layers": 2, "hidden_scale": 2, "n_q": 4, "card": 64,
                       "norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
                       "layer_scale": None, "positional_embedding": "sin", "cross_attention": True,
                       "activation": "gelu", "norm": "layer_norm", "causal": True, "memory_efficient": True},
    "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0,
                                                         "empty_initial": 0}},
    "fuser": {"cross_attention_pos_emb": False, "sum": [], "prepend": [], "cross": ["description"],
              "input_interpolate": []},
    "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}}},
}


def audiocraft_state(hf: MusicgenForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The LM state dict AudioCraft's MusicGen would hold for the same weights (HF's conversion map inverted)."""
    hf_state = hf.state_dict()
    decoder = "decoder.model.decoder."
    state = {"condition_provider.conditioners.description.output_proj.weight": hf_state["enc_to_dec_proj.weight"],
             "condition_provider.conditioners.description.output_proj.bias": hf_state["enc_to_dec_proj.bias"],
             "out_norm.weight": hf_state[f"{decoder}layer_norm.weight"],
             "out_norm.bias": hf_state[f"{decoder}layer_norm.bias"]}
    for k in range(4):
        state[f"emb.{k}.weight"] = hf_state[f"{decoder}embed_tokens.{k}.weight"]
        state[f"linears.{k}.weight"] = hf_state[f"decoder.lm_heads.{k}.weight"]
    for layer in range(2):
        theirs, ours = f"{decoder}layers.{layer}.", f"transformer.layers.{layer}."
        for attention, name in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            state[f"{ours}{name}.in_proj_weight"] = torch.cat(
                [hf_state[f"{theirs}{attention}.{p}_proj.weight"] for p in "qkv"])
            state[f"{ours}{name}.out_proj.weight"] = hf_state[f"{theirs}{attention}.out_proj.weight"]
        for norm, hf_norm in (("norm1", "self_attn_layer_norm"), ("norm_cross", "encoder_attn_layer_norm"),
                              ("norm2", "final_layer_norm")):
            for field in ("weight", "bias"):
                state[f"{ours}{norm}.{field}"] = hf_state[f"{theirs}{hf_norm}.{field}"]
        state[f"{ours}linear1.weight"] = hf_state[f"{theirs}fc1.weight"]
        state[f"{ours}linear2.weight"] = hf_state[f"{theirs}fc2.weight"]
    return {name: tensor.clone() for name, tensor in state.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audiocraft")
    tiny_hf_musicgen(root / "hf")
    hf = MusicgenForConditionalGeneration.from_pretrained(root / "hf").eval()
    hf.audio_encoder.save_pretrained(root / "encodec_32khz")
    hf.text_encoder.save_pretrained(root / "t5")
    AutoTokenizer.from_pretrained(root / "hf").save_pretrained(root / "t5")
    (root / "checkpoint").mkdir()
    write_audiocraft(root / "checkpoint", audiocraft_state(hf), XP_CONFIG)
    return {name: root / name for name in ("hf", "encodec_32khz", "t5", "checkpoint")}


def write_audiocraft(folder: Path, state: dict, xp_config: dict) -> None:
    torch.save({"best_state": state, "xp.cfg": yaml.safe_dump(xp_config), "version": "1.3.0", "exported": True},
               folder / "state_dict.bin")
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"},
               folder / "compression_state_dict.bin")


def test_converted_audiocraft_checkpoint_reproduces_unmasked_cross_attention(folders, tmp_path):
    out = tmp_path / "converted"
    convert(folders["checkpoint"], out, codec=folders["encodec_32khz"], text_encoder=folders["t5"])
    lm, _, conditioner, cfg = load_lm_export(out)
    assert cfg.lm.model.cross_attention_mask is False and cfg.conditioner.text.description.max_length is None
    hf = MusicgenForConditionalGeneration.from_pretrained(folders["hf"]).eval()
    tokens = AutoTokenizer.from_pretrained(folders["hf"])(CAPTIONS, padding=True, return_tensors="pt")
    sequence = torch.randint(0, 64, (2, 4, 10))
    sequence[:, :, 0] = 64
    with torch.no_grad():
        text = hf.text_encoder(**tokens).last_hidden_state
        memory = hf.enc_to_dec_proj(text) * tokens["attention_mask"][..., None]  # AudioCraft zeroes padding ...
        reference = hf.decoder(input_ids=sequence.reshape(8, 10), encoder_hidden_states=memory).logits  # ... no mask
        masked = hf(**tokens, decoder_input_ids=sequence.reshape(8, 10)).logits
        ours = lm(sequence, conditioner([ConditioningAttributes(text={"description": t}) for t in CAPTIONS]))
    reference, masked = reference.reshape(2, 4, 10, 64), masked.reshape(2, 4, 10, 64)
    assert (ours - reference).abs().max() < 1e-4
    assert (masked - reference)[0].abs().max() > 1e-3  # the padded item: the switch matters
    assert (masked - reference)[1].abs().max() < 1e-4  # the longest item has no padding


def test_unsupported_audiocraft_option_is_refused_by_name(folders, tmp_path):
    folder = tmp_path / "layer_scale"
    folder.mkdir()
    hf = MusicgenForConditionalGeneration.from_pretrained(folders["hf"])
    xp_config = {**XP_CONFIG, "transformer_lm": {**XP_CONFIG["transformer_lm"], "layer_scale": 0.1}}
    write_audiocraft(folder, audiocraft_state(hf), xp_config)
    with pytest.raises(ConversionError, match="transformer_lm.layer_scale"):
        convert(folder, tmp_path / "out", codec=folders["encodec_32khz"], text_encoder=folders["t5"])


def test_a_codec_redirect_without_codec_is_refused(folders, tmp_path):
    with pytest.raises(ConversionError, match="--codec"):
        convert(folders["checkpoint"], tmp_path / "out", text_encoder=folders["t5"])
    assert not (tmp_path / "out").exists()


def test_init_from_loads_the_converted_weights_and_refuses_another_model(folders, tmp_path):
    from hydra import compose, initialize_config_dir

    import train

    out = tmp_path / "converted"
    convert(folders["checkpoint"], out, codec=folders["encodec_32khz"], text_encoder=folders["t5"])
    exported = yaml.safe_load((out / "train_config.yaml").read_text())
    model = exported["lm"]["model"]
    overrides = [f"lm.model.{key}={value}" for key, value in model.items() if key not in ("num_codebooks", "card")]
    overrides += ["conditioner=t5_base", f"conditioner.text.description.encoder={out / 'text_encoder'}",
                  f"codec.quantizer.num_codebooks={model['num_codebooks']}",
                  f"codec.quantizer.codebook_size={model['card']}", f"init_from={out}"]
    with initialize_config_dir(config_dir=str(Path(train.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=lm", *overrides])
        wrong = compose(config_name="config", overrides=["stage=lm", *overrides, "lm.model.ffn_dim=64"])
    lm, _, _, _ = load_lm_export(out)
    module = train.LMLightningModule(train.build_lm(cfg), train.build_pattern(cfg), train.build_lm_training(cfg),
                                     conditioner=train.BatchConditioner(train.build_conditioner(cfg)))
    init_from_export(module, cfg)
    assert all(torch.equal(value, lm.state_dict()[name]) for name, value in module.model.state_dict().items())
    with pytest.raises(ValueError, match=r"lm.model.ffn_dim=64 \(checkpoint: 96\)"):
        init_from_export(module, wrong)


CODEC_XP_CONFIG = {  # AudioCraft's encodec config keys (config/model/encodec/default.yaml), at the tiny model's sizes
    "sample_rate": 32000, "channels": 1, "compression_model": "encodec",
    "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": 32000, "channels": 1, "causal": False,
                "renormalize": False},
    "seanet": {"dimension": 16, "channels": 1, "causal": False, "n_filters": 4, "n_residual_layers": 1,
               "ratios": [8, 5, 4, 4], "activation": "ELU", "activation_params": {"alpha": 1.0},
               "norm": "weight_norm", "norm_params": {}, "kernel_size": 7, "residual_kernel_size": 3,
               "last_kernel_size": 7, "dilation_base": 2, "pad_mode": "constant", "true_skip": True, "compress": 2,
               "lstm": 1, "disable_norm_outer_blocks": 0,
               "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
               "encoder": {}},
    "rvq": {"n_q": 4, "q_dropout": False, "bins": 64, "decay": 0.99, "kmeans_init": True, "kmeans_iters": 50,
            "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False},
}


@pytest.mark.filterwarnings("ignore:.*weight_norm` is deprecated:FutureWarning")  # inside the encodec package
def test_an_embedded_audiocraft_codec_gives_the_reference_codes_through_convert(folders, tmp_path):
    import encodec
    from encodec.modules import SEANetDecoder, SEANetEncoder
    from encodec.quantization import ResidualVectorQuantizer

    from codec.codec import Codec

    seanet = {"dimension": 16, "n_filters": 4, "ratios": [8, 5, 4, 4], "causal": False, "pad_mode": "constant",
              "true_skip": True, "lstm": 1}
    reference = encodec.EncodecModel(SEANetEncoder(**seanet), SEANetDecoder(**seanet),
                                     ResidualVectorQuantizer(dimension=16, n_q=4, bins=64), target_bandwidths=[1.2],
                                     sample_rate=32000, channels=1).eval()
    wav = 0.1 * torch.randn(1, 1, 640 * 25)
    with torch.no_grad():
        latents = reference.encoder(wav).transpose(1, 2).reshape(-1, 16)
        for layer in reference.quantizer.vq.layers:  # codebooks on the data, so that codes are not degenerate
            layer._codebook.embed.copy_(latents.mean(0) + latents.std(0) * torch.randn(64, 16))
            layer._codebook.inited.fill_(1.0)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state_dict.bin").write_bytes((folders["checkpoint"] / "state_dict.bin").read_bytes())
    torch.save({"best_state": reference.state_dict(), "xp.cfg": yaml.safe_dump(CODEC_XP_CONFIG), "version": "1.3.0",
                "exported": True}, folder / "compression_state_dict.bin")
    convert(folder, tmp_path / "out", text_encoder=folders["t5"])
    ours = Codec.load(tmp_path / "out" / "codec")
    reference.set_target_bandwidth(1.2)
    with torch.no_grad():
        [(reference_codes, _)] = reference.encode(wav)
        codes = ours.encode(wav)
        assert torch.equal(codes, reference_codes) and len(codes.unique()) > 8
        assert (ours.decode(codes) - reference.decode([(reference_codes, None)])).abs().max() < 1e-5
