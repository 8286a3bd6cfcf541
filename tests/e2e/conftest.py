"""Fixtures for the end-to-end tests: a tiny rendered dataset and helpers that run the entry points."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
missing = [name for name in ("music21", "tinysoundfont") if importlib.util.find_spec(name) is None]
needs_default_data = [
    pytest.mark.skipif(bool(missing), reason=f"the default-data build needs pip packages {missing}"),
    pytest.mark.skipif(not SOUNDFONT.is_file(), reason=f"{SOUNDFONT} missing (apt-get install timgm6mb-soundfont)"),
]
# One thread per process: reproducible float sums, and the two pytest workers share 2 cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python *args` from the repository root, as a user would."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def default_data(tmp_path_factory) -> Path:
    """Three pieces of the embedded default dataset, one 4 s clip each (train / valid / test)."""
    from data.build_default import build_default, load_build_config

    root = tmp_path_factory.mktemp("e2e") / "data"
    build_default(load_build_config(out=str(root), minutes=0.2, clip_seconds=4.0, min_clip_seconds=2.0,
                                    max_clips_per_piece=1, workers=1))
    return root


def codec_overrides(data_root: Path, run_dir: Path, max_steps: int) -> list[str]:
    """A CPU-cheap codec run of the demo experiment on `data_root`."""
    return [
        "stage=codec", "experiment=demo", f"data.root={data_root}", f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={max_steps}", "checkpoint_every_n_steps=2", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "data.loader.num_workers=0",
        "data.loader.batch_size=2", "data.segment.segment_seconds=0.25", "codec_loss.adversarial_start_step=2",
    ]
