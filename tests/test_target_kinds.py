"""The target kind is one seam (issue 23): one protocol, one class per kind, one registry on each
side (tasks / models), and no branch on the kind's name anywhere else."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.models.registry import MODEL_KINDS
from ulmfit_ml.tasks.base import TargetSpec
from ulmfit_ml.tasks.multilabel import MultiLabelSpec
from ulmfit_ml.tasks.registry import TARGET_KINDS, TASKS, target_spec_from_dict

PKG = Path(__file__).resolve().parents[1] / "ulmfit_ml"


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"text": [f"text number {i} {'good' if i % 2 else 'bad'}" for i in range(n)],
                         "a": rng.integers(0, 2, n), "b": (np.arange(n) % 2), "cat": np.where(np.arange(n) % 3, "x", "y"),
                         "score": rng.normal(size=n)})


@pytest.mark.parametrize("kwargs, task", [(dict(label_cols=["a", "b"]), "multilabel"),
                                          (dict(category_cols=["cat"]), "multicategory"),
                                          (dict(target_cols=["score"]), "regression")])
def test_every_kind_is_one_registered_spec_that_data_delegates_to(kwargs, task):
    data = um.MultiLabelData.from_df(_frame(), **kwargs)
    assert data.task == task and type(data.spec) is TARGET_KINDS[task]
    assert isinstance(data.spec, TargetSpec)  # the protocol's methods are all there
    assert data.n_out == data.spec.n_out and data.spec.describe() in repr(data)
    rebuilt = target_spec_from_dict(data.spec.to_dict(), task=task)
    assert type(rebuilt) is type(data.spec) and rebuilt.to_dict() == data.spec.to_dict()


def test_the_two_registries_name_the_same_kinds_and_each_class_its_own():
    assert set(TARGET_KINDS) == set(MODEL_KINDS) == set(TASKS)
    for task in TASKS:
        assert TARGET_KINDS[task].task == task and MODEL_KINDS[task].task == task


def test_a_multilabel_spec_fitted_on_a_frame_knows_its_labels():
    df = pd.DataFrame({"text": ["a", "b", "c"], "tags": ["x;y", "y", ""]})
    spec, y, names, kept = MultiLabelSpec(label_col="tags").fit_frame(
        df, labels=None, config=um.DataConfig(label_col="tags"))
    assert names == ["x", "y"] and spec.labels == names and spec.n_out == 2 and len(kept) == 3
    assert spec.counts(y, y[:0]).loc["y", "train"] == 2
    assert target_spec_from_dict({"label_cols": None, "label_col": "tags", "label_delim": ";"},
                                 task="multilabel").columns == ["tags"]


def test_unknown_or_malformed_saved_kinds_are_refused():
    with pytest.raises(ValueError, match="Not a saved target spec"):
        target_spec_from_dict({"task": "ranking", "columns": ["a"]})
    with pytest.raises(ValueError, match="Invalid saved target spec"):
        target_spec_from_dict({"task": "regression", "columns": ["a"]})


def _kind_branches(path: Path, root: Path = PKG) -> list[str]:
    """``x.task == "..."`` / ``task != "..."`` / ``task in (...)`` comparisons in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            names = [n for n in [node.left, *node.comparators]
                     if (isinstance(n, ast.Attribute) and n.attr == "task") or (isinstance(n, ast.Name) and n.id == "task")]
            literal = any((isinstance(n, ast.Constant) and isinstance(n.value, str)) or isinstance(n, (ast.Tuple, ast.List, ast.Set))
                          for n in [node.left, *node.comparators])
            if names and literal:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_branch_on_the_kind_name_outside_the_seam():
    """Data, training, models and runs call the spec's (or the model class's) methods instead."""
    found = [b for p in sorted(PKG.rglob("*.py")) if "pretrained" not in p.parts for b in _kind_branches(p)]
    assert not found, "branches on task == ...: " + ", ".join(found)


def test_the_branch_finder_finds_the_branches_the_seam_removed(tmp_path):
    src = tmp_path / "old.py"
    src.write_text('if data.task == "multilabel":\n    pass\nif task in ("a", "b"):\n    pass\nif task is None:\n    pass\n')
    assert _kind_branches(src, tmp_path) == ["old.py:1", "old.py:3"]
