"""HF MusicGen <-> codeclm: a tiny random MusicgenForConditionalGeneration (T5 + EnCodec + decoder, tokenizer trained
in the test) converted, then compared with HF itself: logits on a padded batch, greedy CFG tokens through
generate.py, audio, the round trip back to HF, and refusals."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

import generate as generate_script
from builders import load_lm_export
from codec.codec import Codec
from conditioners.attributes import ConditioningAttributes
from interop.convert import convert
from interop.state import ConversionError
from interop.tiny import tiny_hf_musicgen

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["calm piano in a minor", "a fast folk reel played on violin in d major with drums"]  # different lengths


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf") / "musicgen"
    tiny_hf_musicgen(directory)
    return directory


@pytest.fixture(scope="module")
def ours_dir(hf_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ours") / "converted"
    assert convert(hf_dir, out) == "hf_musicgen"
    return out


def hf_model(directory: Path) -> MusicgenForConditionalGeneration:
    return MusicgenForConditionalGeneration.from_pretrained(directory).eval()


def test_logits_match_hf_on_a_padded_batch(hf_dir, ours_dir):
    hf = hf_model(hf_dir)
    tokens = AutoTokenizer.from_pretrained(hf_dir)(CAPTIONS, padding=True, return_tensors="pt")
    assert not tokens["attention_mask"].all()  # the batch is padded
    lm, pattern, conditioner, _ = load_lm_export(ours_dir)
    K, S = 4, 12
    sequence = torch.randint(0, 64, (2, K, S))
    sequence[:, :, 0] = 64  # the special token (HF's decoder start) where the pattern puts it
    with torch.no_grad():
        theirs = hf(**tokens, decoder_input_ids=sequence.reshape(2 * K, S)).logits  # [B * K, S, card]
        conditions = conditioner([ConditioningAttributes(text={"description": text}) for text in CAPTIONS])
        ours = lm(sequence, conditions)  # [B, K, S, card]
    difference = (ours - theirs.reshape(2, K, S, 64)).abs().max().item()
    assert difference < 1e-4, difference
    assert theirs.abs().max() > 1  # the comparison is not between near-zero logits


def generate_with_hf(directory: Path, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's greedy CFG generation -> (codes [B, K, T], audio [B, 1, samples]); the codes are caught on their way
    into the audio encoder's decode."""
    hf = hf_model(directory)
    caught = {}
    decode = hf.audio_encoder.decode

    def catch(codes, *args, **kwargs):
        caught["codes"] = codes[0]
        return decode(codes, *args, **kwargs)

    hf.audio_encoder.decode = catch
    tokens = AutoTokenizer.from_pretrained(directory)(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        audio = hf.generate(**tokens, do_sample=False, guidance_scale=3.0, max_length=frames + 4)
    return caught["codes"], audio


def test_greedy_cfg_generation_through_generate_py_gives_hf_tokens_and_audio(hf_dir, ours_dir, tmp_path):
    frames = 20
    codes, audio = generate_with_hf(hf_dir, frames)
    assert codes.shape == (2, 4, frames)
    assert not torch.equal(codes[0], codes[1])  # the captions steer the tokens: conditioning is compared too
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[
            f"checkpoint={ours_dir}", f"prompts={json.dumps(CAPTIONS)}", f"duration={frames / 50}",
            "temperature=0", "top_k=0", "cfg_coef=3", f"out_dir={tmp_path / 'generated'}", "device=cpu"])
    out_dir = generate_script.generate(cfg)
    ours = torch.stack([torch.from_numpy(np.load(out_dir / f"{index:03d}.npy")) for index in range(2)])
    assert torch.equal(ours, codes)
    codec = Codec.load(ours_dir / "codec")
    with torch.no_grad():
        difference = (codec.decode(ours) - audio).abs().max().item()
    assert difference < 1e-4, difference


def test_round_trip_to_hf_and_back_is_bit_identical(hf_dir, ours_dir, tmp_path):
    exported = tmp_path / "hf"
    assert convert(ours_dir, exported, to="hf") == "lm_export"
    codes, audio = generate_with_hf(exported, 8)  # HF loads the export and generates from it
    reference_codes, reference_audio = generate_with_hf(hf_dir, 8)
    assert torch.equal(codes, reference_codes) and torch.equal(audio, reference_audio)
    again = tmp_path / "again"
    convert(exported, again)
    for name in ("lm.safetensors", "codec/model.safetensors", "text_encoder/model.safetensors"):
        first, second = load_file(ours_dir / name), load_file(again / name)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), name
    assert (ours_dir / "codec/config.json").read_text() == (again / "codec/config.json").read_text()


def copy_hf(hf_dir: Path, destination: Path) -> Path:
    destination.mkdir()
    for path in hf_dir.iterdir():
        (destination / path.name).write_bytes(path.read_bytes())
    return destination


def test_an_unmapped_key_is_refused_by_name(hf_dir, tmp_path):
    source = copy_hf(hf_dir, tmp_path / "src")
    weights = load_file(source / "model.safetensors")
    weights["decoder.model.decoder.layers.0.self_attn.rotary.weight"] = torch.zeros(3)
    save_file(weights, source / "model.safetensors")
    with pytest.raises(ConversionError, match="self_attn.rotary.weight"):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]


def test_a_wrong_shape_is_refused_by_name(hf_dir, tmp_path):
    source = copy_hf(hf_dir, tmp_path / "src")
    weights = load_file(source / "model.safetensors")
    weights["decoder.model.decoder.layers.1.fc1.weight"] = torch.zeros(95, 48)
    save_file(weights, source / "model.safetensors")
    with pytest.raises(ConversionError, match="layers.1.mlp.0.weight"):
        convert(source, tmp_path / "out")


def test_an_unsupported_option_is_refused_by_name(hf_dir, tmp_path):
    source = copy_hf(hf_dir, tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    config["decoder"]["scale_embedding"] = True
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="scale_embedding"):
        convert(source, tmp_path / "out")


@pytest.mark.parametrize("damage", ["truncated weights", "no tokenizer", "not a checkpoint"])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(hf_dir, tmp_path, damage):
    source = copy_hf(hf_dir, tmp_path / "src")
    if damage == "truncated weights":
        weights = source / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        expected = "model.safetensors"
    elif damage == "no tokenizer":
        (source / "tokenizer.json").unlink()
        expected = "no tokenizer"
    else:
        for path in source.iterdir():
            path.unlink()
        expected = "not a checkpoint folder"
    result = subprocess.run([sys.executable, "-m", "interop.convert", str(source), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["src"]
