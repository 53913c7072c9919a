"""The one list of target kinds: ``task`` name -> the :class:`~ulmfit_ml.tasks.base.TargetSpec`
class that implements it. A new kind is one module in this folder and one line here (and its
model class in :mod:`ulmfit_ml.models.registry`)."""
from __future__ import annotations

from typing import Any

from .base import TargetSpec
from .multicategory import CategorySpec
from .multilabel import MultiLabelSpec
from .regression import RegressionSpec

__all__ = ["TARGET_KINDS", "TASKS", "spec_for_config", "target_spec_from_dict"]

#: ``config.json`` ``"task"`` -> its spec class
TARGET_KINDS: dict[str, type] = {"multilabel": MultiLabelSpec, "multicategory": CategorySpec,
                                 "regression": RegressionSpec}
#: The kinds of target a model can be trained for (``config.json`` ``"task"``).
TASKS = tuple(TARGET_KINDS)


def spec_for_config(c: Any) -> TargetSpec:
    """The unfitted spec of a :class:`~ulmfit_ml.utils.config.DataConfig`'s target columns."""
    options = {"multilabel": dict(label_cols=c.label_cols, label_col=c.label_col, label_delim=c.label_delim),
               "multicategory": dict(columns=c.category_cols, max_categories=c.max_categories),
               "regression": dict(columns=c.target_cols)}[c.task]  # DataConfig.task: which columns are set
    return TARGET_KINDS[c.task](**options)


def target_spec_from_dict(d: Any, *, task: str | None = None) -> TargetSpec:
    """Rebuild a spec saved with ``to_dict`` (a model's ``config.json`` ``"targets"``, or
    ``"label_spec"`` with ``task="multilabel"``), refusing anything malformed."""
    task = task if task is not None else (d.get("task") if isinstance(d, dict) else None)
    if not isinstance(d, dict) or task not in TARGET_KINDS:
        raise ValueError(f"Not a saved target spec: {d!r}.")
    try:
        return TARGET_KINDS[task].from_dict(d)
    except (KeyError, TypeError) as e:
        raise ValueError(f"Invalid saved target spec ({type(e).__name__}: {e}).") from e
