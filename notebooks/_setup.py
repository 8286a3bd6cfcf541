"""What the first cell of every notebook here imports: the repository root on sys.path (the notebooks run from
notebooks/), the folder each notebook writes the numbers it showed to, and the project's config.

It imports builders, which imports eval/plots.py, which selects matplotlib's file-only Agg backend: each notebook's
`%matplotlib inline` comes after this import to switch back.
"""
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import builders  # noqa: E402, F401
from hydra import compose, initialize_config_dir  # noqa: E402

# tests/notebooks sets this and checks <notebook>.json there
RESULTS = Path(os.environ.get("CODECLM_NOTEBOOK_RESULTS") or tempfile.mkdtemp())
RESULTS.mkdir(parents=True, exist_ok=True)


def load_config(overrides: list[str]):
    """The project's root config with command-line style overrides, as train.py composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)
