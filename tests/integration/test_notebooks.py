"""Both notebooks execute top to bottom (nbclient, the venv's own Python kernel) on a tiny model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute_notebook(
    name: str, tmp_path: Path, env: dict[str, str], timeout: int
) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` in ``tmp_path`` with a kernelspec pointing at sys.executable."""
    kernels = tmp_path / "jupyter" / "kernels" / "lcc-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lcc_lens test",
                "language": "python",
            }
        )
    )
    old = {k: os.environ.get(k) for k in [*env, "JUPYTER_PATH", "PYTHONPATH"]}
    os.environ.update(env)
    os.environ["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    os.environ["PYTHONPATH"] = str(NOTEBOOKS.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="lcc-test",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_notebooks_are_stripped():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        ("01_lost_components", ["lost_components", "spectra"]),
        (
            "02_restoration",
            [
                "training_curves",
                "perplexity",
                "selection",
                "restoration",
                "restoration_ranking",
                "logit_lens",
                "logit_gain",
            ],
        ),
    ],
)
def test_notebook_runs_on_tiny_model(name, figures, tmp_path, tmp_path_factory):
    # shared between the two notebooks: the tiny tokenizer is built once
    cache = tmp_path_factory.getbasetemp() / "notebook-cache"
    env = {"LCC_NOTEBOOK_TINY": "1", "LCC_LENS_CACHE": str(cache)}
    nb = execute_notebook(name, tmp_path, env, timeout=600)
    outs = _outputs(nb)
    assert not [o for o in outs if o.get("output_type") == "error"]
    plotly_outs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plotly_outs) == len(figures)
    out_dir = tmp_path / "runs" / "notebooks" / name
    for fig in figures:
        assert (out_dir / f"{fig}.html").stat().st_size > 1_000_000
