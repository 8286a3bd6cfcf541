"""The generation pipeline: per-item seeds (an item's tokens do not depend on what shares its batch, with sampling
on), negative prompts, generate.py's seeds, and bad input refused naming the argument."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra import compose, initialize_config_dir

from codec.backends.config import CodecBackendConfig
from conditioners.attributes import WavCondition
from data.audio import limit_peak, write_wav
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline, item_seeds
from tests.tiny_export import save_tiny_export

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["calm piano", "a fast folk reel played on a violin in d major, 120 bpm, with drums and bass",
            "organ", "brass section march in b flat", "soft strings", "ambient pads and a flute melody",
            "upbeat electronic dance music", "a slow bach chorale on church organ in g major"]  # mixed lengths


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A random tiny LM (card 256) with the MiniLM text conditioner and a random tiny codec, saved as an export."""
    return save_tiny_export(tmp_path_factory.mktemp("export"))


def load(export: Path, **generation) -> GenerationPipeline:
    return GenerationPipeline.load(export, generation=GenerationConfig(**generation))


@pytest.mark.parametrize("cfg_coef", [1.0, 3.0])
def test_an_item_gets_the_same_tokens_alone_and_in_a_batch_of_8(export, cfg_coef):
    pipeline = load(export, temperature=1.0, top_k=250, cfg_coef=cfg_coef)
    seeds = item_seeds(5, len(CAPTIONS))
    batch = pipeline.generate(CAPTIONS, duration=0.3, seeds=seeds).codes  # [8, K, T]
    for index in (1, 6):
        alone = pipeline.generate([CAPTIONS[index]], duration=0.3, seeds=[seeds[index]]).codes
        assert torch.equal(alone[0], batch[index]), index
    assert not torch.equal(batch[0], batch[2])  # different captions and seeds: different tokens
    other_seed = pipeline.generate([CAPTIONS[1]], duration=0.3, seeds=[seeds[1] + 1]).codes
    assert not torch.equal(other_seed[0], batch[1])  # the seed matters


def test_negative_equal_to_the_prompt_gives_the_conditional_tokens(export):
    guided = load(export, temperature=0.0, cfg_coef=3.0)
    conditional = load(export, temperature=0.0, cfg_coef=1.0)
    prompts = CAPTIONS[:3]
    # uncond + 3 * (cond - uncond) with uncond = cond is cond itself: greedy tokens of the unguided model.
    same = guided.generate(prompts, duration=0.3, negative=prompts).codes
    assert torch.equal(same, conditional.generate(prompts, duration=0.3).codes)
    null_guided = guided.generate(prompts, duration=0.3).codes
    against_drums = guided.generate(prompts, duration=0.3, negative=["drums"] * 3).codes
    assert not torch.equal(against_drums, null_guided)  # a negative caption steers away from something else
    assert torch.equal(guided.generate(prompts, duration=0.3, negative=[None] * 3).codes, null_guided)


def test_bad_arguments_are_refused_naming_them(export, tmp_path):
    pipeline = load(export)
    with pytest.raises(ValueError, match="seeds must give one seed per prompt"):
        pipeline.generate(CAPTIONS[:2], duration=0.3, seeds=[1])
    with pytest.raises(ValueError, match="negative must give one caption"):
        pipeline.generate(CAPTIONS[:2], duration=0.3, negative=["x"])
    with pytest.raises(ValueError, match="melody was given but this model has no melody conditioner"):
        pipeline.generate(CAPTIONS[:1], duration=0.3, melody=WavCondition(torch.zeros(1, 24000), 24000))
    with pytest.raises(ValueError, match="continuation is 1.00 s, longer than duration 0.40 s"):
        pipeline.generate(CAPTIONS[:1], duration=0.4, continuation=(torch.zeros(1, 24000), 24000))
    with pytest.raises(ValueError, match="duration must be > 0"):
        pipeline.generate(CAPTIONS[:1], duration=0)
    windowed = load(export, context_frames=30, extend_stride_frames=20)  # 0.4 s windows
    with pytest.raises(ValueError, match=r"continuation is 1.00 s, longer than the model's window \(context_frames=30"):
        windowed.generate(CAPTIONS[:1], duration=2.0, continuation=(torch.zeros(1, 24000), 24000))


def run_generate(export: Path, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "generate.py", f"checkpoint={export}", f"out_dir={out_dir}", "duration=0.3",
                           "device=cpu", *overrides], cwd=ROOT, capture_output=True, text=True)


def test_generate_py_regenerates_one_file_of_a_run_from_its_recorded_seed(export, tmp_path):
    prompts = json.dumps(CAPTIONS[:3])
    assert run_generate(export, tmp_path / "run", f"prompts={prompts}", "seed=11", "batch_size=3").returncode == 0
    record = json.loads((tmp_path / "run" / "generation.json").read_text())
    assert record["seeds"] == {f"{index:03d}.wav": seed for index, seed in enumerate(item_seeds(11, 3))}
    seed = record["seeds"]["001.wav"]
    result = run_generate(export, tmp_path / "alone", f"prompts={json.dumps(CAPTIONS[1:2])}", f"seeds=[{seed}]")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(tmp_path / "run" / "001.npy"), np.load(tmp_path / "alone" / "000.npy"))


@pytest.mark.parametrize("overrides,expected", [
    (["seeds=[1]"], "seeds must give one value per prompt (2), got 1"),
    (["negative=[a, b, c]"], "negative must give one value per prompt (2), got 3"),
    (["melody=MELODY"], "melody was given but this model has no melody conditioner"),
])
def test_generate_py_bad_input_is_one_line_and_writes_nothing(export, tmp_path, overrides, expected):
    melody = tmp_path / "melody.wav"
    write_wav(melody, torch.zeros(1, 8000), 16000)
    overrides = [override.replace("MELODY", str(melody)) for override in overrides]
    result = run_generate(export, tmp_path / "out", 'prompts=["a", "b"]', *overrides)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_streamed_chunks_equal_the_offline_decode(export):
    pipeline = load(export, temperature=1.0, top_k=250, cfg_coef=3.0)
    steps = []
    streamed = list(pipeline.stream(CAPTIONS[:3], duration=0.4, seeds=[1, 2, 3], chunk_frames=1,
                                    progress=lambda step, total: steps.append(step)))
    chunks = [chunk.audio for chunk in streamed]
    offline = pipeline.generate(CAPTIONS[:3], duration=0.4, seeds=[1, 2, 3])
    frames = offline.codes.shape[-1]
    K = offline.codes.shape[1]
    # With the delay pattern, frame t is final after step t + K: one chunk per step from then on.
    assert len(chunks) == frames and all(chunk.shape[-1] == pipeline.codec.hop_length for chunk in chunks)
    assert (torch.cat(chunks, dim=-1) - offline.audio).abs().max() < 1e-5
    assert torch.equal(torch.cat([chunk.codes for chunk in streamed], dim=-1), offline.codes)
    assert len(steps) == frames + K - 1  # the first chunk came K - 1 steps in, not at the end
    eights = [chunk.audio for chunk in pipeline.stream(CAPTIONS[:3], duration=0.4, seeds=[1, 2, 3], chunk_frames=8)]
    assert [chunk.shape[-1] // pipeline.codec.hop_length for chunk in eights] == [8, 8, 8, 6]  # 30 frames
    assert (torch.cat(eights, dim=-1) - offline.audio).abs().max() < 1e-5


def test_the_time_major_codec_backend_generates_and_streams_the_reference_audio(export):
    reference = load(export, temperature=1.0, top_k=250, cfg_coef=3.0)
    fast = GenerationPipeline.load(export, generation=GenerationConfig(temperature=1.0, top_k=250, cfg_coef=3.0),
                                   codec_backend=CodecBackendConfig(kind="time_major"))
    assert fast.codec is not reference.codec and type(fast.codec.decoder) is not type(reference.codec.decoder)
    offline = reference.generate(CAPTIONS[:2], duration=0.4, seeds=[1, 2])
    generated = fast.generate(CAPTIONS[:2], duration=0.4, seeds=[1, 2])
    assert torch.equal(generated.codes, offline.codes)
    assert (generated.audio - offline.audio).abs().max() < 1e-5
    streamed = torch.cat([chunk.audio for chunk in fast.stream(CAPTIONS[:2], duration=0.4, seeds=[1, 2],
                                                               chunk_frames=1)], dim=-1)
    assert (streamed - offline.audio).abs().max() < 1e-5


def test_streaming_a_continuation_yields_its_frames_first(export):
    pipeline = load(export, temperature=1.0, top_k=250, cfg_coef=3.0)
    clip = (torch.randn(1, 24000) * 0.1, 24000)
    chunks = [chunk.audio for chunk in pipeline.stream(CAPTIONS[:1], duration=1.4, continuation=clip, seeds=[4])]
    offline = pipeline.generate(CAPTIONS[:1], duration=1.4, continuation=clip, seeds=[4])
    assert chunks[0].shape[-1] == 75 * pipeline.codec.hop_length  # the 1 s prompt, decoded before any step
    assert (torch.cat(chunks, dim=-1) - offline.audio).abs().max() < 1e-5


def test_stream_refuses_a_codec_that_looks_ahead(export):
    pipeline = load(export)
    pipeline.codec.config.seanet.causal = False  # as MusicGen's 32 kHz codec
    with pytest.raises(ValueError, match="stream needs a codec that streams"):
        next(pipeline.stream(CAPTIONS[:1], duration=0.3))


def test_generate_py_stream_writes_what_the_offline_mode_writes(export, tmp_path):
    prompts = f"prompts={json.dumps(CAPTIONS[:2])}"
    for mode in ("false", "true"):
        result = run_generate(export, tmp_path / mode, prompts, f"stream={mode}", "seed=3")
        assert result.returncode == 0, result.stderr
    assert "streaming into" in result.stderr
    for name in ("000", "001"):
        assert np.array_equal(np.load(tmp_path / "false" / f"{name}.npy"), np.load(tmp_path / "true" / f"{name}.npy"))
        offline, streamed = (soundfile.read(tmp_path / mode / f"{name}.wav")[0] for mode in ("false", "true"))
        assert np.abs(offline - streamed).max() <= 1 / 32768  # one 16-bit step at most


def test_adherence_and_the_validation_samples_generate_what_the_pipeline_generates(export):
    """Both callers are wiring around GenerationPipeline.generate: same captions and seeds, same audio."""
    from types import SimpleNamespace

    from eval.adherence import generate_rows
    from lit.callbacks import ValidationSamples

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="adherence", overrides=[f"checkpoint={export}", "duration=0.3", "seed=7",
                                                           "cfg_coefs=[3]", "unconditional=false", "batch_size=2",
                                                           "sample_rate=24000"])
    pipeline = GenerationPipeline.load(export, generation=GenerationConfig(top_k=250, cfg_coef=3.0))
    expected = pipeline.generate(CAPTIONS[:3], duration=0.3, seeds=item_seeds(7, 3)).audio  # [3, 1, samples]
    rows = generate_rows(cfg, CAPTIONS[:3], pipeline)
    assert torch.allclose(rows["cfg3"], expected[:, 0], atol=1e-6)

    logged = {}
    experiment = SimpleNamespace(add_audio=lambda tag, wav, *args: logged.__setitem__(tag, wav),
                                 add_image=lambda *args: None, add_text=lambda *args: None)
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger.__new__(TensorBoardLogger)
    logger._experiment = experiment
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, logger=logger, global_step=0)
    module = SimpleNamespace(model=pipeline.lm, pattern=pipeline.pattern, device=torch.device("cpu"),
                             conditioner=SimpleNamespace(provider=pipeline.conditioner), training=False,
                             eval=lambda: None, train=lambda mode: None)
    callback = ValidationSamples(str(pipeline.codec_dir), CAPTIONS[:3], 0.3, GenerationConfig(top_k=250,
                                 cfg_coef=3.0), seed=7)
    callback.on_validation_end(trainer, module)
    for index in range(3):  # logged mono, peak-limited as the callback writes it
        assert torch.allclose(logged[f"samples/{index}"], limit_peak(expected[index], 1.0).mean(dim=0), atol=1e-6)
