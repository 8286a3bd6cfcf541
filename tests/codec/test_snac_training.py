"""The SNAC codec through the training stack: `train.py stage=codec experiment=tts_demo`, its export, `load_codec`,
and multi-rate token extraction (docs/snac.md, "Training and tokens")."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from builders import build_codec, plain
from codec.codec import Codec
from codec.loading import load_codec
from codec.snac import SNACCodec
from data import extract_tokens
from data.audio import convert_audio, read_audio
from data.manifest import read_manifest, read_sidecar
from data.token_shards import read_info, read_token_shards
from eval.audio_metrics import mel_distance
from lm.multirate import MultiRatePattern

REPO = Path(__file__).resolve().parents[2]
STEPS = 40


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """A few seconds of the embedded speech set: train and valid clips with transcripts."""
    from data.build_speech import build_speech, load_build_config

    root = tmp_path_factory.mktemp("snac") / "speech"
    build_speech(load_build_config(out=str(root), minutes=0.15, holdout_every=3, workers=1))
    return root


@pytest.fixture(scope="module")
def run_dir(speech) -> Path:
    """A short codec run of experiment=tts_demo, as a user starts it, validating at its last step."""
    run_dir = speech.parent / "codec_run"
    overrides = [
        "stage=codec", "experiment=tts_demo", f"data.root={speech}", f"hydra.run.dir={run_dir}",
        f"steps_per_stage.codec={STEPS}", f"trainer.val_check_interval={STEPS}", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "data.loader.num_workers=0", "data.loader.batch_size=2",
        f"checkpoint_every_n_steps={STEPS}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def clip(path: str, codec: SNACCodec) -> torch.Tensor:
    wav, sample_rate = read_audio(path)
    return convert_audio(wav, sample_rate, codec.sample_rate, codec.channels)[None]  # [1, C, T]


def reconstruction_mel(codec: SNACCodec, clips: list[torch.Tensor]) -> float:
    """Mean mel distance of decode(encode(clip)) to the clip, with the noise blocks' draws seeded."""
    torch.manual_seed(0)
    with torch.no_grad():
        return sum(float(mel_distance(codec.decode(codec.encode(wav))[..., :wav.shape[-1]], wav, codec.sample_rate))
                   for wav in clips) / len(clips)


def test_train_py_trains_the_snac_codec_and_lowers_its_reconstruction_loss(run_dir, speech):
    train_config = OmegaConf.load(run_dir / "export" / "train_config.yaml")
    torch.manual_seed(train_config.seed)  # train.py seeds, then builds the codec first: the run's initial weights
    initial = build_codec(train_config).eval()
    trained = load_codec(run_dir / "export")
    assert isinstance(trained, SNACCodec) and plain(train_config.codec)["encoder_dim"] == trained.config.encoder_dim
    clips = [clip(entry.path, trained) for entry in read_manifest(speech / "train")]
    before, after = reconstruction_mel(initial, clips), reconstruction_mel(trained, clips)
    # 40 steps of 2 x 0.5 s at lr 1e-3 took the mel distance of this set's train clip from 12.3 to 8.3 (0.68)
    assert after < 0.85 * before, (before, after)


def test_validation_logs_the_full_rate_metrics_of_a_codec_without_bandwidths(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    validation = sorted(tag for tag in events.Tags()["scalars"] if tag.startswith("val/"))
    assert validation == ["val/chroma_cosine", "val/mel", "val/si_sdr", "val/waveform_l1"]
    assert all(torch.isfinite(torch.tensor(events.Scalars(tag)[-1].value)) for tag in validation)


def test_the_export_holds_the_trained_weights_and_loads_back_with_identical_codes(run_dir, speech):
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    trained = build_codec(OmegaConf.load(run_dir / "export" / "train_config.yaml"))
    trained.load_state_dict({name[len("codec."):]: value for name, value in checkpoint["state_dict"].items()
                             if name.startswith("codec.")})
    trained.eval()
    exported = load_codec(run_dir / "export")
    wav = clip(read_manifest(speech / "valid")[0].path, exported)
    with torch.no_grad():
        expected, actual = trained.encode(wav), exported.encode(wav)
        assert all(torch.equal(a, b) for a, b in zip(expected, actual))
        torch.manual_seed(1)
        expected_wav = trained.decode(expected)
        torch.manual_seed(1)
        assert torch.equal(exported.decode(actual), expected_wav)


def test_load_codec_returns_the_kind_the_directory_holds(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=codec", "codec=tiny"])
    codec = build_codec(cfg)
    codec.save(tmp_path / "rvq")
    loaded = load_codec(tmp_path / "rvq")
    assert type(loaded) is Codec
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in codec.state_dict().items())
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nothing'}/config.json not found"):
        load_codec(tmp_path / "nothing")


def test_an_rvq_config_and_a_snac_config_size_the_lm_by_their_token_streams():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        rvq = compose(config_name="config", overrides=["codec=tiny", "codec.quantizer.num_codebooks=3"])
        snac = compose(config_name="config", overrides=["codec=snac_tiny", "codec.quantizer.strides=[8,4,2,1]"])
    assert rvq.lm.model.num_codebooks == 3
    assert snac.lm.model.num_codebooks == 1 + 2 + 4 + 8  # slots per coarse frame
    assert snac.lm.model.card == 1024


def test_extraction_of_a_snac_export_writes_coarse_frames_whose_levels_are_the_codecs_codes(run_dir, speech,
                                                                                               tmp_path):
    out = tmp_path / "tokens"
    argv = ["--codec", str(run_dir / "export"), "--manifest", str(speech / "train"), "--out", str(out),
            "--shard-size", "3"]
    assert extract_tokens.main(argv) == 0
    codec = load_codec(run_dir / "export")
    info = read_info(out)
    assert info["multirate"] == {"strides": [4, 2, 1], "order": "depth_first"}
    assert (info["num_codebooks"], info["cardinality"]) == (7, 1024)
    assert info["frame_rate"] == 24000 / 512 / 4
    pattern = MultiRatePattern(**info["multirate"])
    entries = read_manifest(speech / "train")
    items = read_token_shards(out)
    assert [item.path for item in items] == [entry.path for entry in entries]
    for item in items:
        with torch.no_grad():
            expected = codec.encode(clip(item.path, codec))  # 3 levels [1, T_q]
        assert item.codes.shape == (7, expected[0].shape[-1])
        levels = pattern.from_frames(torch.from_numpy(item.codes.astype("int64")))
        assert all(torch.equal(level, code[0]) for level, code in zip(levels, expected))
        assert item.metadata == read_sidecar(item.path) and item.metadata["text"]  # the transcript travels along
    assert extract_tokens.main(argv) == 0  # a rerun finds its own tokens.json (multirate included) and resumes
    assert read_info(out) == info
