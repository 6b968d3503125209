"""The public API: lazy, complete, visible to editors, and no name that a submodule import can shadow."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lcc_lens

PACKAGE_DIR = Path(lcc_lens.__file__).parent


def _packages() -> list[str]:
    """lcc_lens and every subpackage (directories with an __init__.py)."""
    found = ["lcc_lens"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="lcc_lens."):
        if info.ispkg:
            found.append(info.name)
    return found


def _submodules(package: str) -> set[str]:
    path = PACKAGE_DIR.joinpath(*package.split(".")[1:])
    return {info.name for info in pkgutil.iter_modules([str(path)])}


def test_import_is_light():
    code = "import sys, lcc_lens; print(json.dumps(sorted(m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_every_public_name_resolves_and_is_listed():
    public = set(lcc_lens.__all__) - {"__version__"}
    assert public == set(lcc_lens._LAZY)
    assert public <= set(dir(lcc_lens))
    for name in sorted(public):
        assert getattr(lcc_lens, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lcc_lens.nope  # noqa: B018


def test_type_checking_block_declares_every_public_name():
    """Editors see the lazy names through the TYPE_CHECKING imports."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    declared = {
        alias.asname or alias.name
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert declared == set(lcc_lens.__all__) - {"__version__"}


@pytest.mark.parametrize("package", _packages())
def test_no_exported_name_equals_a_submodule(package):
    """`pkg.x` must not be a function in one import order and the module pkg/x.py in another."""
    module = importlib.import_module(package)
    exported = set(getattr(module, "__all__", ()))
    clash = sorted(exported & _submodules(package))
    assert clash == [], f"{package} exports names equal to its submodules: {clash}"


def test_public_names_are_the_same_objects_in_every_import_order():
    """Resolve every public name, import every submodule, resolve again: nothing was shadowed."""
    code = """
import importlib, json, pkgutil, sys
import lcc_lens
before = {n: id(getattr(lcc_lens, n)) for n in lcc_lens.__all__}
failed = []
for info in pkgutil.walk_packages(lcc_lens.__path__, prefix="lcc_lens."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {exc!r}")
after = {n: id(getattr(lcc_lens, n)) for n in lcc_lens.__all__}
changed = sorted(n for n in before if before[n] != after[n])
fit_ok = lcc_lens.fit is sys.modules["lcc_lens.fit"] and callable(lcc_lens.fit.fit)
print(json.dumps({"changed": changed, "failed": failed, "fit_ok": fit_ok}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == []
    assert result["changed"] == []
    assert result["fit_ok"], "lcc_lens.fit must be the package and lcc_lens.fit.fit the function"


def test_every_package_data_pattern_matches_a_file():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]
    for package, globs in patterns.items():
        root = PACKAGE_DIR.parent.joinpath(*package.split("."))
        for pattern in globs:
            assert list(root.glob(pattern)), f"package-data {package}:{pattern} matches no file"


def test_annotations_are_checked_under_the_test_suite():
    """pyproject's jaxtyping hook checks lcc_lens's annotations (shapes too) while the tests run."""
    import torch
    from jaxtyping import TypeCheckError

    from lcc_lens.components import lost_components
    from lcc_lens.diff import DiffConfig
    from lcc_lens.errors import ConfigError

    with pytest.raises(TypeCheckError, match="dz"):
        lost_components(torch.randn(3, 4, 5))  # rank 3 where [n_layers n_heads n_samples d_head]
    with pytest.raises(TypeCheckError):
        lost_components(torch.zeros(1, 2, 3, 4, dtype=torch.long))  # not a float tensor
    # a config validates itself: the user-facing ConfigError, not a type error, reaches the caller
    with pytest.raises(ConfigError, match="positions"):
        DiffConfig(positions="first")  # type: ignore[arg-type]


def test_readme_library_example_runs_on_a_tiny_model(llama_pair_dirs, tmp_path):
    """The README's library example, verbatim but for the model, the data and step counts, the output."""
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    section = readme[readme.index("## Library") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    for old, new in (
        ('"embedded"', repr(str(llama_pair_dirs[0]))),
        ("steps=48", "steps=2"),
        ("lcc.DataConfig()", "lcc.DataConfig(n_train=32, n_diff_prompts=16, n_probe=16)"),
        ('"restored/"', repr(str(tmp_path / "restored"))),
    ):
        assert old in code, f"the README example no longer contains {old}"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    comp = scope["comp"]
    assert comp.n_selected > 0 and float(comp.z_offsets().abs().sum()) > 0  # trained, not zero
    assert (tmp_path / "restored" / "compensation.safetensors").is_file()
