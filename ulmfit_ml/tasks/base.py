"""The target-kind seam: what every kind of target (multi-label, multi-category, regression)
provides, so that data, training, models and runs never branch on the kind.

A kind is one class implementing :class:`TargetSpec`, in one module of this folder, listed once in
:mod:`ulmfit_ml.tasks.registry`; :class:`~ulmfit_ml.data.core.core.MultiLabelData`, the trainer and
``load_classifier`` call its methods. Its trained model class is registered in
:mod:`ulmfit_ml.models.registry` under the same ``task`` name.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from ..utils.validation import check_columns, column_keys

__all__ = ["TargetSpec", "check_names", "frame_columns", "column_metrics"]


@runtime_checkable
class TargetSpec(Protocol):
    """What a kind of target provides (one implementation per kind; ``ulmfit_ml.tasks.registry``).

    Attributes:
        task: the kind's name: ``config.json``'s ``"task"`` and the registries' key.
        meta_key: the ``config.json`` key its :meth:`to_dict` is saved under.
        columns: the frame columns the targets are read from.
    """

    task: str
    meta_key: str
    columns: list[str]

    def fit_frame(self, df: pd.DataFrame, *, labels: Sequence[str] | None, config: Any
                  ) -> tuple["TargetSpec", np.ndarray, list[str], pd.DataFrame]:
        """Parse, validate and encode a training frame's targets: ``(fitted spec, y, output names, rows kept)``."""

    def strat_matrix(self, y: np.ndarray) -> np.ndarray:
        """The 0/1 matrix the train/validation split stratifies on."""

    def after_split(self, texts: list[str], y: np.ndarray, is_valid: np.ndarray, *, moved: bool
                    ) -> tuple["TargetSpec", np.ndarray, np.ndarray]:
        """What the kind learns or checks once the split is known: ``(spec, y, is_valid)``."""

    @property
    def n_out(self) -> int:
        """The network's outputs."""

    def describe(self) -> str:
        """A few words for ``repr``: ``"28 labels"``."""

    def counts(self, y_train: np.ndarray, y_valid: np.ndarray) -> pd.DataFrame:
        """``data.label_counts()``: rows per label or category, train and valid."""

    def fingerprint(self, y: np.ndarray) -> dict[str, Any]:
        """What a run directory records of the targets besides their hash."""

    def train_targets(self, y: np.ndarray) -> np.ndarray:
        """``y`` as the loss reads it."""

    def target_block(self) -> Any:
        """The fastai block the classifier's ``DataBlock`` gets for the targets."""

    def make_loss(self, y_train: np.ndarray, config: Any, *, device: Any = None) -> Any:
        """The training loss, from the training rows and the classifier config."""

    def epoch_metrics(self) -> list:
        """fastai metrics printed every epoch."""

    def report(self, y: np.ndarray, outputs: np.ndarray) -> Any:
        """Scores of the model's outputs against ``y``."""

    def finish_network(self, model: Any) -> None:
        """Anything the classifier network needs after its head (regression: the output range)."""

    def to_dict(self) -> dict[str, Any]:
        """What ``config.json`` keeps (under :attr:`meta_key`) to rebuild the spec."""


def check_names(cols: Any, arg: str) -> list[str]:
    if isinstance(cols, str) or not isinstance(cols, Sequence):
        raise TypeError(f"{arg} must be a list of column names, got {cols!r}; e.g. {arg}=[{cols!r}].")
    cols = list(cols)
    if not cols:
        raise ValueError(f"{arg} is empty: name at least one column.")
    if len(set(map(str, cols))) != len(cols):
        raise ValueError(f"{arg} has repeated names: {cols}.")
    return cols


def frame_columns(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The target columns of ``df``, found by the names they read as (0 and "0" alike)."""
    check_columns(df, cols)
    sub = df[column_keys(df, cols)]
    sub.columns = cols
    return sub


def column_metrics(columns: list[str], col_metric: Any, kinds: dict[str, str], *, mean: tuple[str, str]) -> list:
    """fastai epoch metrics: ``<col>_<name>`` for every column and kind (``col_metric(j, kind)``
    gives the function of raw outputs and targets), then the mean over columns of ``mean[0]``
    named ``mean[1]``."""
    from fastai.metrics import AccumMetric

    def mean_of(preds: np.ndarray, targs: np.ndarray) -> float:
        return float(np.mean([col_metric(j, mean[0])(preds, targs) for j in range(len(columns))]))

    out = [AccumMetric(col_metric(j, kind), flatten=False, to_np=True, name=f"{c}_{name}")
           for j, c in enumerate(columns) for kind, name in kinds.items()]
    return out + [AccumMetric(mean_of, flatten=False, to_np=True, name=mean[1])]


