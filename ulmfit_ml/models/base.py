"""What every multi-label model of ulmfit_ml shares: thresholds, ``predict``, ``evaluate``,
``report`` and ``tune_thresholds`` on top of the model's own ``predict_proba``.

:class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` (ULMFiT) and
:class:`~ulmfit_ml.models.baseline.TfidfBaseline` both use :class:`MultiLabelPredictorMixin`, so
an experiment can print both side by side on the same split with the same code.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..utils.validation import LabelSpec, label_delim_of, labelled_rows, parse_label_matrix
from ..evaluation.metrics import MultiLabelReport, multilabel_report
from ..evaluation.thresholds import apply_thresholds, tune_thresholds

__all__ = ["MultiLabelPredictorMixin"]


class MultiLabelPredictorMixin:
    """Shared evaluation API.

    A class using it provides ``labels`` (list of names), ``thresholds`` (float array, one
    per label), ``meta`` (with ``"text_col"`` and ``"label_spec"``: how labelled frames are
    read), ``_valid`` (``(y_true, probs)`` of the validation split, or ``None``) and
    ``predict_proba(texts, *, bs)`` returning ``(n_texts, n_labels)`` probabilities.
    """

    labels: list[str]
    thresholds: np.ndarray
    meta: dict[str, Any]
    _valid: tuple[np.ndarray, np.ndarray] | None

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def validation_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(y_true, probs)`` of the validation split kept by training (``None`` after loading)."""
        return self._valid

    @property
    def label_delim(self) -> str:
        """The delimiter label lists are written with (the training ``label_delim``, default ``;``)."""
        return label_delim_of(self.meta)

    def predict(self, texts: Sequence[str], *, threshold: float | Sequence[float] | None = None,
                at_least_one: bool = False, bs: int = 128) -> list[list[str]]:
        """Label lists, one per text, using the stored per-label thresholds (or ``threshold``).

        Args:
            texts: list or Series of strings.
            threshold: one threshold or one per label, overriding ``thresholds`` for this call.
            at_least_one: when no label passes, predict the most probable one (off by default).
            bs: texts per batch.
        """
        probs = self.predict_proba(texts, bs=bs)
        pred = apply_thresholds(probs, self.thresholds if threshold is None else threshold, at_least_one=at_least_one)
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in pred]

    def output_table(self, texts: Sequence[str], *, output: str = "proba", threshold: float | Sequence[float] | None = None,
                     at_least_one: bool = False, bs: int = 128) -> pd.DataFrame:
        """The prediction columns :func:`~ulmfit_ml.inference.predict.predict_file` writes for ``texts``:
        ``labels`` (names joined by :attr:`label_delim`; ``output="labels"``/``"both"``) and/or
        one ``proba_<label>`` column per label (``"proba"``/``"both"``); ``"submission"``: one
        column per label, named by the label."""
        probs = self.predict_proba(texts, bs=bs)
        labels = self.labels
        if output == "submission":
            return pd.DataFrame({lab: probs[:, j] for j, lab in enumerate(labels)})
        out = pd.DataFrame(index=range(len(probs)))
        if output in ("labels", "both"):
            pred = apply_thresholds(probs, self.thresholds if threshold is None else threshold, at_least_one=at_least_one)
            out["labels"] = [self.label_delim.join(labels[j] for j in np.flatnonzero(r)) for r in pred]
        if output in ("proba", "both"):
            for j, lab in enumerate(labels):
                out[f"proba_{lab}"] = probs[:, j]
        return out

    def output_columns(self, output: str = "proba") -> list[str]:
        """The column names :meth:`output_table` gives for ``output`` (the header of an empty file)."""
        if output == "submission":
            return list(self.labels)
        return (["labels"] if output in ("labels", "both") else []) + \
            ([f"proba_{lab}" for lab in self.labels] if output in ("proba", "both") else [])

    def _labelled(self, df: pd.DataFrame, text_col: str | None = None) -> tuple[list[str], np.ndarray]:
        text_col = self.meta["text_col"] if text_col is None else text_col
        spec = LabelSpec.from_dict(self.meta["label_spec"])
        df, texts = labelled_rows(df, text_col, spec.columns)
        y, _ = parse_label_matrix(df, spec, self.labels)
        return texts, y

    def _y_probs(self, df: pd.DataFrame | None, text_col: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        if df is None:
            if self._valid is None:
                raise ValueError("No validation predictions are stored (a loaded model keeps none): pass a labelled DataFrame.")
            return self._valid
        texts, y = self._labelled(df, text_col)
        return y, self.predict_proba(texts)

    def report(self, df: pd.DataFrame | None = None, *, threshold: float | Sequence[float] | None = None,
               text_col: str | None = None) -> MultiLabelReport:
        """Full :class:`~ulmfit_ml.evaluation.metrics.MultiLabelReport` on a labelled frame (same label
        columns as the training frame; ``text_col`` defaults to the training one), or on the
        validation split when ``df`` is None. Rows with an empty text are dropped with a warning."""
        y, probs = self._y_probs(df, text_col)
        return multilabel_report(y, probs, self.thresholds if threshold is None else threshold, labels=self.labels)

    def evaluate(self, df: pd.DataFrame | None = None, *, threshold: float | Sequence[float] | None = None,
                 text_col: str | None = None) -> dict[str, float]:
        """Summary metrics (micro/macro F1, ROC-AUC, ...) on a labelled frame, as a dict."""
        return dict(self.report(df, threshold=threshold, text_col=text_col).summary)

    def tune_thresholds(self, df: pd.DataFrame | None = None, *, strategy: str = "per_label",
                        min_positives: int = 5, shrink: float = 10.0) -> np.ndarray:
        """Choose thresholds maximising F1 on the validation split (or ``df``); stores and returns them.

        ``strategy="global"`` (one threshold, best macro-F1) or ``"per_label"`` (each label's
        best F1, pulled toward the global one by ``shrink`` positives' worth; labels with fewer
        than ``min_positives`` positives keep the global one, with a ``UserWarning`` giving their
        count; too few positives in all: every threshold stays 0.5, with a warning). See
        :func:`~ulmfit_ml.evaluation.thresholds.tune_thresholds`.
        """
        y, probs = self._y_probs(df)
        self.thresholds = tune_thresholds(y, probs, strategy=strategy, min_positives=min_positives, shrink=shrink,
                                          labels=self.labels)
        return self.thresholds.copy()
