import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.audio import normalize_rms, resample, write_wav
from data.datasets import SegmentConfig, SegmentDataset, TokenWindowConfig
from data.manifest import AudioEntry, read_manifest, read_sidecar
from data.speech_text import SPEECH_CHARACTERS, draw_sentence, normalize_text

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
WORD_LIST = Path("/usr/share/dict/words")


def tiny_config(out: Path, workers: int = 1, **overrides):
    from data.build_speech import load_build_config

    # About 15 sentences of the default recipe; every third goes to valid or test so each split has a few.
    return load_build_config(**{"out": str(out), "minutes": 0.8, "holdout_every": 3, "workers": workers,
                                **overrides})


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    # Every test that runs espeak-ng asks for this fixture, so it holds the skip.
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    if not WORD_LIST.is_file():
        pytest.skip(f"{WORD_LIST} missing (apt-get install wamerican)")
    from data.build_speech import build_speech

    folder = tmp_path_factory.mktemp("speech")
    build_speech(tiny_config(folder / "one_worker", workers=1))
    build_speech(tiny_config(folder / "two_workers", workers=2))
    return folder / "one_worker", folder / "two_workers"


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def clips(root: Path) -> list[tuple[str, AudioEntry, dict]]:
    return [(split, entry, read_sidecar(entry.path)) for split in ("train", "valid", "test")
            for entry in read_manifest(root / split)]


@pytest.mark.parametrize("text, expected", [
    ("Hello,  World!", "hello, world!"),
    ("Café “quoted” — dash; ok", "cafe quoted, dash, ok"),
    ("rock-and-roll", "rock and roll"),
    ("it’s   here ?", "it's here?"),
])
def test_text_is_normalised_into_the_character_set(text, expected):
    assert normalize_text(text) == expected
    assert set(expected) <= set(SPEECH_CHARACTERS)


@pytest.mark.parametrize("text, named", [("3 cats", "DIGIT THREE"), ("a @ b", "COMMERCIAL AT"),
                                         ("привет", "CYRILLIC SMALL LETTER PE"), ("  ", "at least one letter"),
                                         ("?!", "at least one letter"), ("", "at least one letter")])
def test_text_outside_the_character_set_or_empty_is_refused_by_name(text, named):
    with pytest.raises(ValueError, match=named):
        normalize_text(text)


def test_drawn_sentences_are_normalised_deterministic_and_in_the_word_range():
    dictionary = ["apple", "zebra", "quartz"]
    draw = lambda rng: [draw_sentence(rng, 4, 16, dictionary, word_list_prob=0.3) for _ in range(300)]  # noqa: E731
    sentences = draw(random.Random(5))
    assert sentences == draw(random.Random(5)) != draw(random.Random(6))
    lengths = [len(sentence.split()) for sentence in sentences]
    assert min(lengths) == 4 and max(lengths) == 16
    assert all(normalize_text(sentence) == sentence for sentence in sentences)
    assert any("quartz" in sentence for sentence in sentences)  # the word list is used
    assert len(set(sentences)) > 290


def test_speech_config_builds_its_dataclasses():
    from data.build_speech import SpeechDataConfig

    with initialize_config_dir(config_dir=str(CONFIG_DIR / "data"), version_base="1.3"):
        config = OmegaConf.to_container(compose(config_name="speech"), resolve=True)
    build = SpeechDataConfig(**config["build"])
    segment = SegmentConfig(**config["segment"])
    TokenWindowConfig(**config["tokens"])
    assert build.out == config["root"] and build.sample_rate == segment.sample_rate == 24000
    assert config["train_manifest"] == f"{config['root']}/train" and segment.channels == 1


@pytest.mark.parametrize("speakers, message", [(["en-us+f2", "en-us+nobody"], "variant 'nobody'"),
                                               (["en-us+f2", "tlh+m3"], "voice 'tlh'")])
def test_a_speaker_that_is_not_in_the_config_tables_is_refused(tmp_path, speakers, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path / "out", speakers=speakers)


@pytest.mark.usefixtures("builds")
def test_the_command_line_flags_shape_the_build(tmp_path):
    from data.build_speech import main

    speakers = ["en-us+m3", "en-gb-scotland+f3"]
    assert main(["--out", str(tmp_path / "out"), "--minutes", "0.3", "--min-words", "3", "--max-words", "4",
                 "--word-list-prob", "0", "--rate-range", "150", "160", "--speakers", *speakers,
                 "--holdout-speakers"]) == 0
    recipe = json.loads((tmp_path / "out" / "build.json").read_text())["config"]
    assert (recipe["min_words"], recipe["max_words"], recipe["word_list_prob"]) == (3, 4, 0.0)
    assert (recipe["rate_range"], recipe["speakers"], recipe["holdout_speakers"]) == ([150, 160], speakers, [])
    sidecars = [read_sidecar(entry.path) for split in ("train", "valid", "test")
                for entry in read_manifest(tmp_path / "out" / split)]
    assert len(sidecars) > 3
    assert all(3 <= len(sidecar["text"].split()) <= 4 and 150 <= sidecar["rate"] <= 160 for sidecar in sidecars)
    assert {sidecar["speaker"] for sidecar in sidecars} <= set(speakers)
    assert not any(sidecar["held_out_speaker"] or "words" in sidecar["text"] for sidecar in sidecars)


def test_a_bad_flag_value_is_one_error_naming_it(tmp_path, capsys):
    from data.build_speech import main

    assert main(["--out", str(tmp_path / "out"), "--min-words", "9", "--max-words", "4"]) == 1
    assert "min_words and max_words" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("speaker, message", [("en-zz+f2", "espeak-ng has no voice 'en-zz'"),
                                              ("en-us+nobody", "espeak-ng has no variant 'nobody'")])
@pytest.mark.usefixtures("builds")
def test_a_voice_espeak_lacks_is_refused_before_anything_is_rendered(tmp_path, speaker, message):
    from data.build_speech import build_speech

    # In the config tables, so only espeak-ng can tell (it falls back silently on an unknown variant).
    config = tiny_config(tmp_path / "out")
    voice, variant = speaker.split("+")
    config.voices[voice] = "Nowhere"
    config.variants[variant] = "person"
    config.speakers.append(speaker)
    with pytest.raises(ValueError, match=message):
        build_speech(config)
    assert list(tmp_path.iterdir()) == []


def test_build_is_byte_identical_whatever_the_worker_count(builds):
    one, two = (file_bytes(root) for root in builds)
    assert len([name for name in one if name.endswith(".wav")]) >= 10
    assert one == two


def test_splits_are_disjoint_by_sentence_and_held_out_speakers_are_heard_in_test_only(builds):
    from data.build_speech import load_build_config

    recipe = load_build_config()
    by_split = {}
    for split, entry, metadata in clips(builds[0]):
        by_split.setdefault(split, []).append(metadata)
    texts = {split: {metadata["text"] for metadata in rows} for split, rows in by_split.items()}
    assert all(texts[split] for split in ("train", "valid", "test"))
    assert not (texts["train"] & texts["valid"] or texts["train"] & texts["test"] or texts["valid"] & texts["test"])
    for split, rows in by_split.items():
        held_out = [metadata for metadata in rows if metadata["held_out_speaker"]]
        assert all(metadata["speaker"] in recipe.holdout_speakers for metadata in held_out)
        assert all(metadata["speaker"] in recipe.speakers for metadata in rows if not metadata["held_out_speaker"])
        if split == "test":  # each test sentence: once by a known speaker, once by a held-out one
            assert sorted(metadata["text"] for metadata in held_out) == sorted(texts["test"])
            assert len(rows) == 2 * len(texts["test"])
        else:
            assert not held_out
    summary = json.loads((builds[0] / "build.json").read_text())
    assert summary["clips"] == {split: len(rows) for split, rows in by_split.items()}
    assert summary["hours"] * 60 >= 0.8


def test_clips_are_24khz_mono_loudness_normalised_with_complete_sidecars(builds):
    from data.build_speech import load_build_config

    recipe = load_build_config()
    for split, entry, metadata in clips(builds[0]):
        samples, sample_rate = soundfile.read(entry.path, always_2d=True)
        assert sample_rate == entry.sample_rate == 24000 and samples.shape[1] == entry.channels == 1
        assert len(samples) / sample_rate == entry.duration == metadata["duration"]
        assert np.abs(samples).max() == pytest.approx(entry.amplitude, abs=1e-4)
        assert 20 * np.log10(np.sqrt(np.mean(samples ** 2))) == pytest.approx(-20, abs=0.5)
        assert set(metadata["text"]) <= set(SPEECH_CHARACTERS)
        assert recipe.min_words <= metadata["words"] == len(metadata["text"].split()) <= recipe.max_words
        assert metadata["speaker"] == f"{metadata['voice']}+{metadata['variant']}"
        assert recipe.rate_range[0] <= metadata["rate"] <= recipe.rate_range[1]
        assert recipe.pitch_range[0] <= metadata["pitch"] <= recipe.pitch_range[1]
        accent, person = recipe.voices[metadata["voice"]], recipe.variants[metadata["variant"]]
        assert f"{person} with" in metadata["description"] and f"{accent} accent" in metadata["description"]


def test_each_clip_is_its_sidecar_spoken(builds):
    from data.build_speech import speak

    # espeak-ng given the sidecar's text, speaker, rate and pitch reproduces the stored clip to 16-bit precision.
    for split, entry, metadata in clips(builds[0])[:4]:
        samples, sample_rate = speak(metadata["text"], metadata["speaker"], metadata["rate"], metadata["pitch"])
        expected = normalize_rms(resample(torch.from_numpy(samples)[None], sample_rate, 24000), target_db=-20.0)[0]
        stored, _ = soundfile.read(entry.path, dtype="float32")
        assert len(stored) == len(expected)
        assert np.abs(stored - expected.numpy()).max() < 2 / 32768


def test_duration_follows_the_transcript_length_over_the_rate(builds):
    rows = [metadata for _, _, metadata in clips(builds[0])]
    # Letters rather than words: the word-list sentences hold long words (correlation 0.97 over a 1 h build).
    letters_per_rate = [sum(char.isalpha() for char in metadata["text"]) / metadata["rate"] for metadata in rows]
    assert np.corrcoef(letters_per_rate, [metadata["duration"] for metadata in rows])[0, 1] > 0.9


def fundamental_hz(samples: np.ndarray, sample_rate: int) -> float:
    """Median pitch (60-500 Hz) of the louder half of 40 ms frames: the shortest lag whose autocorrelation is
    within 15% of the frame's best (the best alone often lands on twice the period)."""
    frame = int(0.04 * sample_rate)
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame)[::frame // 2]
    frames = frames[np.sum(frames ** 2, axis=1) >= np.median(np.sum(frames ** 2, axis=1))]
    lags = np.arange(sample_rate // 500, sample_rate // 60)
    pitches = []
    for values in frames - frames.mean(axis=1, keepdims=True):
        correlation = np.array([np.dot(values[:-lag], values[lag:]) for lag in lags])
        pitches.append(sample_rate / lags[np.argmax(correlation >= 0.85 * correlation.max())])
    return float(np.median(pitches))


@pytest.mark.usefixtures("builds")
def test_rate_and_pitch_do_what_the_sidecar_says():
    from data.build_speech import speak

    text = "the old sailor carried a heavy basket across the narrow bridge."
    slow, sample_rate = speak(text, "en-gb+m2", rate=120, pitch=50)
    fast, _ = speak(text, "en-gb+m2", rate=230, pitch=50)
    assert 1.5 < len(slow) / len(fast) < 2.3  # 230 / 120 = 1.9 words per minute apart
    low, _ = speak(text, "en-gb+m2", rate=175, pitch=20)
    high, _ = speak(text, "en-gb+m2", rate=175, pitch=80)
    assert fundamental_hz(high, sample_rate) > 1.3 * fundamental_hz(low, sample_rate)


@pytest.mark.parametrize("text, message", [("Hello there.", "must be normalised"), ("", "at least one letter"),
                                           ("route 66.", "DIGIT SIX")])
def test_speak_refuses_text_that_is_not_a_normalised_transcript(text, message):
    from data.build_speech import speak

    with pytest.raises(ValueError, match=message):
        speak(text, "en-us+f2", rate=175, pitch=50)


@pytest.mark.usefixtures("builds")
def test_variants_captioned_woman_speak_higher_than_those_captioned_man():
    from data.build_speech import load_build_config, speak

    recipe = load_build_config()
    pitches = {}
    for variant, person in recipe.variants.items():
        samples, sample_rate = speak("the sailor carried a basket.", f"en-us+{variant}", rate=175, pitch=50)
        pitches.setdefault(person, []).append(fundamental_hz(samples, sample_rate))
    assert set(pitches) == {"man", "woman"}
    assert max(pitches["man"]) < 150 < min(pitches["woman"]), pitches


@pytest.mark.usefixtures("builds")
def test_a_failed_rebuild_leaves_the_earlier_build_untouched(tmp_path, monkeypatch):
    import data.build_speech as build_speech_module

    out = tmp_path / "speech"
    build_speech_module.build_speech(tiny_config(out, minutes=0.1))
    before = file_bytes(out)
    spoken = []

    def speak_then_fail(text, speaker, rate, pitch):
        spoken.append(text)
        if len(spoken) == 3:
            raise RuntimeError("espeak-ng failed")
        return np.zeros(22050, dtype=np.float32) + 0.1, 22050

    monkeypatch.setattr(build_speech_module, "speak", speak_then_fail)
    with pytest.raises(RuntimeError, match="espeak-ng failed"):
        build_speech_module.build_speech(tiny_config(out, seed=1))
    assert file_bytes(out) == before and sorted(path.name for path in tmp_path.iterdir()) == ["speech"]
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a speech-data build"):
        build_speech_module.build_speech(tiny_config(tmp_path / "stranger"))


def test_a_speech_manifest_at_another_rate_is_resampled_on_read(tmp_path):
    # espeak-ng's native 22.05 kHz in a speech manifest: the codec's segments come out at 24 kHz, resampled.
    with initialize_config_dir(config_dir=str(CONFIG_DIR / "data"), version_base="1.3"):
        segment = OmegaConf.to_container(compose(config_name="speech"), resolve=True)["segment"]
    wav = torch.sin(torch.arange(22050) * 2 * torch.pi * 220 / 22050)[None] * 0.5  # [1, T] 1 s at 22.05 kHz
    write_wav(tmp_path / "clip.wav", wav, 22050)
    entry = AudioEntry(path=str(tmp_path / "clip.wav"), duration=1.0, sample_rate=22050, channels=1)
    item = SegmentDataset([entry], SegmentConfig(**{**segment, "num_segments": 1}))[0]
    stored, _ = soundfile.read(tmp_path / "clip.wav", dtype="float32")
    expected = resample(torch.from_numpy(stored)[None], 22050, 24000)
    assert item["wav"].shape == (1, 24000) and int(item["length"]) == 24000
    torch.testing.assert_close(item["wav"], expected, atol=1e-6, rtol=0)
