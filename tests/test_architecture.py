"""The layout rules of README "Architecture", checked on the source: every module in one of the
folders, imports running one way between the folders and between the modules (import-linter's two
layers contracts in pyproject.toml), at the top of each module, nothing private imported across
modules, and modules of a few hundred lines."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ulmfit_ml"
MODULES = sorted(p for p in PKG.rglob("*.py") if "pretrained" not in p.parts)
MAX_LINES = 450


def _internal_imports(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("ulmfit_ml")):
            yield node
        elif isinstance(node, ast.Import) and any(a.name.startswith("ulmfit_ml") for a in node.names):
            yield node


FOLDERS = ["cli", "experiments", "training", "inference", "models", "evaluation", "data", "tasks", "utils"]


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_layers_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0 and "2 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_every_module_lives_in_a_folder_of_the_folder_contract():
    """No flat module beside the folders (the package's own ``__init__`` / ``__main__`` aside), and
    the folder contract names exactly the folders there are."""
    entry_points = ("__init__.py", "__main__.py", "demo.py")  # demo.py: `python -m ulmfit_ml.demo`, the README's command
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in entry_points)
    assert not flat, f"modules outside the folders: {flat}"
    assert len((PKG / "demo.py").read_text(encoding="utf-8").splitlines()) < 12, "demo.py only runs experiments.demo"
    folders = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(FOLDERS)
    contract = ROOT.joinpath("pyproject.toml").read_text(encoding="utf-8").split("[[tool.importlinter.contracts]]")[1]
    assert sorted(set(re.findall(r"ulmfit_ml\.(\w+)", contract))) == sorted(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_folders_say_what_they_hold_and_import_nothing(folder):
    """Each folder's ``__init__`` is a docstring only: modules are imported by their full path, so
    importing one folder never drags in another (and the lazy ``import ulmfit_ml`` stays cheap)."""
    tree = ast.parse((PKG / folder / "__init__.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{folder}/__init__.py needs a docstring saying what the folder holds"
    if folder != "cli":
        assert [type(n).__name__ for n in tree.body] == ["Expr"], f"{folder}/__init__.py should hold only its docstring"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_package_imports_are_at_module_top_and_public(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    for node in _internal_imports(tree):
        assert id(node) in top, f"{path.name}:{node.lineno}: package-internal import inside a function or block"
        if isinstance(node, ast.ImportFrom):
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            assert not private, f"{path.name}:{node.lineno}: private name(s) {private} imported across modules"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_stay_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines (> {MAX_LINES}): split it along the layers"


def _contracts_with_one_more_import(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package where ``module`` (a path under ulmfit_ml/) gets ``line``."""
    pytest.importorskip("importlinter")
    copy = tmp_path / "ulmfit_ml"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("pretrained", "__pycache__"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa: E402 back edge\n", encoding="utf-8")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return _lint_imports(tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})


def test_the_folder_contract_catches_a_back_edge(tmp_path):
    """The checker above can fail: utils importing a model breaks the folder contract."""
    r = _contracts_with_one_more_import(tmp_path, "utils/validation.py",
                                        "from ..models.classifier import MultiLabelClassifier")
    assert r.returncode != 0 and "ulmfit_ml folders: imports run one way, downward BROKEN" in r.stdout, r.stdout[-2000:]


def test_the_module_contract_catches_a_back_edge_inside_a_folder(tmp_path):
    """... and so can the module contract: inside utils, the atomic writer importing table I/O
    (which is built on it) breaks the module order while the folders stay in order."""
    r = _contracts_with_one_more_import(tmp_path, "utils/persist.py", "from .io import read_table")
    assert r.returncode != 0, r.stdout[-2000:]
    assert "ulmfit_ml modules: imports run one way, downward BROKEN" in r.stdout, r.stdout[-2000:]
    assert "ulmfit_ml folders: imports run one way, downward KEPT" in r.stdout, r.stdout[-2000:]


MAX_FUNCTION_LINES = 60
LONG_REASON = "# long function:"


def _long_functions(path: Path) -> list[str]:
    """``file:line name (n lines)`` for each function or method over MAX_FUNCTION_LINES lines
    whose ``def`` (or first decorator) is not right under a ``# long function: <reason>`` line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2].strip() if first >= 2 else ""
        if n > MAX_FUNCTION_LINES and not (above.startswith(LONG_REASON) and above[len(LONG_REASON):].strip()):
            found.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_over_60_lines_without_a_reason():
    """fastai's text modules keep functions to about a screen (issue 23): split a longer one into
    named helpers, or put ``# long function: <reason>`` on the line right above its ``def``."""
    long = [f for path in MODULES for f in _long_functions(path)]
    assert not long, (f"{len(long)} function(s) over {MAX_FUNCTION_LINES} lines; split them or add a "
                      f"'{LONG_REASON} <reason>' line above the def:\n" + "\n".join(long))
