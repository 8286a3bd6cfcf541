"""Runs the notebooks of this folder top to bottom and writes the executed copies, outputs and figures included,
to docs/notebooks/<name>.ipynb, where a reader browsing the repository sees them:

    make notebooks                         # all of them
    python notebooks/execute.py patterns   # some

The notebooks are jupytext percent scripts (`# %%` cells): edit the .py here, then run this. Each runs in a kernel
of this interpreter with notebooks/ as its working directory, and writes the numbers it showed to
$CODECLM_NOTEBOOK_RESULTS/<name>.json (a temporary folder here); tests/notebooks/test_notebooks.py runs the same
`execute`, checks those numbers, and checks that docs/notebooks/ holds the cells of the current sources.
"""
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
EXECUTED = NOTEBOOKS.parent / "docs" / "notebooks"
# a notebook is a .py here that starts with a cell marker (no jupytext header); _setup.py and this file do not
NAMES = sorted(path.stem for path in NOTEBOOKS.glob("*.py") if path.read_text().startswith("# %%"))
CELL_TIMEOUT_S = 90


def read(name: str) -> nbformat.NotebookNode:
    """notebooks/<name>.py as a notebook, outputs empty."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py", fmt="py:percent")
    for index, cell in enumerate(notebook.cells):
        cell.id = f"{name}-{index}"  # stable ids: re-running an unchanged notebook changes no id
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    return notebook


def execute(name: str) -> nbformat.NotebookNode:
    """notebooks/<name>.py run top to bottom; it writes its numbers to $CODECLM_NOTEBOOK_RESULTS/<name>.json."""
    notebook = read(name)
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise SystemExit(f"no notebook named {', '.join(unknown)}; the notebooks are {', '.join(NAMES)}")
    EXECUTED.mkdir(parents=True, exist_ok=True)
    for name in names:
        with tempfile.TemporaryDirectory() as results:
            os.environ["CODECLM_NOTEBOOK_RESULTS"] = results  # the kernel inherits this process's environment
            notebook = execute(name)
        for cell in notebook.cells:  # warnings and progress bars name this machine's paths: not for the reader
            if cell.cell_type == "code":
                cell.outputs = [output for output in cell.outputs if output.get("name") != "stderr"]
        path = EXECUTED / f"{name}.ipynb"
        nbformat.write(notebook, path)
        print(f"{path}: {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main(sys.argv[1:] or NAMES)
