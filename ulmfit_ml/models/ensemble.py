"""Average the probabilities of several multi-label models trained on the same labels.

ULMFiT's paper ensembles a forward and a backward classifier; a Kaggle-style experiment
often also blends in the TF-IDF baseline. :class:`MultiLabelEnsemble` does both, with the
same ``predict`` / ``evaluate`` / ``report`` / ``tune_thresholds`` as its members::

    fwd = um.train_classifier(data, encoder=lm_fwd)
    bwd = um.train_classifier(data, encoder=lm_bwd)     # a backward LM's classifier
    tfidf = um.TfidfBaseline().fit(data)
    ens = um.MultiLabelEnsemble([fwd, bwd, tfidf], weights=[1, 1, 1])
    ens.tune_thresholds()          # on the members' shared validation split
    ens.evaluate(test_df)

The members' own thresholds are ignored: an average of probabilities needs its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import MultiLabelPredictorMixin
from .classifier import MultiLabelClassifier, TextModel
from .registry import load_classifier
from ..evaluation.thresholds import check_thresholds
from ..utils.validation import check_texts, suppress_empty_text_warning
from ..utils.valuetypes import user_path

__all__ = ["MultiLabelEnsemble", "average_probabilities", "resolve_model_dirs", "load_predictor"]


def _check_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights normalised to sum to 1 (equal when ``None``)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must have one entry per model ({n}), got {len(w)}.")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(w)}.")
    return w / w.sum()


def average_probabilities(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of same-shaped ``(n_texts, n_labels)`` probability arrays, float32.

    The arithmetic of :class:`MultiLabelEnsemble`, for probabilities already predicted (e.g.
    by a benchmark that scores every member on its own too).
    """
    arrays = [np.asarray(p, dtype=np.float64) for p in probs]
    if not arrays:
        raise ValueError("average_probabilities needs at least one array.")
    if any(a.shape != arrays[0].shape for a in arrays[1:]):
        raise ValueError(f"probability arrays must share one shape, got {[a.shape for a in arrays]}.")
    w = _check_weights(weights, len(arrays))
    return sum(wi * a for wi, a in zip(w, arrays)).astype(np.float32)


class MultiLabelEnsemble(MultiLabelPredictorMixin):
    """Weighted mean of the members' ``predict_proba`` (arithmetic mean of probabilities).

    Args:
        models: two or more fitted models with the same ``labels`` in the same order
            (:class:`~ulmfit_ml.MultiLabelClassifier`, :class:`~ulmfit_ml.TfidfBaseline`,
            another ensemble, or anything with ``labels`` and ``predict_proba``).
        weights: one non-negative weight per model (normalised to sum to 1); ``None``: equal.

    The validation probabilities (for ``tune_thresholds()`` and ``evaluate()`` without a
    frame) are the weighted mean of the members' own, available when every member kept them
    for the same validation rows (same ``y``); otherwise pass a labelled frame.
    """

    def __init__(self, models: Sequence[Any], *, weights: Sequence[float] | None = None) -> None:
        models = list(models) if not isinstance(models, (str, bytes)) else []
        if len(models) < 2:
            raise ValueError(f"An ensemble needs at least 2 models, got {len(models)}.")
        for i, m in enumerate(models):
            if not (hasattr(m, "predict_proba") and hasattr(m, "labels")):
                raise TypeError(f"models[{i}] ({type(m).__name__}) has no labels/predict_proba: pass fitted "
                                "MultiLabelClassifier / TfidfBaseline objects.")
            if isinstance(m, TextModel) and not m.thresholded:
                raise TypeError(f"models[{i}] is a {type(m).__name__}: an ensemble averages multi-label probabilities; "
                                "average a multi-category or regression model's outputs yourself.")
        labels = list(models[0].labels)
        if not labels:
            raise ValueError("models[0] has no labels: fit it first.")
        for i, m in enumerate(models[1:], start=1):
            if list(m.labels) != labels:
                raise ValueError(f"models[{i}] has labels {list(m.labels)[:6]}... but models[0] has {labels[:6]}...: "
                                 "every member must be trained on the same labels in the same order.")
        self.models = models
        self.weights = _check_weights(weights, len(models))
        self.labels = labels
        self.thresholds = check_thresholds(0.5, len(labels))
        self.meta: dict[str, Any] = dict(getattr(models[0], "meta", {}))
        self.meta["kind"] = "ensemble"
        self._valid = self._mean_valid()

    def _mean_valid(self) -> tuple[np.ndarray, np.ndarray] | None:
        vals = [getattr(m, "_valid", None) for m in self.models]
        if any(v is None for v in vals):
            return None
        y0 = np.asarray(vals[0][0])
        if any(np.asarray(v[0]).shape != y0.shape or not np.array_equal(np.asarray(v[0]), y0) for v in vals[1:]):
            return None  # members validated on different rows: no shared validation split
        return y0, average_probabilities([v[1] for v in vals], self.weights)

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Weighted mean of the members' probabilities, ``(n_texts, n_labels)`` float32."""
        texts = check_texts(texts)  # the text policy's warning once here, not once per member
        used = [(wi, m) for wi, m in zip(self.weights, self.models) if wi > 0]  # weight 0: not run at all
        with suppress_empty_text_warning():
            probs = [m.predict_proba(texts, bs=bs) for _, m in used]
        return average_probabilities(probs, [wi for wi, _ in used])

    def __repr__(self) -> str:
        parts = ", ".join(f"{type(m).__name__}:{w:.2f}" for m, w in zip(self.models, self.weights))
        return f"MultiLabelEnsemble({len(self.labels)} labels; {parts})"


# ---------------------------------------------------------------------- loading saved models
def resolve_model_dirs(path: str | Path) -> list[Path]:
    """The model directories behind ``path``: a model directory, a ``train`` run directory
    (``model/``) or a ``cv`` run directory (``folds/*/model``)."""
    p = user_path(path)
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return [p]
    if (p / "model" / "model.safetensors").is_file():
        return [p / "model"]
    folds = sorted((p / "folds").glob("fold*/model")) if (p / "folds").is_dir() else []
    if folds:
        return folds
    raise FileNotFoundError(f"No saved model at {p}: pass a model directory, a `train` run directory (with model/) "
                            "or a `cv` run directory saved with run.save_fold_models = true.")


def load_predictor(path: str | Path, *, device: str | None = "cpu") -> MultiLabelClassifier | MultiLabelEnsemble:
    """Load what :func:`resolve_model_dirs` finds: one classifier, or the equal-weight ensemble
    of a cv run's fold models (with the first fold's thresholds, as each fold tuned its own on
    its validation fold)."""
    models = [load_classifier(m, device=device or "cpu") for m in resolve_model_dirs(path)]
    if len(models) == 1:
        return models[0]
    first = models[0].labels
    if any(m.labels != first for m in models[1:]):
        raise ValueError(f"The models under {path} have different labels; they cannot be averaged.")
    ens = MultiLabelEnsemble(models)
    ens.thresholds = models[0].thresholds.copy()
    return ens
