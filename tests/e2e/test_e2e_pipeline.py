"""The whole stack on CPU: train a codec, extract tokens, train a text-conditioned LM, generate music."""
import json

import numpy as np
import pytest
import soundfile
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from codec.codec import Codec
from tests.e2e.conftest import codec_overrides, needs_default_data, run

pytestmark = needs_default_data


@pytest.fixture(scope="module")
def lm_run(default_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    codec_dir = root / "codec"
    run("train.py", *codec_overrides(default_data, codec_dir, max_steps=4))
    for split in ("train", "valid"):
        run("-m", "data.extract_tokens", "--codec", str(codec_dir / "export"), "--manifest", str(default_data / split),
            "--out", str(root / "tokens" / split))
    run("train.py", "stage=lm", "experiment=demo", f"data.root={default_data}", f"data.tokens_root={root / 'tokens'}",
        f"codec_dir={codec_dir / 'export'}", f"hydra.run.dir={root / 'lm'}", "trainer.max_steps=4",
        "lm.training.warmup_steps=1", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "data.loader.num_workers=0", "data.loader.batch_size=2",
        "data.tokens.window_frames=60", "samples.seconds=1", "trainer.log_every_n_steps=1")
    return root / "lm"


def test_lm_run_logs_losses_and_generated_samples_at_each_validation(lm_run):
    events = EventAccumulator(str(lm_run / "tensorboard"), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/ce_q0", "val/acc_q3"} <= set(tags["scalars"])
    assert [event.step for event in events.Audio("samples/1")] == [2, 4]  # validations at batches 2 and 4
    assert "samples/1_mel" in tags["images"]
    assert (lm_run / "export" / "lm.safetensors").is_file() and (lm_run / "config.yaml").is_file()


def generate(lm_run, out_dir, *overrides):
    return run("generate.py", f"checkpoint={lm_run}", f"out_dir={out_dir}", "duration=1.0", *overrides)


def test_generation_writes_audio_pictures_and_parameters_reproducibly(lm_run, tmp_path):
    prompts = 'prompts=["a slow Bach chorale on church organ", "a fast folk reel on violin"]'
    generate(lm_run, tmp_path / "first", prompts, "seed=3")
    generate(lm_run, tmp_path / "again", prompts, "seed=3")
    generate(lm_run, tmp_path / "other_seed", prompts, "seed=4")
    parameters = json.loads((tmp_path / "first" / "generation.json").read_text())
    assert parameters["seed"] == 3 and parameters["cfg_coef"] == 3.0
    assert parameters["checkpoint"] == str(lm_run.resolve())
    assert list(parameters["prompts"].values())[1] == "a fast folk reel on violin"
    for name in ("000", "001"):
        audio, sample_rate = soundfile.read(tmp_path / "first" / f"{name}.wav")
        assert sample_rate == 24000 and len(audio) == 24000  # 1 s = 75 frames of the tiny codec's 320 samples
        assert (tmp_path / "first" / f"{name}.png").stat().st_size > 1000
        same = (tmp_path / "again" / f"{name}.wav").read_bytes()
        assert same == (tmp_path / "first" / f"{name}.wav").read_bytes()
        assert same != (tmp_path / "other_seed" / f"{name}.wav").read_bytes()


def test_continuation_keeps_the_audio_prompt_codes(lm_run, default_data, tmp_path):
    clip = next((default_data / "test").glob("*.wav"))
    generate(lm_run, tmp_path / "continued", 'prompts=["a chorale"]', f"continuation={clip}", "duration=6.0")
    codes = np.load(tmp_path / "continued" / "000.npy")  # [K, T]
    codec = Codec.load(lm_run.parent / "codec" / "export")
    wav, _ = soundfile.read(clip, dtype="float32")
    with torch.inference_mode():
        clip_codes = codec.encode(torch.from_numpy(wav)[None, None])[0].numpy()  # [K, 4 s of frames]
    assert codes.shape == (codec.num_codebooks, 450) and clip_codes.shape == (codec.num_codebooks, 300)
    assert (codes[:, :300] == clip_codes).all()  # the 4 s prompt verbatim, then 2 s the LM wrote


@pytest.mark.parametrize("overrides, message", [
    (["checkpoint=/does/not/exist", "prompts=[x]"], "is not an LM export"),
    ([], "no prompts"),
    (["prompts=[x]", "top_p=1.5"], "top_p must be in [0, 1]"),
    (["prompts=[x]", "temperature=-1"], "temperature must be >= 0"),
    (["prompts=[x]", "duration=0"], "duration must be > 0"),
    (["prompts=[x]", "melody=/etc/hostname"], "cannot read audio file /etc/hostname"),
])
def test_bad_input_is_one_line_and_writes_nothing(lm_run, tmp_path, overrides, message):
    result = run("generate.py", f"checkpoint={lm_run}", f"out_dir={tmp_path / 'out'}", *overrides, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
