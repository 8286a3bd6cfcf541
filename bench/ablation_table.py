"""A Hydra sweep -> one markdown table: what each run changed, its final validation metrics, steps and wall time.

    python train.py -m experiment=ablation_patterns stage=lm
    python -m bench.ablation_table multirun/ablation_patterns/<date_time> --out multirun/ablation_patterns/<date_time>/table.md

A run is any sub-directory holding `.hydra/overrides.yaml` (Hydra writes it for every job of a multirun). Columns:
the overrides whose values are not the same in every run, the last value of every `val/*` scalar in the run's
TensorBoard events (`tensorboard/`), the last step any scalar was logged at (Lightning's logging step, which counts
training batches: the codec GAN's two optimizer steps per batch count once), and the wall time from the first to
the last event (what comes before the first logged step, model building and data loading, is not in it).
Prints the table; with --out also writes it. The last line printed is the table as JSON, one object per run.
"""
import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

MISSING = "-"  # a cell of a run that lacks the override or never logged the metric


@dataclass
class Run:
    name: str                     # the run's directory name (the Hydra job number)
    overrides: dict[str, str]     # key -> value, as given on the command line or by hydra.sweeper.params
    metrics: dict[str, float]     # val/* tag -> its last logged value
    step: int | None              # last logged step, None without events
    wall_seconds: float | None    # last minus first event wall time, None without events


def read_run(directory: Path) -> Run:
    """One job directory of a multirun -> its overrides and the summary of its TensorBoard scalars."""
    overrides = dict(item.split("=", 1) for item in yaml.safe_load((directory / ".hydra" / "overrides.yaml").read_text()))
    scalars = {}
    if (directory / "tensorboard").is_dir():  # absent when the job failed before training started
        events = EventAccumulator(str(directory / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every point
        events.Reload()
        scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    points = [point for series in scalars.values() for point in series]
    if not points:
        return Run(directory.name, overrides, metrics={}, step=None, wall_seconds=None)
    metrics = {tag: max(series, key=lambda point: point.step).value  # by step: a resumed run re-logs a few steps
               for tag, series in scalars.items() if tag.startswith("val/")}
    wall_times = [point.wall_time for point in points]
    return Run(directory.name, overrides, metrics, step=max(point.step for point in points),
               wall_seconds=max(wall_times) - min(wall_times))


def read_sweep(sweep_dir: Path) -> list[Run]:
    """Every job directory of `sweep_dir`, in job order."""
    directories = [path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")]
    if not directories:
        raise FileNotFoundError(f"sweep_dir {sweep_dir} holds no run (no */.hydra/overrides.yaml): pass the directory "
                                f"that `train.py -m` printed, e.g. multirun/ablation_patterns/<date_time>")
    return [read_run(directory) for directory in sorted(directories, key=job_number)]


def job_number(directory: Path) -> tuple[float, str]:
    """Sort key: the job number Hydra puts first in a run directory's name ("2", "2_lm.pattern.kind=valle")."""
    number = re.match(r"\d+", directory.name)
    return (int(number.group()) if number else math.inf), directory.name


def varying_overrides(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (or that some runs lack), in first-seen order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def markdown_table(runs: list[Run]) -> str:
    keys = varying_overrides(runs)
    metrics = sorted({tag for run in runs for tag in run.metrics})
    header = ["run", *keys, *metrics, "last step", "wall time (s)"]
    rows = []
    for run in runs:
        rows.append([
            run.name,
            *(run.overrides.get(key, MISSING) for key in keys),
            *(f"{run.metrics[tag]:.4g}" if tag in run.metrics else MISSING for tag in metrics),
            MISSING if run.step is None else str(run.step),
            MISSING if run.wall_seconds is None else f"{run.wall_seconds:.0f}",
        ])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (the one holding 0/, 1/, ...)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args = parser.parse_args()
    try:
        runs = read_sweep(args.sweep_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    table = markdown_table(runs)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    print(json.dumps([{"run": run.name, **run.overrides, **run.metrics, "last_step": run.step,
                       "wall_seconds": run.wall_seconds} for run in runs]))


if __name__ == "__main__":
    main()
