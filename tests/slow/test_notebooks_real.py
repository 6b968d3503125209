"""Both notebooks on the embedded real SmolLM2 model with their default small settings (minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "_nb_helpers", Path(__file__).resolve().parents[1] / "integration" / "test_notebooks.py"
)
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
execute_notebook, _outputs = _helpers.execute_notebook, _helpers._outputs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["01_lost_components", "02_restoration"])
def test_notebook_runs_on_real_model(name, tmp_path):
    nb = execute_notebook(name, tmp_path, {"LCC_NOTEBOOK_TINY": "0"}, timeout=3600)
    outs = _outputs(nb)
    assert not [o for o in outs if o.get("output_type") == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outs)
    assert list((tmp_path / "runs" / "notebooks" / name).glob("*.html"))
