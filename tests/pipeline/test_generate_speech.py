"""generate.py with a TTS checkpoint: it writes what SpeechPipeline speaks (WAVs, codes, generation.json) and a
transcripts.jsonl that eval.speech reads back; texts and voices from prompts, a manifest (unknown voices skipped
and counted, max_prompts after) and speaker / speakers; bad input is one line on stderr and nothing written."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hydra import compose, initialize_config_dir

from data.audio import limit_peak
from data.manifest import AudioEntry, write_manifest
from eval.speech import read_listing
from generate import generate, read_texts
from pipeline import item_seeds
from speech_pipeline import SpeechPipeline
from tests.tiny_tts_export import SPEAKERS, save_tiny_tts_export

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = [("the old cat slept.", "en-gb+f4"), ("a held out voice.", "en-gb-x-gbclan+m3"),
            ("is it raining?", "en-us+m3"), ("no voice named.", None), ("one too many.", "en-029+f5")]


@pytest.fixture(scope="module")
def tts_run(tmp_path_factory):
    return save_tiny_tts_export(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A split folder of sidecars only (generate.py reads no audio from it): `MANIFEST`'s texts and speakers."""
    split = tmp_path_factory.mktemp("test_split")
    for index, (text, speaker) in enumerate(MANIFEST):
        (split / f"{index}.json").write_text(json.dumps({"text": text, **({} if speaker is None else
                                                                            {"speaker": speaker})}))
    write_manifest(split / "data.jsonl", [AudioEntry(str(split / f"{index}.wav"), 1.0, 24000)
                                          for index in range(len(MANIFEST))])
    return split


def run_generate(checkpoint: Path, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "generate.py", f"checkpoint={checkpoint}", f"out_dir={out_dir}",
                           "device=cpu", *overrides], cwd=ROOT, capture_output=True, text=True)


def generate_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="generate", overrides=["checkpoint=unused", *overrides])


def test_generate_py_writes_what_the_pipeline_speaks_and_a_listing_eval_speech_reads(tts_run, manifest, tmp_path):
    out = tmp_path / "out"
    result = run_generate(tts_run, out, 'prompts=["hi there"]', f"prompts_manifest={manifest}", "max_prompts=4",
                          "seed=3", "top_k=20")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 entries" in result.stdout  # the held-out voice
    texts = ["hi there", "the old cat slept.", "is it raining?", "no voice named."]
    voices = [None, "en-gb+f4", "en-us+m3", None]
    names = [f"{index:03d}.wav" for index in range(4)]
    record = json.loads((out / "generation.json").read_text())
    assert record["prompts"] == dict(zip(names, texts)) and record["speakers"] == dict(zip(names, voices))
    assert record["seeds"] == dict(zip(names, item_seeds(3, 4))) and record["skipped_manifest_entries"] == 1
    assert record["generation"]["top_k"] == 20 and record["generation"]["max_audio_frames"] == 4  # given; the run's

    run_settings = SpeechPipeline.load(tts_run).generator.config
    pipeline = SpeechPipeline.load(tts_run, generation=replace(run_settings, top_k=20))
    expected = pipeline.speak(texts, voices, item_seeds(3, 4))
    assert record["finished"] == dict(zip(names, expected.finished))
    for index, name in enumerate(names):
        frames = pipeline.format.pattern.to_frames([level[None] for level in expected.codes[index]])[0]  # [F, T_c]
        assert np.array_equal(np.load(out / name.replace(".wav", ".npy")), frames.numpy())
        wav, sample_rate = soundfile.read(out / name, dtype="float32", always_2d=True)
        assert sample_rate == pipeline.codec.sample_rate and (out / name.replace(".wav", ".png")).is_file()
        # 16-bit PCM: libsndfile writes x * 32767 rounded and reads n / 32768, so up to 1.5 steps apart
        np.testing.assert_allclose(wav.T, limit_peak(expected.audio[index]).numpy(), atol=2 / 32767, rtol=0)

    accents = {speaker: ("British", "woman") for speaker in SPEAKERS}
    clips, unlisted = read_listing(out, "transcripts.jsonl", accents)
    assert unlisted == 0
    assert [(clip.source, clip.text, clip.speaker) for clip in clips] == list(zip(names, texts, voices))


def test_texts_and_voices_from_prompts_manifest_and_speaker_keys(manifest):
    texts, voices, skipped = read_texts(generate_config('prompts=["hello"]', f"prompts_manifest={manifest}"), SPEAKERS)
    assert texts == ["hello"] + [text for text, speaker in MANIFEST if speaker != "en-gb-x-gbclan+m3"]
    assert voices == [None, "en-gb+f4", "en-us+m3", None, "en-029+f5"] and skipped == 1
    texts, voices, _ = read_texts(generate_config(f"prompts_manifest={manifest}", "max_prompts=2"), SPEAKERS)
    assert (texts, voices) == (["the old cat slept.", "is it raining?"], ["en-gb+f4", "en-us+m3"])  # after skipping
    _, voices, skipped = read_texts(generate_config(f"prompts_manifest={manifest}"), [])  # a model without voices
    assert voices == [None] * 5 and skipped == 0
    _, voices, _ = read_texts(generate_config('prompts=["a", "b"]', "speaker=en-gb+f4"), SPEAKERS)
    assert voices == ["en-gb+f4"] * 2
    _, voices, _ = read_texts(generate_config('prompts=["a", "b"]', "speakers=[en-us+m3,null]"), SPEAKERS)
    assert voices == ["en-us+m3", None]
    with pytest.raises(ValueError, match=r"speakers must give one value per prompt \(2\), got 3"):
        read_texts(generate_config('prompts=["a", "b"]', "speakers=[a,b,c]"), SPEAKERS)
    with pytest.raises(ValueError, match="give speaker .* or speakers .*, not both"):
        read_texts(generate_config('prompts=["a"]', "speaker=a", "speakers=[a]"), SPEAKERS)


@pytest.mark.parametrize("overrides,expected", [
    (['prompts=["hi"]', "duration=3", "cfg_coef=2"], "duration, cfg_coef: music-only, but checkpoint"),
    (['prompts=["hi", "ho"]', "speakers=[null,en-gb+m9]"], "speakers[1]: speaker 'en-gb+m9' is unknown; the known "
                                                            "speakers are ['en-029+f5', 'en-gb+f4', 'en-us+m3']"),
])
def test_generate_py_bad_input_is_one_line_and_writes_nothing(tts_run, tmp_path, overrides, expected):
    result = run_generate(tts_run, tmp_path / "out", *overrides)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_a_speech_key_for_a_music_checkpoint_is_refused_by_name(tmp_path):
    cfg = generate_config('prompts=["calm piano"]', "speaker=en-gb+f4", "max_audio_frames=9")
    cfg.checkpoint, cfg.out_dir = str(tmp_path / "music_lm"), str(tmp_path / "out")
    with pytest.raises(ValueError, match="speaker, max_audio_frames: for a TTS checkpoint, but .*music_lm is not one"):
        generate(cfg)
    assert list(tmp_path.iterdir()) == []
