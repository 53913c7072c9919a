"""The layout rules of README "Architecture", checked on the source: imports run one way
(import-linter's layers contract in pyproject.toml), at the top of each module, nothing private
imported across modules, and modules of a few hundred lines."""
from __future__ import annotations

import ast
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


def test_layers_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


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


def test_the_contract_catches_a_back_edge(tmp_path):
    """The checker above can fail: a copy of the package with one upward import breaks it."""
    pytest.importorskip("importlinter")
    copy = tmp_path / "ulmfit_ml"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("pretrained", "__pycache__"))
    (copy / "validation.py").write_text((copy / "validation.py").read_text(encoding="utf-8")
                                        + "\nfrom .model import MultiLabelClassifier  # noqa: E402 back edge\n",
                                        encoding="utf-8")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    r = subprocess.run([exe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})
    assert r.returncode != 0 and "BROKEN" in r.stdout.upper(), r.stdout[-2000:] + r.stderr[-2000:]


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
