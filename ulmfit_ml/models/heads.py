"""Trained models for targets other than multi-label 0/1, on the same AWD-LSTM network:

* :class:`MultiCategoryClassifier`: several category columns, one softmax head each (as
  scikit-learn's ``MultiOutputClassifier``: ``predict`` gives one category per column,
  ``predict_proba`` one probability array per column);
* :class:`TextRegressor`: numeric targets, predicted in their own units as an array
  ``(n_texts, n_targets)``.

Both save and load like :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` (same directory
format, ``config.json`` ``"task"`` tells them apart; :func:`~ulmfit_ml.models.registry.load_classifier`
loads all).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..utils.config import OUTPUTS
from .classifier import TextModel
from ..data.tokens import TextTokenizer
from ..tasks.multicategory import CategoryReport, CategorySpec
from ..tasks.registry import target_spec_from_dict
from ..tasks.regression import RegressionReport, RegressionSpec
from ..utils.validation import labelled_rows

__all__ = ["MultiCategoryClassifier", "TextRegressor"]



class _TargetModel(TextModel):
    """What both kinds share: the target spec from ``meta["targets"]``, labelled-frame scoring."""

    spec: Any

    def __init__(self, model: torch.nn.Module, vocab: list[str], labels: list[str], *, meta: dict[str, Any],
                 thresholds: Any = None, history: pd.DataFrame | None = None,
                 valid_data: tuple[np.ndarray, np.ndarray] | None = None, tokenizer: TextTokenizer | None = None) -> None:
        if thresholds is not None:
            raise ValueError(f"{type(self).__name__} has no decision thresholds (they are for multi-label models).")
        super().__init__(model, vocab, labels, meta=meta, history=history, tokenizer=tokenizer)
        self.spec = target_spec_from_dict(self.meta["targets"])
        self._valid = valid_data  # (y_true, raw outputs) of the validation split

    @property
    def n_out(self) -> int:
        return self.spec.n_out

    @classmethod
    def _saved_spec(cls, path: Path, meta: dict[str, Any]) -> Any:
        try:
            return target_spec_from_dict(meta.get("targets"))
        except ValueError as e:
            raise ValueError(f"{path / 'config.json'}: {e} (the file was edited or corrupted; save the model again)") from e

    @classmethod
    def prepare_network(cls, network: torch.nn.Module, meta: dict[str, Any]) -> None:
        target_spec_from_dict(meta["targets"]).finish_network(network)

    @classmethod
    def saved_n_out(cls, path: Path, meta: dict[str, Any], labels: list[str]) -> int:
        """The saved target spec's outputs; its columns must be ``labels.json``'s."""
        spec = cls._saved_spec(path, meta)
        if spec.columns != labels:
            raise ValueError(f"{path / 'labels.json'} lists {labels} but config.json's targets are {spec.columns}: "
                             "the files come from different models.")
        return spec.n_out

    @property
    def validation_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(y_true, raw network outputs)`` of the validation split kept by training (``None`` after loading)."""
        return self._valid

    def _labelled(self, df: pd.DataFrame, text_col: str | None) -> tuple[list[str], np.ndarray]:
        text_col = self.meta["text_col"] if text_col is None else text_col
        df, texts = labelled_rows(df, text_col, self.spec.columns)
        return texts, self.spec.encode(df)

    def _scores(self, df: pd.DataFrame | None, text_col: str | None) -> tuple[np.ndarray, np.ndarray]:
        if df is None:
            if self._valid is None:
                raise ValueError("No validation predictions are stored (a loaded model keeps none): pass a labelled DataFrame.")
            return self._valid
        texts, y = self._labelled(df, text_col)
        return y, self.predict_logits(texts)

    def evaluate(self, df: pd.DataFrame | None = None, *, text_col: str | None = None) -> dict[str, float]:
        """Summary metrics on a labelled frame (or the validation split when ``df`` is None), as a dict."""
        return dict(self.report(df, text_col=text_col).summary)

    def report(self, df: pd.DataFrame | None = None, *, text_col: str | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}.")


class MultiCategoryClassifier(_TargetModel):
    """A trained multi-category classifier: one category per column (``labels`` = the columns).

    Attributes:
        categories: ``{column: [category, ...]}``, the column order of each probability array.
    """

    task = "multicategory"
    headline_metrics = ("accuracy", "f1_macro")
    _what = "category columns"
    spec: CategorySpec

    @property
    def categories(self) -> dict[str, list[Any]]:
        return {c: list(v) for c, v in self.spec.categories.items()}

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> list[np.ndarray]:
        """One ``(n_texts, n_categories)`` float32 array per column (in ``labels`` order), each
        row summing to 1, columns in ``categories[col]`` order (scikit-learn's
        ``MultiOutputClassifier.predict_proba`` layout)."""
        return self.spec.probabilities(self.predict_logits(texts, bs=bs))

    def predict(self, texts: Sequence[str], *, bs: int = 128) -> pd.DataFrame:
        """The most probable category of every column: a DataFrame with one row per text and one
        column per category column (values as in the training frame: strings or ints)."""
        probs = self.predict_proba(texts, bs=bs)
        return pd.DataFrame({c: pd.Series([self.spec.categories[c][i] for i in p.argmax(1)], dtype=object)
                             for c, p in zip(self.labels, probs)})

    def report(self, df: pd.DataFrame | None = None, *, text_col: str | None = None) -> CategoryReport:
        """Per-column accuracy and macro-F1 (:class:`~ulmfit_ml.tasks.multicategory.CategoryReport`) on a
        labelled frame with the training frame's category columns, or on the validation split."""
        y, logits = self._scores(df, text_col)
        return self.spec.report(y, logits)

    def output_table(self, texts: Sequence[str], *, output: str = "proba", threshold: Any = None,
                     at_least_one: bool = False, bs: int = 128) -> pd.DataFrame:
        """:func:`~ulmfit_ml.inference.predict.predict_file`'s columns: the predicted category of every column
        (named by the column; ``output="labels"``/``"both"``/``"submission"``) and/or one
        ``proba_<column>:<category>`` column per category (``"proba"``/``"both"``)."""
        self._check_output(output)
        if threshold is not None or at_least_one:
            raise ValueError("threshold and at_least_one are for multi-label models; a multi-category model "
                             "predicts the most probable category of every column.")
        probs = self.predict_proba(texts, bs=bs)
        out = pd.DataFrame(index=range(len(probs[0])))
        if output != "proba":
            for c, p in zip(self.labels, probs):
                out[c] = [self.spec.categories[c][i] for i in p.argmax(1)]
        if output in ("proba", "both"):
            for c, p in zip(self.labels, probs):
                for i, v in enumerate(self.spec.categories[c]):
                    out[f"proba_{c}:{v}"] = p[:, i]
        return out

    def output_columns(self, output: str = "proba") -> list[str]:
        cols = list(self.labels) if output != "proba" else []
        if output in ("proba", "both"):
            cols += [f"proba_{n}" for n in self.spec.output_names]
        return cols


class TextRegressor(_TargetModel):
    """A trained text regressor: ``predict(texts)`` gives ``(n_texts, n_targets)`` values in the
    targets' own units (``labels`` = the target columns), bounded by their training range."""

    task = "regression"
    headline_metrics = ("r2", "spearman")
    _what = "targets"
    spec: RegressionSpec

    def predict(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Predictions ``(n_texts, n_targets)``, float32, in the units of the training targets."""
        return self.spec.to_units(self.predict_logits(texts, bs=bs))

    def report(self, df: pd.DataFrame | None = None, *, text_col: str | None = None) -> RegressionReport:
        """MAE, RMSE, R^2 and Spearman per target (:class:`~ulmfit_ml.tasks.regression.RegressionReport`)
        on a labelled frame with the training frame's target columns, or on the validation split."""
        y, z = self._scores(df, text_col)
        return self.spec.report(y, self.spec.to_units(z))

    def output_table(self, texts: Sequence[str], *, output: str = "proba", threshold: Any = None,
                     at_least_one: bool = False, bs: int = 128) -> pd.DataFrame:
        """:func:`~ulmfit_ml.inference.predict.predict_file`'s columns: one column per target, named by the
        target, holding the predicted value (the same for every ``output``)."""
        self._check_output(output)
        if threshold is not None or at_least_one:
            raise ValueError("threshold and at_least_one are for multi-label models; a regression model predicts values.")
        pred = self.predict(texts, bs=bs)
        return pd.DataFrame({c: pred[:, j] for j, c in enumerate(self.labels)})

    def output_columns(self, output: str = "proba") -> list[str]:
        return list(self.labels)


