"""Exact resume: a codec run killed with SIGKILL and resumed ends with the same weights as an uninterrupted run.

The codec stage is the hardest case: two optimizers stepped by hand, EMA codebooks, k-means init on the first
batch, a switch from reconstruction-only to GAN batches, per-step random segments.
"""
import os
import signal
import time

import pytest
from safetensors.torch import load_file

from tests.e2e.conftest import codec_overrides, needs_default_data, popen, run

pytestmark = needs_default_data
MAX_STEPS = 10  # optimizer steps: 2 reconstruction-only batches, then GAN batches (2 optimizer steps each)


def test_killed_run_resumes_to_the_same_weights(default_data, tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    run("train.py", *codec_overrides(default_data, uninterrupted, MAX_STEPS))

    process = popen("train.py", *codec_overrides(default_data, interrupted, MAX_STEPS))
    checkpoints = interrupted / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("epoch=*-step=*.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline, "no periodic checkpoint appeared"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (interrupted / "export").exists(), "the run finished before it was killed: nothing was tested"

    resumed = run("train.py", *codec_overrides(default_data, interrupted, MAX_STEPS), "resume=true")
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr

    expected = load_file(uninterrupted / "export" / "model.safetensors")
    actual = load_file(interrupted / "export" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert (expected[name] == actual[name]).all(), f"{name} differs after resume"


def test_resume_without_a_checkpoint_is_refused(default_data, tmp_path):
    result = run("train.py", *codec_overrides(default_data, tmp_path / "fresh", MAX_STEPS), "resume=true",
                 check=False)
    assert result.returncode == 1
    assert "resume=true but" in result.stderr and "holds no checkpoint" in result.stderr
