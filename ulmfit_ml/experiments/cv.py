"""K-fold cross-validation with multi-label stratified folds and out-of-fold predictions.

One language model is fine-tuned once on all texts (LM training reads no labels, so every
fold may share it) and reused by the classifier of every fold. Each row is predicted by the
one model that did not train on it (out-of-fold, "OOF" probabilities), which gives CV
metrics on the whole data set and thresholds tuned on it. Test predictions can average the
fold models' probabilities.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..training.trainer import train_classifier
from ..utils.config import ClassifierConfig, LMConfig
from ..data.core import MultiLabelData
from ..models.ensemble import average_probabilities
from ..training.finetune import finetune_lm
from ..models.lm import LanguageModel, resolve_encoder
from ..evaluation.metrics import multilabel_report
from ..models.classifier import MultiLabelClassifier
from ..evaluation.thresholds import apply_thresholds, check_thresholds, tune_thresholds
from ..data.trainchecks import stratification_matrix
from ..tasks.multilabel import MultiLabelSpec

__all__ = ["kfold_assignments", "cross_validate", "CVResult"]


def kfold_assignments(y: np.ndarray, *, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Fold index (``0 .. n_folds-1``) of every row, from iterative stratification.

    Uses iterative-stratification's ``MultilabelStratifiedKFold`` (Sechidis et al. 2011), so
    each fold has close to ``1/n_folds`` of every label's positives.

    Args:
        y: multi-hot label matrix ``(n_rows, n_labels)``.
        n_folds: number of folds (>= 2, <= number of rows).
        seed: shuffling seed.

    Returns:
        int array ``(n_rows,)``.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must be a (n_rows, n_labels) matrix, got shape {y.shape}.")
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}.")
    if n_folds > len(y):
        raise ValueError(f"n_folds={n_folds} is more than the {len(y)} rows: use at most {len(y)} folds.")
    strat = stratification_matrix(y)
    folds = np.full(len(y), -1, dtype=np.int64)
    mskf = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid_idx) in enumerate(mskf.split(np.zeros((len(y), 1)), strat)):
        folds[valid_idx] = k
    return folds


@dataclass
class CVResult:
    """The outcome of :func:`cross_validate`.

    Attributes:
        labels: label names (column order of every probability array).
        folds: fold index of each row of the data.
        oof: out-of-fold probabilities ``(n_rows, n_labels)``.
        y: the true multi-hot labels ``(n_rows, n_labels)``.
        index: the data rows' index in the original DataFrame.
        fold_metrics: one row of summary metrics per fold (at ``thresholds``).
        thresholds: per-label thresholds tuned on the OOF probabilities (or the fixed ones).
        oof_metrics: summary metrics of all OOF probabilities at ``thresholds``.
        lm: the language model shared by the folds (``None`` for a random encoder).
        models: the fold classifiers (kept when ``keep_models=True``).
    """

    labels: list[str]
    folds: np.ndarray
    oof: np.ndarray
    y: np.ndarray
    index: pd.Index
    fold_metrics: pd.DataFrame
    thresholds: np.ndarray
    oof_metrics: dict[str, float]
    lm: LanguageModel | None = None
    models: list[MultiLabelClassifier] = field(default_factory=list)

    @property
    def mean(self) -> dict[str, float]:
        """Mean over folds of each summary metric."""
        return {k: float(v) for k, v in self.fold_metrics.mean(numeric_only=True).items() if k not in ("fold", "n_valid")}

    @property
    def std(self) -> dict[str, float]:
        """Standard deviation over folds (``ddof=1``) of each summary metric."""
        return {k: float(v) for k, v in self.fold_metrics.std(numeric_only=True, ddof=1).items()
                if k not in ("fold", "n_valid")}

    def oof_frame(self) -> pd.DataFrame:
        """OOF probabilities as a DataFrame: ``row`` (original index), ``fold``, one column per label."""
        out = pd.DataFrame({"row": np.asarray(self.index), "fold": self.folds})
        for j, lab in enumerate(self.labels):
            out[lab] = self.oof[:, j]
        return out

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Mean of the fold models' probabilities ``(n_texts, n_labels)``.

        Raises:
            ValueError: the fold models were not kept (``keep_models=False``).
        """
        if not self.models:
            raise ValueError("No fold models were kept: run cross_validate(..., keep_models=True) to average them.")
        return average_probabilities([m.predict_proba(texts, bs=bs) for m in self.models])

    def predict(self, texts: Sequence[str], *, at_least_one: bool = False, bs: int = 128) -> list[list[str]]:
        """Label lists from the fold-averaged probabilities at the OOF-tuned thresholds."""
        pred = apply_thresholds(self.predict_proba(texts, bs=bs), self.thresholds, at_least_one=at_least_one)
        return [[self.labels[j] for j in np.flatnonzero(r)] for r in pred]


def cross_validate(data: MultiLabelData, *, n_folds: int = 5, seed: int | None = None,
                   encoder: LanguageModel | str | Path | None = None, finetune: bool = True,
                   lm_config: LMConfig | None = None, config: ClassifierConfig | None = None,
                   arch: str | dict[str, Any] = "cpu", threshold: float | Sequence[float] = 0.5,
                   keep_models: bool = False,
                   on_fold: Callable[[int, MultiLabelClassifier, dict[str, float]], None] | None = None) -> CVResult:
    """K-fold CV of the ULMFiT classifier with one shared language model.

    The split stored in ``data`` is ignored: every row is in exactly one validation fold.

    Args:
        data: a :class:`~ulmfit_ml.data.core.MultiLabelData` (all its rows are used).
        n_folds: number of folds.
        seed: fold seed; default ``data.config.seed``.
        encoder: a fine-tuned :class:`~ulmfit_ml.models.lm.LanguageModel` or its saved directory to
            reuse; ``None`` fine-tunes one on all texts with ``lm_config`` (when ``finetune``).
        finetune: ``False`` with ``encoder=None`` trains every fold from a random encoder of
            size ``arch`` (an ablation).
        lm_config: options of the one LM fine-tuning.
        config: classifier options, used for every fold; its ``threshold_strategy`` (``"per_label"``,
            ``"global"``) tunes the thresholds on the OOF probabilities and reports the OOF
            metrics at them, ``"none"`` keeps ``threshold``.
        arch: encoder size when no language model is used.
        threshold: thresholds of the per-fold metrics.
        keep_models: keep the fold classifiers (for :meth:`CVResult.predict_proba`, test-set
            averaging, or saving); otherwise each is dropped after its fold.
        on_fold: called as ``on_fold(k, model, metrics)`` after each fold (logging, saving).

    Returns:
        :class:`CVResult`.
    """
    cfg = _checked_cv_config(data, config)
    fold_cfg = dataclasses.replace(cfg, threshold_strategy="none")  # thresholds are tuned once, on the OOF probabilities
    fixed = check_thresholds(threshold, data.n_labels)
    folds = kfold_assignments(data.y, n_folds=n_folds, seed=data.config.seed if seed is None else seed)
    lm = _shared_lm(data, encoder, finetune, lm_config)
    oof, rows, models = _train_folds(data, folds, n_folds, lm=lm, config=fold_cfg, arch=arch, fixed=fixed,
                                     keep_models=keep_models, on_fold=on_fold)
    thresholds = fixed if cfg.threshold_strategy == "none" else tune_thresholds(data.y, oof, strategy=cfg.threshold_strategy)
    for m in models:
        m.thresholds = thresholds.copy()
    oof_metrics = dict(multilabel_report(data.y, oof, thresholds, labels=data.labels).summary)
    return CVResult(labels=list(data.labels), folds=folds, oof=oof, y=data.y.copy(), index=data.index,
                    fold_metrics=pd.DataFrame(rows), thresholds=thresholds, oof_metrics=oof_metrics,
                    lm=lm, models=models)


def _checked_cv_config(data: Any, config: ClassifierConfig | None) -> ClassifierConfig:
    """The classifier options, once ``data`` is multi-label data."""
    if not isinstance(data, MultiLabelData):
        raise TypeError(f"cross_validate expects a MultiLabelData, got {type(data).__name__}.")
    if not isinstance(data.spec, MultiLabelSpec):
        raise ValueError(f"cross_validate works on multi-label data; this data is {data.task} ({data.labels}). "
                         "Train one model with train_classifier and read its evaluate() instead.")
    cfg = config if config is not None else ClassifierConfig()
    if not isinstance(cfg, ClassifierConfig):
        raise TypeError(f"config must be a ClassifierConfig, got {type(cfg).__name__}.")
    return cfg


def _shared_lm(data: MultiLabelData, encoder: LanguageModel | str | Path | None, finetune: bool,
               lm_config: LMConfig | None) -> LanguageModel | None:
    """The one language model of every fold: ``encoder`` (loaded if a directory), else one
    fine-tuned on all texts, or ``None`` (random encoders) without ``finetune``."""
    encoder = resolve_encoder(encoder)
    return encoder if encoder is not None or not finetune else finetune_lm(data, config=lm_config)


def _train_folds(data: MultiLabelData, folds: np.ndarray, n_folds: int, *, lm: LanguageModel | None,
                 config: ClassifierConfig, arch: str | dict[str, Any], fixed: np.ndarray, keep_models: bool,
                 on_fold: Callable[..., None] | None) -> tuple[np.ndarray, list[dict[str, Any]], list[Any]]:
    """One classifier per fold, validated on its fold: ``(OOF probabilities, per-fold metric rows
    at the ``fixed`` thresholds, the models kept)``."""
    oof = np.full(data.y.shape, np.nan, dtype=np.float32)
    rows, models = [], []
    for k in range(n_folds):
        valid = folds == k
        fold_data = data.with_split(valid)
        clf = train_classifier(fold_data, encoder=lm, config=config, arch=arch)
        probs = clf.predict_proba(fold_data.valid_texts)
        oof[valid] = probs
        summary = multilabel_report(data.y[valid], probs, fixed, labels=data.labels).summary
        rows.append({"fold": k, "n_valid": int(valid.sum()), **summary})
        if on_fold is not None:
            on_fold(k, clf, summary)
        if keep_models:
            models.append(clf)
    return oof, rows, models
