"""bench.ablation_table on a fake multirun directory with real TensorBoard event files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from bench.ablation_table import markdown_table, read_sweep

REPO = Path(__file__).resolve().parents[2]
START = 1_700_000_000.0  # wall time of the first event of every run


def write_run(directory: Path, overrides: list[str], scalars: dict[str, list[tuple[int, float]]],
              seconds_per_step: float) -> None:
    """A job directory as train.py leaves it: .hydra/overrides.yaml and tensorboard/events.*"""
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if not scalars:
        return  # the job failed before Lightning created its logger
    writer = SummaryWriter(str(directory / "tensorboard"))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, global_step=step, walltime=START + seconds_per_step * step)
    writer.close()


@pytest.fixture
def sweep(tmp_path) -> Path:
    common = ["stage=lm", "trainer.max_steps=300"]
    write_run(tmp_path / "0", [*common, "lm.pattern.kind=delay"], seconds_per_step=0.5, scalars={
        "train/loss": [(0, 7.0), (100, 5.0), (300, 4.0)],
        "val/loss": [(100, 5.5), (300, 4.25)],
        "val/acc_q0": [(100, 0.1), (300, 0.123456)],
    })
    write_run(tmp_path / "2", [*common, "lm.pattern.kind=parallel", "lm.training.lr=0.01"], seconds_per_step=2.0,
              scalars={"train/loss": [(0, 7.0), (200, 6.0)], "val/loss": [(200, 5.0), (100, 6.0)]})
    write_run(tmp_path / "10_lm.pattern.kind=valle", [*common, "lm.pattern.kind=valle"], seconds_per_step=1.0, scalars={})  # failed early
    return tmp_path


def table_cells(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    assert lines[1].startswith("|---|")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in [lines[0], *lines[2:]]]


def test_table_has_varying_overrides_last_validation_values_steps_and_wall_time(sweep):
    header, *rows = table_cells(markdown_table(read_sweep(sweep)))
    # stage and max_steps are the same everywhere: not columns; lr is set in one run only: a column
    assert header == ["run", "lm.pattern.kind", "lm.training.lr", "val/acc_q0", "val/loss", "last step", "wall time (s)"]
    assert rows == [
        ["0", "delay", "-", "0.1235", "4.25", "300", "150"],     # 300 steps x 0.5 s
        ["2", "parallel", "0.01", "-", "5", "200", "400"],       # val/loss of the latest step, not the latest write
        ["10_lm.pattern.kind=valle", "valle", "-", "-", "-", "-", "-"],  # numeric job order: 10 after 2
    ]


def test_command_line_writes_the_table_and_prints_json(sweep, tmp_path):
    out = tmp_path / "docs" / "table.md"
    result = subprocess.run([sys.executable, "-m", "bench.ablation_table", str(sweep), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, check=True)
    assert out.read_text() == markdown_table(read_sweep(sweep))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [run["lm.pattern.kind"] for run in summary] == ["delay", "parallel", "valle"]
    assert summary[0]["val/loss"] == pytest.approx(4.25) and summary[1]["wall_seconds"] == pytest.approx(400)


def test_a_directory_without_runs_is_refused_with_a_hint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.ablation_table", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "holds no run" in result.stderr and "multirun/" in result.stderr
