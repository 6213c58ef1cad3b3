"""
The notebooks are tests: each runs headless in a Jupyter kernel, as it is, in quick mode, from the repository's
top folder and from lessons/ (where Jupyter starts it), and must run to its end. The one change is the one a
student makes: QUICK = True in its settings cell. A notebook whose model cannot be loaded says so in one line,
naming the settings cell, and raises no SystemExit.
"""

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, require

NOTEBOOKS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
FOLDERS = {"from the top": ROOT, "from lessons/": ROOT / "lessons"}


def execute(notebook, folder, settings=("QUICK = False", "QUICK = True")):
    """Run every cell in a fresh kernel started in `folder`: None, or the failing cell and its error output."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cells = nbformat.read(notebook, as_version=4)
    settings_cell = next(cell for cell in cells.cells if cell.cell_type == "code")
    old, new = settings
    assert settings_cell.source.count(old) == 1, f"{notebook.name}'s settings cell has no line {old!r}"
    settings_cell.source = settings_cell.source.replace(old, new)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two kernels run at once, one on each of two cores
    client = NotebookClient(cells, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(env=env, stderr=subprocess.DEVNULL)  # the kernel's own log: a warning about TCP
    except CellExecutionError:
        number, cell = next(
            (number, cell)
            for number, cell in enumerate(cells.cells, 1)
            if any(output.output_type == "error" for output in cell.get("outputs", []))
        )
        error = next(output for output in cell.outputs if output.output_type == "error")
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))  # without the terminal's colours
        return f"cell {number}:\n{cell.source}\n---\n{traceback[-3000:]}", cells
    return None, cells


@pytest.fixture(scope="module")
def notebook_runs(request):
    """Every notebook this session tests, from both folders, two kernels at a time, started when the first asks."""
    require("nbclient", "ipykernel", tokenizer=True)  # four lessons read text
    chosen = [item.callspec.params for item in request.session.items if item.originalname == "test_the_notebook_runs"]
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {
        (run["notebook"], run["where"]): pool.submit(execute, run["notebook"], FOLDERS[run["where"]]) for run in chosen
    }
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("where", FOLDERS)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_notebook_runs(notebook, where, notebook_runs):
    failure, _ = notebook_runs[notebook, where].result()
    assert failure is None, f"lessons/{notebook.name} {where}:\n{failure}"


def test_a_model_that_cannot_be_loaded_is_one_line_about_the_settings_cell(tmp_path, monkeypatch):
    require("nbclient", "ipykernel")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the download fails at once
    monkeypatch.setenv("LORAXS_MINI_CACHE", str(tmp_path / "empty-cache"))
    notebook = ROOT / "lessons" / "05_svd_and_loraxs.ipynb"
    failure, cells = execute(notebook, ROOT / "lessons", settings=('MODEL = "gpt2"', 'MODEL = "gpt2"'))
    assert failure is not None, "the notebook ran without its model"
    errors = [output for cell in cells.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "LoraxsError", errors
    (line,) = errors[0].traceback  # one line, not a traceback
    assert line.startswith("error: could not download") and "in the settings cell (the first code cell)" in line
    assert "SystemExit" not in failure
