"""SpeechPipeline: its audio is the TTSGenerator's codes decoded by the codec, each item depends on its own text,
speaker and seed only, and bad requests are refused by name before anything is generated."""
import pytest
import torch

from builders import load_tts_export
from codec.codec import Codec, CodecConfig
from codec.loading import load_codec
from lm.tts_generator import TTSGenerationConfig, TTSGenerator
from pipeline import item_seeds
from speech_pipeline import SpeechPipeline
from tests.tiny_tts_export import SPEAKERS, save_tiny_tts_export

TEXTS = ["the old cat slept.", "is it raining?", "one, two, three"]


@pytest.fixture(scope="module")
def tts_run(tmp_path_factory):
    return save_tiny_tts_export(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="module")
def pipeline(tts_run):
    return SpeechPipeline.load(tts_run)


def test_the_audio_is_the_generators_codes_decoded_by_the_codec(tts_run, pipeline):
    model, tts_format, cfg = load_tts_export(tts_run)
    codec = load_codec(cfg.codec_dir)
    generator = TTSGenerator(model, tts_format, TTSGenerationConfig(**cfg.tts.generation))
    speakers = ["en-gb+f4", None, "en-us+m3"]
    output = pipeline.speak(TEXTS, speakers=speakers, seeds=[5, 6, 7])
    assert output.seeds == [5, 6, 7]
    for index, (text, speaker, seed) in enumerate(zip(TEXTS, speakers, output.seeds)):
        spoken = generator.generate(text, torch.Generator().manual_seed(seed), speaker)
        torch.manual_seed(seed)  # SNAC's decoder draws noise from torch's generator
        with torch.no_grad():
            reference = codec.decode([level[None] for level in spoken.codes])[0]
        assert all(torch.equal(ours, theirs) for ours, theirs in zip(output.codes[index], spoken.codes))
        assert output.finished[index] == spoken.finished
        torch.testing.assert_close(output.audio[index], reference, atol=0, rtol=0)


def test_an_item_alone_equals_the_same_item_inside_a_longer_call(pipeline):
    together = pipeline.speak(TEXTS, speakers=[None, "en-029+f5", None])  # default seeds: item_seeds(0, 3)
    assert together.seeds == item_seeds(0, 3)
    alone = pipeline.speak(TEXTS[1:2], speakers=["en-029+f5"], seeds=together.seeds[1:2])
    torch.testing.assert_close(alone.audio[0], together.audio[1], atol=0, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(alone.codes[0], together.codes[1]))
    other_voice = pipeline.speak(TEXTS[1:2], speakers=["en-gb+f4"], seeds=together.seeds[1:2])
    assert not all(torch.equal(a, b) for a, b in zip(other_voice.codes[0], together.codes[1]))  # the token counts


@pytest.mark.parametrize("texts,speakers,seeds,match", [
    ([], None, None, "texts must hold at least one text"),
    (["hi", "   "], None, None, r"texts\[1\]: text must hold at least one character"),
    (["hi", "5 \u20ac"], None, None, r"texts\[1\]: text has '\u20ac' \(U\+20AC\)"),
    (["hi", "ho"], [None, "en-gb+m9"], None, r"speakers\[1\]: speaker 'en-gb\+m9' is unknown; the known speakers "
                                             r"are \['en-029\+f5', 'en-gb\+f4', 'en-us\+m3'\]"),
    (["hi", "ho"], ["en-gb+f4"], None, r"speakers must give one value per text \(2\), got 1"),
    (["hi", "ho"], None, [1, 2, 3], r"seeds must give one value per text \(2\), got 3"),
])
def test_bad_requests_are_refused_by_name_before_anything_is_generated(pipeline, monkeypatch, texts, speakers, seeds,
                                                                        match):
    def generate(*args, **kwargs):
        raise AssertionError("generated before the request was checked")

    monkeypatch.setattr(pipeline.generator, "generate", generate)
    with pytest.raises(ValueError, match=match):
        pipeline.speak(texts, speakers=speakers, seeds=seeds)


def test_a_codec_of_other_codes_is_refused(tts_run, tmp_path):
    model, tts_format, cfg = load_tts_export(tts_run)
    generation = TTSGenerationConfig()
    with pytest.raises(ValueError, match="multi-scale codec \\(SNACCodec\\), got Codec"):
        SpeechPipeline(model, tts_format, Codec(CodecConfig()), generation)
    snac = load_codec(cfg.codec_dir)
    snac.config.quantizer.strides = (2, 1)
    with pytest.raises(ValueError, match=r"strides \[2, 1\], codebook size 1024\) are not the TTS format's "
                                         r"\(strides \[4, 2, 1\], card 1024\)"):
        SpeechPipeline(model, tts_format, snac, generation)


def test_load_reads_the_runs_codec_and_generation_settings(tts_run, pipeline):
    assert pipeline.speakers == SPEAKERS and pipeline.codec_dir == (tts_run.parent / "codec").resolve()
    assert pipeline.generator.config.max_audio_frames == 4  # the run's tts.generation
    greedy = SpeechPipeline.load(tts_run, generation=TTSGenerationConfig(temperature=0.0, max_audio_frames=2))
    assert greedy.generator.config.temperature == 0.0
    assert all(level.numel() == 2 * count for level, count in
               zip(greedy.speak(["hi"]).codes[0], greedy.format.pattern.counts))  # cut at 2 frames: unfinished


def test_the_validation_samples_speak_what_the_pipeline_speaks(tts_run, pipeline):
    """TTSValidationSamples is wiring around SpeechPipeline.speak: same texts, voices and seeds, same audio."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers import TensorBoardLogger

    from data.audio import limit_peak
    from lit.callbacks import TTSSamplesConfig, TTSValidationSamples

    logged = {}
    experiment = SimpleNamespace(add_audio=lambda tag, wav, *args: logged.__setitem__(tag, wav),
                                 add_image=lambda *args: None,
                                 add_text=lambda tag, text, *args: logged.__setitem__(tag, text))
    logger = TensorBoardLogger.__new__(TensorBoardLogger)
    logger._experiment = experiment
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, logger=logger, global_step=0)
    module = SimpleNamespace(model=pipeline.model, device=torch.device("cpu"), training=False, eval=lambda: None,
                             train=lambda mode: None)
    samples = TTSSamplesConfig(texts=TEXTS + ["four."], speakers=None, max_audio_frames=3)
    generation = pipeline.generator.config
    callback = TTSValidationSamples(str(pipeline.codec_dir), pipeline.format, samples, generation, seed=7)
    callback.on_validation_end(trainer, module)
    voices = SPEAKERS + SPEAKERS[:1]  # the training speakers in order, cycled
    short = SpeechPipeline(pipeline.model, pipeline.format, pipeline.codec,
                           TTSGenerationConfig(**{**vars(generation), "max_audio_frames": 3}))
    expected = short.speak(samples.texts, voices, item_seeds(7, 4))
    for index in range(4):  # logged mono, peak-limited
        torch.testing.assert_close(logged[f"samples/{index}"], limit_peak(expected.audio[index], 1.0).mean(dim=0),
                                   atol=0, rtol=0)
        assert logged[f"samples/{index}_text"] == f"{voices[index]}: {samples.texts[index]}"
    with pytest.raises(ValueError, match=r"tts.samples: speakers\[0\]: speaker 'nobody' is unknown"):
        TTSValidationSamples("unused", pipeline.format, TTSSamplesConfig(texts=["hi"], speakers=["nobody"]),
                             generation, seed=0)
