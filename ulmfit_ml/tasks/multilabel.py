"""Multi-label targets: one 0/1 column per label or one delimited column, a float multi-hot ``y``.

The label vocabulary a model is trained with is made here (:func:`fit_label_matrix`, the training
side of :func:`~ulmfit_ml.utils.validation.parse_label_matrix`) and must round-trip through the
model's outputs (:func:`check_label_names`); rows without a label follow ``unlabelled``
(:func:`handle_unlabelled`); every label with a positive is trained on (:func:`train_on_every_label`,
after the split).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.metrics import MultiLabelReport, epoch_metrics, multilabel_report
from ..utils.validation import LabelSpec, parse_label_matrix
from .losses import make_loss

__all__ = ["MultiLabelSpec", "check_label_names", "fit_label_matrix", "train_on_every_label", "handle_unlabelled"]


class MultiLabelSpec(LabelSpec):
    """Where a frame's labels live (:class:`~ulmfit_ml.utils.validation.LabelSpec`) and, once
    fitted, the label vocabulary ``labels`` (the column order of ``y`` and of the probabilities)."""

    task = "multilabel"
    meta_key = "label_spec"  # the key models saved before the other kinds existed already use

    def __init__(self, *, label_cols: Sequence[str] | None = None, label_col: str | None = None,
                 label_delim: str = ";", labels: Sequence[str] | None = None) -> None:
        super().__init__(label_cols=label_cols, label_col=label_col, label_delim=label_delim)
        self.labels = list(labels) if labels is not None else []

    def fit_frame(self, df: pd.DataFrame, *, labels: Sequence[str] | None, config: Any
                  ) -> tuple["MultiLabelSpec", np.ndarray, list[str], pd.DataFrame]:
        """Labels parsed and checked, rows without one handled per ``config.unlabelled``; warns (to
        from_df's caller) about labels that never occur."""
        y, labs = fit_label_matrix(df, self, labels)
        df, y = handle_unlabelled(df, y, unlabelled=config.unlabelled, label_delim=self.label_delim)
        never = [lab for lab, n in zip(labs, y.sum(axis=0)) if n == 0]
        if never:
            warnings.warn(f"{len(never)} label(s) never occur in the data: {never[:10]}. The model cannot learn "
                          "them; their F1 will be 0.", UserWarning, stacklevel=3)
        spec = MultiLabelSpec(label_cols=self.label_cols, label_col=self.label_col, label_delim=self.label_delim,
                              labels=labs)
        return spec, y, labs, df

    def strat_matrix(self, y: np.ndarray) -> np.ndarray:
        return y

    def after_split(self, texts: list[str], y: np.ndarray, is_valid: np.ndarray, *, moved: bool
                    ) -> tuple["MultiLabelSpec", np.ndarray, np.ndarray]:
        return self, y, train_on_every_label(texts, y, self.labels, is_valid, moved=moved, stacklevel=4)

    @property
    def n_out(self) -> int:
        return len(self.labels)

    @property
    def output_names(self) -> list[str]:
        return list(self.labels)

    def describe(self) -> str:
        return f"{len(self.labels)} labels"

    def counts(self, y_train: np.ndarray, y_valid: np.ndarray) -> pd.DataFrame:
        """Positives per label in train and valid."""
        return pd.DataFrame({"train": y_train.sum(0).astype(int), "valid": y_valid.sum(0).astype(int)},
                            index=pd.Index(self.labels, name="label"))

    def fingerprint(self, y: np.ndarray) -> dict[str, Any]:
        return {"label_counts": [int(v) for v in y.sum(0)]}

    def train_targets(self, y: np.ndarray) -> np.ndarray:
        return y

    def target_block(self) -> Any:
        from fastai.data.block import MultiCategoryBlock

        return MultiCategoryBlock(encoded=True, vocab=list(self.labels))  # float multi-hot targets

    def make_loss(self, y_train: np.ndarray, config: Any, *, device: Any = None) -> Any:
        """BCE-with-logits or the focal loss, rare labels' positives weighted (``pos_weight``)."""
        return make_loss(config.loss, y_train=y_train, pos_weight=config.pos_weight, cap=config.pos_weight_cap,
                         gamma=config.focal_gamma, device=device)

    def epoch_metrics(self) -> list:
        return epoch_metrics()

    def report(self, y: np.ndarray, outputs: np.ndarray) -> MultiLabelReport:
        """The report of probabilities ``outputs`` at 0.5 (a model's ``report`` uses its thresholds)."""
        return multilabel_report(y, outputs, labels=self.labels)

    def finish_network(self, model: Any) -> None:
        return None


def handle_unlabelled(df: pd.DataFrame, y: np.ndarray, *, unlabelled: str, label_delim: str
                      ) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with no label: kept, dropped with a warning (to from_df's caller) or refused, per ``unlabelled``."""
    no_label = y.sum(axis=1) == 0
    if no_label.all():
        raise ValueError("No row has any label: check label_cols/label_col, and for a delimited column its "
                         f"label_delim (now {label_delim!r}).")
    if no_label.any():
        n = int(no_label.sum())
        if unlabelled == "raise":
            raise ValueError(f"{n} row(s) have no label. Use unlabelled='keep' (valid multi-label rows) or 'drop'.")
        if unlabelled == "drop":
            warnings.warn(f"Dropping {n} row(s) that have no label.", UserWarning, stacklevel=4)
            df, y = df.loc[~no_label], y[~no_label]
    return df, y


def check_label_names(labels: Sequence[str], *, label_delim: str, label_col: str | None = None,
                      source: str = "the labels") -> None:
    """The label vocabulary a model is trained with must round-trip through its outputs: no two
    labels that differ only by case or whitespace (``BILLING`` / ``billing`` would be learnt as
    two labels), and no label containing ``label_delim`` (``output="labels"`` joins label lists
    with it, so they could not be split back).

    Args:
        label_col: the delimited label column the labels come from (``None``: 0/1 columns);
            the fix named in the message depends on it.

    Raises:
        ValueError: naming the labels and the fix.
    """
    groups: dict[str, list[str]] = {}
    for lab in labels:
        groups.setdefault(" ".join(str(lab).split()).casefold(), []).append(str(lab))
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        pairs = "; ".join(" and ".join(repr(x) for x in g) for g in same[:5])
        fix = (f"df[{label_col!r}] = df[{label_col!r}].str.lower().str.replace(r'\s+', ' ', regex=True)"
               if label_col is not None else
               f"merge the columns, df[{same[0][0]!r}] = df[{same[0]!r}].max(axis=1), and drop the others")
        raise ValueError(
            f"{len(same)} group(s) of labels in {source} differ only by case or whitespace: {pairs}. They would be "
            f"learnt as different labels. Normalise them first, e.g. {fix}.")
    with_delim = [str(lab) for lab in labels if label_delim in str(lab)]
    if with_delim:
        raise ValueError(
            f"Label(s) {with_delim[:5]} in {source} contain the label delimiter {label_delim!r}: predicted label lists "
            f"(output='labels', predict_file, the CLI's labels column) are joined with {label_delim!r} and could not "
            f"be split back. Rename the label(s) (e.g. {with_delim[0].replace(label_delim, '_')!r}) or choose another "
            "label_delim= (CLI --label-delim).")


def fit_label_matrix(df: pd.DataFrame, spec: LabelSpec, labels: Sequence[str] | None = None,
                     ) -> tuple[np.ndarray, list[str]]:
    """Training side of :func:`parse_label_matrix`: the label vocabulary is made here, so it is
    checked here. ``labels=`` with 0/1 columns must name every label column (a shorter list would
    drop the others silently) and only them; the vocabulary passes :func:`check_label_names`.

    Raises:
        ValueError: as :func:`parse_label_matrix`; label columns left out of ``labels``, names in
            ``labels`` that are not label columns, or a vocabulary :func:`check_label_names` refuses.
    """
    if spec.label_cols is not None and labels is not None:
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of label names, got the string {labels!r}.")
        given = {str(x) for x in labels}
        left_out = [c for c in spec.label_cols if str(c) not in given]
        unknown = [x for x in labels if str(x) not in {str(c) for c in spec.label_cols}]
        if left_out:
            raise ValueError(
                f"labels={list(labels)} leaves out {len(left_out)} of the label_cols: {left_out}. They would be dropped "
                "silently. Remove them from label_cols if the model should not learn them, or leave labels unset "
                "(with 0/1 columns the label columns are the labels).")
        if unknown:
            raise ValueError(f"labels= names {unknown}, which are not in label_cols {list(spec.label_cols)}: with 0/1 "
                             "columns every label is one of the label columns.")
    y, labs = parse_label_matrix(df, spec, labels)
    source = f"label_cols {list(spec.label_cols)}" if spec.label_cols is not None else f"column {spec.label_col!r}"
    check_label_names(labs, label_delim=spec.label_delim, label_col=spec.label_col, source=source)
    return y, labs


def train_on_every_label(texts: list[str], y: np.ndarray, labels: list[str], is_valid: np.ndarray, *, moved: bool,
                         stacklevel: int = 3) -> np.ndarray:
    """A label whose positives all fell in the validation rows is never trained on: move one
    positive row of each such label (with every copy of its text) to training, with a warning
    naming the labels (random and stratified splits); with ``valid_col`` only warn."""
    only_valid = [j for j in range(y.shape[1]) if y[is_valid, j].any() and not y[~is_valid, j].any()]
    if not only_valid:
        return is_valid
    names = [labels[j] for j in only_valid]
    out = is_valid.copy()
    if moved:
        for j in only_valid:
            if y[~out, j].any():  # a row moved for an earlier label also holds this one
                continue
            text = texts[int(np.flatnonzero(out & (y[:, j] > 0))[0])]
            out[[i for i, t in enumerate(texts) if t == text]] = False
        if out.any():
            n = int((is_valid & ~out).sum())
            warnings.warn(f"{len(names)} label(s) had positives only in the validation rows: {names[:10]}. {n} row(s) "
                          "were moved to training so that every label is trained on.", UserWarning,
                          stacklevel=stacklevel)
            return out
    warnings.warn(f"{len(names)} label(s) have positives only in the validation rows: {names[:10]}. The model never "
                  "trains on them (their F1 will be about 0): put some of their rows in training (valid_col), or add "
                  "examples.", UserWarning, stacklevel=stacklevel)
    return is_valid
