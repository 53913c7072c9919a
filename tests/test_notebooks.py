"""Execute every notebook in nbs/ top to bottom with tiny sizes (``ULMFIT_ML_NB_SMALL=1``).

Each notebook is read, executed in memory with nbclient (cwd = nbs/, the ``python3`` kernel
of the running interpreter) and never written back, so the committed outputs stay those of
the real run described in each notebook. Any cell error fails the test with the cell's
traceback.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import GOEMOTIONS, REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NBS = REPO / "nbs"
NOTEBOOKS = sorted(p.name for p in NBS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 600


def _goemotions_dir() -> Path:
    return Path(os.environ.get("GOEMOTIONS_DIR", GOEMOTIONS))


def test_every_required_notebook_is_there() -> None:
    assert NOTEBOOKS[:4] == [
        "01_quickstart_one_hot_columns.ipynb",
        "02_delimited_labels_goemotions.ipynb",
        "03_kaggle_style_cv_and_submission.ipynb",
        "04_interpretation.ipynb",
    ]


def test_committed_notebooks_hold_the_outputs_of_a_real_run() -> None:
    """Saved outputs come from a full (not SMALL) run, every code cell ran, none failed."""
    for name in NOTEBOOKS:
        nb = nbformat.read(NBS / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{name}: not executed before commit"
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}: saved outputs hold an error"
        first = "".join(o.get("text", "") for o in code[0].get("outputs", []))
        assert "SMALL=False" in first, f"{name}: saved outputs come from a SMALL (CI) run, not a real one"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    goemotions = _goemotions_dir()
    if name.startswith("02_") and not (goemotions / "train.tsv").is_file():
        pytest.skip(f"GoEmotions is not at {goemotions} (notebook 02 reads it from there; set GOEMOTIONS_DIR)")
    path = NBS / name
    on_disk = path.read_bytes()
    nb = nbformat.reads(on_disk.decode("utf-8"), as_version=4)
    assert any(c.cell_type == "code" and "ULMFIT_ML_NB_SMALL" in c.source for c in nb.cells), \
        f"{name} has no parameter cell reading ULMFIT_ML_NB_SMALL"
    # the kernel inherits this process's environment
    monkeypatch.setenv("ULMFIT_ML_NB_SMALL", "1")
    monkeypatch.setenv("GOEMOTIONS_DIR", str(goemotions))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Tiny models gain nothing from several torch threads, and on a shared CI runner several
    # spinning OpenMP threads per process can make small backward passes 10-100x slower.
    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NBS)}})
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    assert path.read_bytes() == on_disk, f"{name} was modified on disk by the test run"
