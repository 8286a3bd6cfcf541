"""Runs each notebook (notebooks/<name>.py, a jupytext percent script) top to bottom in a kernel of this
interpreter and checks the numbers it reports.

Every notebook ends by writing its results to $CODECLM_NOTEBOOK_RESULTS/<name>.json; the assertions below are
about what the notebook shows (mel distance per codebook count, layout sizes, guidance sharpening), not only that
it ran. The executed copies in docs/notebooks/ (`make notebooks`) must hold the cells of the current sources.
"""
import json
import math
import sys
from pathlib import Path

import nbformat
import pytest

from notebooks.execute import EXECUTED, NAMES, execute, read

MAX_EXECUTED_BYTES = 2_000_000  # figures as PNG: a few hundred kB a notebook


def run_notebook(name: str, results: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("CODECLM_NOTEBOOK_RESULTS", str(results))
    execute(name)
    summary = json.loads((results / f"{name}.json").read_text())
    assert summary["python_prefix"] == sys.prefix, "the notebook ran in another Python than the tests"
    return summary


@pytest.mark.parametrize("name", NAMES)
def test_executed_copy_is_current(name):
    """Cheap: the cells' sources, not their outputs; `make notebooks` rewrites the copy after a change."""
    path = EXECUTED / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing: run `make notebooks`"
    executed = nbformat.read(path, as_version=4)
    source = read(name)
    assert [(cell.cell_type, cell.source) for cell in executed.cells] == \
        [(cell.cell_type, cell.source) for cell in source.cells], f"{path} is stale: run `make notebooks`"
    assert all(cell.execution_count for cell in executed.cells if cell.cell_type == "code"), f"{path} was not run"
    assert path.stat().st_size < MAX_EXECUTED_BYTES, f"{path}: {path.stat().st_size:,} bytes"


def test_codec_internals(tmp_path, monkeypatch):
    summary = run_notebook("codec_internals", tmp_path, monkeypatch)
    assert summary["train_loss_last"] < 0.5 * summary["train_loss_first"]
    latent_error = summary["latent_error_per_k"]
    assert all(finer < coarser for coarser, finer in zip(latent_error, latent_error[1:])), latent_error
    quantization_mel = summary["quantization_mel_per_k"]  # to the decode of the unquantized latent
    assert all(finer < coarser for coarser, finer in zip(quantization_mel, quantization_mel[1:])), quantization_mel
    mel = summary["mel_per_k"]  # to the input: a trained codec, far closer than silence at every depth
    assert max(mel) < 0.5 * summary["silence_mel"], (mel, summary["silence_mel"])
    bits = math.log2(summary["cardinality"])
    assert all(0 < entropy <= bits for entropy in summary["usage_entropy_bits"])


def test_patterns(tmp_path, monkeypatch):
    summary = run_notebook("patterns", tmp_path, monkeypatch)
    K, T = summary["num_codebooks"], summary["frames"]
    assert summary["layout_shapes"] == {"delay": [K, T + K], "parallel": [K, T + 1], "unroll": [K, K * T + 1],
                                        "valle": [K, 2 * T + 1], "musiclm": [K, K * T + 1]}
    assert all(summary["round_trip"].values()), summary["round_trip"]
    # Delay with delays 0..K-1: step s samples the codebooks whose frame s - 1 - q exists.
    assert summary["delay_samples_per_step"] == [0, 1, 2, 3, 4, 4, 4, 3, 2, 1]
    # Stopping 1, 2, 3 steps early loses 1, 1 + 2, 1 + 2 + 3 frames of the delayed codebooks.
    assert summary["delay_invalid_after_steps"] == {str(T + K - 1): 1, str(T + K - 2): 3, str(T + K - 3): 6}
    assert summary["generated_shape"] == [2, K, T] and summary["generated_in_range"]
    assert summary["generated_decode_steps"] == T + K - 1
    assert summary["figure_size_px"][:2] == [800, 960]  # 12 x 10 inches at 80 dpi: all five layouts drawn


def test_lm_internals(tmp_path, monkeypatch):
    summary = run_notebook("lm_internals", tmp_path, monkeypatch)
    assert summary["train_loss_last"] < 0.3, summary["train_loss_last"]
    assert summary["attention_rebuild_error"] < 1e-4
    assert summary["causal_mass_above_diagonal"] == 0
    assert all(abs(total - 1) < 1e-5 for total in summary["cross_attention_row_sums"])
    entropy = summary["token_entropy_bits"]  # [K][T]
    assert entropy[0][0] > 3 and max(entropy[0][1:]) < 1, entropy[0]  # only the start of the line is unknown
    cfg_entropy = dict(zip(summary["cfg_coefs"], summary["cfg_entropy_bits"]))
    assert cfg_entropy[0.0] > cfg_entropy[1.0] > cfg_entropy[2.0] > cfg_entropy[3.0] > cfg_entropy[5.0], cfg_entropy
    mass = summary["cfg_mass_on_condition"]
    assert all(later >= earlier for earlier, later in zip(mass, mass[1:])) and mass[-1] > 0.99, mass
    sweep = {(row["temperature"], row["top_k"]): row for row in summary["sampling_sweep"]}
    assert sweep[(0.0, 0)]["distinct"] == 1
    assert sweep[(1.0, 2)]["distinct"] <= 2 and sweep[(1.0, 8)]["distinct"] <= 8
    assert sweep[(0.5, 0)]["entropy_bits"] < sweep[(1.0, 0)]["entropy_bits"] < sweep[(2.0, 0)]["entropy_bits"]


def test_pretrained_internals(tmp_path, monkeypatch):
    monkeypatch.delenv("CODECLM_CHECKPOINT", raising=False)  # CI: the tiny random HF MusicGen, converted
    summary = run_notebook("pretrained_internals", tmp_path, monkeypatch)
    B, K, T = summary["codes_shape"]
    assert (B, K) == (2, 4) and summary["codes_in_range"]
    assert summary["audio_samples"] == summary["expected_samples"]
    bits = math.log2(summary["cardinality"])
    assert all(0 < entropy < bits for entropy in summary["mean_entropy_bits"]), summary["mean_entropy_bits"]
    assert all(0 < entropy <= bits for entropy in summary["usage_entropy_bits"])
    assert all(abs(total - 1) < 1e-5 for total in summary["cross_attention_row_sums"])
    # HF semantics: the shorter caption's padding is masked out, so it receives no attention at all.
    assert summary["cross_attention_mask"] and max(summary["padded_positions"]) > 0
    assert summary["padding_mass"] == [0.0, 0.0]
