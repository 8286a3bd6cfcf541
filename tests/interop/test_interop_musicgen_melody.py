"""HF MusicGen-Melody -> codeclm: our reference-mode chroma against HF's feature extractor, then a tiny random
MusicgenMelodyForConditionalGeneration (T5 + EnCodec + decoder, tokenizer trained in the test) converted and
compared with HF itself: logits on a padded batch with and without a melody, greedy CFG tokens through generate.py
(HF issue #45647 was Melody silently ignoring its audio: the melody must change the tokens), audio, refusals."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoProcessor, MusicgenMelodyForConditionalGeneration

import generate as generate_script
from builders import load_lm_export
from codec.codec import Codec
from conditioners.attributes import ConditioningAttributes, WavCondition, collate_wavs
from conditioners.chroma import ChromaConditioner
from data.audio import read_audio, write_wav
from interop.convert import convert
from interop.state import ConversionError
from interop.tiny import tiny_hf_musicgen_melody

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["calm piano in a minor", "a fast folk reel played on violin in d major with drums"]  # different lengths
SAMPLE_RATE = 32000
C2, C4, E4, G4, A4, C5 = 65.41, 261.63, 329.63, 392.0, 440.0, 523.25
FRAMES = 20  # generated frames (0.4 s at 50 Hz)


def tone(frequency: float, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return amplitude * torch.sin(2 * math.pi * frequency * time)


def melody_wave() -> torch.Tensor:
    """[T] 4.8 s: C4 E4 G4 C5 A4, 0.8 s each, then a loud C2 under a quieter G4 (where the filterbanks disagree)."""
    notes = [tone(frequency, 0.8) for frequency in (C4, E4, G4, C5, A4)]
    return torch.cat(notes + [tone(C2, 0.8, amplitude=0.5) + tone(G4, 0.8, amplitude=0.3)])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf") / "musicgen_melody"
    tiny_hf_musicgen_melody(directory)
    return directory


@pytest.fixture(scope="module")
def ours_dir(hf_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ours") / "converted"
    assert convert(hf_dir, out) == "hf_musicgen_melody"
    return out


@pytest.fixture(scope="module")
def melody_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("melody") / "melody.wav"
    write_wav(path, melody_wave().unsqueeze(0), SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def melody(melody_file) -> torch.Tensor:
    """The melody as generate.py reads it back (16-bit PCM): [T]."""
    wav, sample_rate = read_audio(melody_file)
    assert sample_rate == SAMPLE_RATE
    return wav[0]


def reference_chroma(**overrides) -> ChromaConditioner:
    """The chroma conditioner of configs/conditioner/musicgen_melody.yaml (HF's settings), with overrides."""
    settings = OmegaConf.load(ROOT / "configs/conditioner/musicgen_melody.yaml").chroma.melody
    return ChromaConditioner(output_dim=8, **{**OmegaConf.to_container(settings), **overrides})


@pytest.mark.parametrize("seconds", [[4.8], [31.0], [0.3], [4.8, 1.5]],
                         ids=["notes", "longer than chunk_length", "shorter than n_fft", "padded batch"])
def test_reference_chroma_is_hf_feature_extractor_output(hf_dir, seconds):
    waves = [melody_wave().repeat(math.ceil(length / 4.8))[: int(length * SAMPLE_RATE)] for length in seconds]
    extractor = AutoProcessor.from_pretrained(hf_dir).feature_extractor
    theirs = extractor([wave.numpy() for wave in waves], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    batch = collate_wavs([ConditioningAttributes(wav={"melody": WavCondition(wave[None], SAMPLE_RATE)})
                          for wave in waves], "melody", SAMPLE_RATE)
    ours = reference_chroma().chromagram(batch.wav)  # [B, frames, 12]
    assert torch.equal(ours, theirs["input_features"])  # one-hot frames, batch padding (class C) included
    assert ours.sum(dim=-1).eq(1).all()


def test_gaussian_filterbank_differs_from_nearest_bins_under_a_loud_bass():
    wave = melody_wave()[None]
    gaussian = reference_chroma().chromagram(wave)[0].argmax(dim=-1)  # [frames]
    nearest = reference_chroma(filterbank="nearest", min_frequency=65.0, max_frequency=4000.0).chromagram(wave)[0]
    nearest = nearest.argmax(dim=-1)
    chord = slice(33, 37)  # frames wholly inside the last 0.8 s (hop 4096, window 16384)
    assert (gaussian[chord] == 7).all() and (nearest[chord] == 0).all()  # G (the melody) vs C (the bass)
    assert torch.equal(gaussian[:30], nearest[:30])  # single notes: both banks agree


def test_reference_chroma_repeats_every_frame_to_length_and_null_is_silence():
    conditioner = reference_chroma(length=100)
    wave = melody_wave()
    batch = collate_wavs([ConditioningAttributes(wav={"melody": WavCondition(wave[None], SAMPLE_RATE)}),
                          ConditioningAttributes()], "melody", SAMPLE_RATE)
    condition = conditioner(batch, seq_len=7)  # seq_len plays no part with `length`
    frames = 1 + wave.shape[0] // conditioner.hop_length  # 38 centred frames, the last partial ones included
    projected = conditioner.projection(conditioner.chromagram(wave[None])[0])  # [frames, D]
    torch.testing.assert_close(condition.embeddings[0], projected[torch.arange(100) % frames])
    silence = conditioner.projection(torch.eye(12)[0])  # HF's no-melody frame: one-hot C
    torch.testing.assert_close(condition.embeddings[1], silence.expand(100, -1))  # a missing melody is silence
    torch.testing.assert_close(condition.null, silence.expand(2, 100, -1))
    assert condition.mask.all()


def hf_model(directory: Path) -> MusicgenMelodyForConditionalGeneration:
    return MusicgenMelodyForConditionalGeneration.from_pretrained(directory).eval()


def hf_inputs(directory: Path, melody: torch.Tensor | None) -> dict:
    """HF's model inputs for CAPTIONS: the padded tokens and, with a melody, its chroma for every caption."""
    processor = AutoProcessor.from_pretrained(directory)
    inputs = dict(processor.tokenizer(CAPTIONS, padding=True, return_tensors="pt"))
    if melody is not None:
        inputs["input_features"] = processor.feature_extractor([melody.numpy()] * len(CAPTIONS),
                                                               sampling_rate=SAMPLE_RATE,
                                                               return_tensors="pt")["input_features"]
    return inputs


@pytest.mark.parametrize("with_melody", [True, False], ids=["melody", "no melody"])
def test_logits_match_hf_on_a_padded_batch(hf_dir, ours_dir, melody, with_melody):
    inputs = hf_inputs(hf_dir, melody if with_melody else None)
    assert not inputs["attention_mask"].all()  # the batch is padded
    lm, pattern, conditioner, _ = load_lm_export(ours_dir)
    assert not lm.config.cross_attention
    K, S = 4, 12
    sequence = torch.randint(0, 64, (2, K, S))
    sequence[:, :, 0] = 64  # the special token (HF's decoder start) where the pattern puts it
    wav = {"melody": WavCondition(melody[None], SAMPLE_RATE)} if with_melody else {}
    with torch.no_grad():
        theirs = hf_model(hf_dir)(**inputs, decoder_input_ids=sequence.reshape(2 * K, S)).logits  # [B*K, P+S, card]
        conditions = conditioner([ConditioningAttributes(text={"description": text}, wav=wav) for text in CAPTIONS])
        ours = lm(sequence, conditions)  # [B, K, S, card]
    assert conditions.prepend.shape[1] == 40 + inputs["input_ids"].shape[1]  # chroma_length + text tokens
    difference = (ours - theirs[:, -S:].reshape(2, K, S, 64)).abs().max().item()
    assert difference < 1e-4, difference
    assert theirs.abs().max() > 1  # the comparison is not between near-zero logits


@pytest.fixture(scope="module")
def hf_generated(hf_dir, melody) -> dict[bool, tuple[torch.Tensor, torch.Tensor]]:
    """HF's greedy CFG generation with and without the melody -> {with_melody: (codes [B, K, T], audio)}; the codes
    are caught on their way into the audio encoder's decode."""
    hf = hf_model(hf_dir)
    caught = {}
    decode = hf.audio_encoder.decode

    def catch(codes, *args, **kwargs):
        caught["codes"] = codes[0]
        return decode(codes, *args, **kwargs)

    hf.audio_encoder.decode = catch
    generated = {}
    for with_melody in (True, False):
        with torch.no_grad():
            audio = hf.generate(**hf_inputs(hf_dir, melody if with_melody else None), do_sample=False,
                                guidance_scale=3.0, max_length=FRAMES + 4)
        generated[with_melody] = caught["codes"], audio
    return generated


def test_the_melody_and_the_caption_change_hf_tokens(hf_generated):
    (with_melody, _), (without, _) = hf_generated[True], hf_generated[False]
    assert with_melody.shape == (2, 4, FRAMES)
    assert (with_melody != without).float().mean() > 0.1  # the melody steers (HF issue #45647: it once did not)
    assert (with_melody[0] != with_melody[1]).float().mean() > 0.1  # and so do the captions


@pytest.mark.parametrize("with_melody", [True, False], ids=["melody", "no melody"])
def test_greedy_cfg_generation_through_generate_py_gives_hf_tokens_and_audio(hf_generated, ours_dir, melody_file,
                                                                             tmp_path, with_melody):
    codes, audio = hf_generated[with_melody]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[
            f"checkpoint={ours_dir}", f"prompts={json.dumps(CAPTIONS)}", f"duration={FRAMES / 50}",
            "temperature=0", "top_k=0", "cfg_coef=3", f"out_dir={tmp_path / 'generated'}", "device=cpu",
            f"melody={melody_file if with_melody else 'null'}"])
    out_dir = generate_script.generate(cfg)
    ours = torch.stack([torch.from_numpy(np.load(out_dir / f"{index:03d}.npy")) for index in range(2)])
    assert torch.equal(ours, codes)
    codec = Codec.load(ours_dir / "codec")
    with torch.no_grad():
        difference = (codec.decode(ours) - audio).abs().max().item()
    assert difference < 1e-4, difference


def copy_hf(hf_dir: Path, destination: Path) -> Path:
    destination.mkdir()
    for path in hf_dir.iterdir():
        (destination / path.name).write_bytes(path.read_bytes())
    return destination


@pytest.mark.parametrize("file, key, value", [
    ("config.json", "num_chroma", 24),
    ("processor_config.json", "padding_value", 1.0),
])
def test_an_unsupported_option_is_refused_by_name(hf_dir, tmp_path, file, key, value):
    source = copy_hf(hf_dir, tmp_path / "src")
    config = json.loads((source / file).read_text())
    (config if file == "config.json" else config["feature_extractor"])[key] = value
    (source / file).write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=f"{key}={value}"):
        convert(source, tmp_path / "out")
    assert [path.name for path in tmp_path.iterdir()] == ["src"]


def test_export_to_hf_is_refused_by_name(ours_dir, tmp_path):
    with pytest.raises(ConversionError, match="conditioner.chroma.melody"):
        convert(ours_dir, tmp_path / "hf", to="hf")
