"""Multi-label metrics: the evaluation report (scikit-learn underneath) and fastai epoch metrics."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .thresholds import apply_thresholds, check_thresholds

__all__ = ["MultiLabelReport", "multilabel_report", "epoch_metrics", "roc_auc_present", "EPOCH_METRICS"]


@dataclass
class MultiLabelReport:
    """Summary metrics (``summary``: name -> float), a per-label table and skipped labels."""

    summary: dict[str, float]
    per_label: pd.DataFrame
    auc_skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "per_label": self.per_label.reset_index().to_dict(orient="records"),
                "auc_skipped": list(self.auc_skipped)}

    def __repr__(self) -> str:
        lines = [f"{k:>24s}  {v:.4f}" for k, v in self.summary.items()]
        if self.auc_skipped:
            lines.append(f"ROC-AUC skipped for {len(self.auc_skipped)} label(s) with one class: {self.auc_skipped[:10]}")
        return "MultiLabelReport\n" + "\n".join(lines)


def roc_auc_present(y_true: np.ndarray, y_prob: np.ndarray, average: str = "macro") -> tuple[float, list[int]]:
    """ROC-AUC over the labels that have both classes in ``y_true``.

    scikit-learn raises when a label has a single class; such labels are left out and
    their column indexes returned. Returns ``(nan, skipped)`` if no label qualifies.
    """
    y_true = np.asarray(y_true)
    pos = y_true.sum(0)
    ok = (pos > 0) & (pos < len(y_true))
    skipped = np.flatnonzero(~ok).tolist()
    if not ok.any():
        return float("nan"), skipped
    return float(skm.roc_auc_score(y_true[:, ok], np.asarray(y_prob)[:, ok], average=average)), skipped


def _precision_at_k(y_true: np.ndarray, y_prob: np.ndarray, k: int) -> float:
    """Mean over texts of (true labels among the k most probable) / k."""
    k = min(k, y_true.shape[1])
    top = np.argsort(-y_prob, axis=1)[:, :k]
    return float(np.take_along_axis(y_true, top, axis=1).sum(1).mean() / k)


def _prfs(y_true: np.ndarray, y_pred: np.ndarray, average: str | None) -> tuple:
    """scikit-learn's ``precision_recall_fscore_support`` on multi-hot arrays (zero_division=0).

    sklearn reads a one-column indicator as *binary* (macro would then average the F1 of
    classes 0 and 1, and ``samples`` raises); an all-zero dummy column makes it multi-label
    and ``labels=[0]`` keeps the metric on the real column.
    """
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        pad = np.zeros_like(y_true)
        return skm.precision_recall_fscore_support(np.hstack([y_true, pad]), np.hstack([y_pred, pad]), labels=[0],
                                                   average=average, zero_division=0)
    return skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)


def multilabel_report(y_true: np.ndarray, y_prob: np.ndarray, thresholds: float | Sequence[float] = 0.5, *,
                      labels: Sequence[str] | None = None, k: Sequence[int] = (1, 3)) -> MultiLabelReport:
    """Full multi-label report on fixed arrays.

    Args:
        y_true: 0/1 array ``(n_texts, n_labels)``.
        y_prob: probabilities of the same shape.
        thresholds: one threshold or one per label.
        labels: label names (default ``"0"``, ``"1"``, ...).
        k: the ``precision@k`` values to report.

    Returns:
        :class:`MultiLabelReport` whose ``summary`` has micro/macro/weighted/samples
        F1, precision and recall, ROC-AUC (macro, micro), average precision (macro, micro),
        precision@k, hamming loss, subset accuracy and ``accuracy_multi``; ``per_label`` has
        support, precision, recall, F1, ROC-AUC, average precision, threshold and number of
        predicted positives per label. Labels with a single class in ``y_true`` get NaN
        ROC-AUC, are left out of ``roc_auc_macro`` and are listed in ``auc_skipped``; labels
        without positives are left out of ``average_precision_macro`` (undefined there).
    """
    y_true, y_prob, k, labels = _checked_report_inputs(y_true, y_prob, k, labels)
    t = check_thresholds(thresholds, len(labels))
    y_pred = apply_thresholds(y_prob, t).astype(int)
    s, skipped = _summary_metrics(y_true, y_prob, y_pred, k)
    per = _per_label_metrics(y_true, y_prob, y_pred, t, labels)
    return MultiLabelReport(summary=s, per_label=per, auc_skipped=[labels[j] for j in skipped])


def _checked_report_inputs(y_true: Any, y_prob: Any, k: Sequence[int], labels: Sequence[str] | None,
                           ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], list[str]]:
    """``(int 0/1 targets, float64 probabilities, k, label names)``, or a ValueError naming the problem."""
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true and y_prob must both be (n_texts, n_labels), got {y_true.shape} and {y_prob.shape}.")
    if len(y_true) == 0:
        raise ValueError("Cannot compute metrics on 0 rows.")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0/1 (multi-hot targets); did you swap y_true and y_prob?")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob has NaN or infinite values: check the model's outputs.")
    k = tuple(k)
    if any(isinstance(kk, bool) or not isinstance(kk, (int, np.integer)) or kk < 1 for kk in k):
        raise ValueError(f"k must be positive ints (the precision@k cut-offs), got {k!r}.")
    y_true = y_true.astype(int)
    n_labels = y_true.shape[1]
    labels = [str(i) for i in range(n_labels)] if labels is None else [str(x) for x in labels]
    if len(labels) != n_labels:
        raise ValueError(f"{len(labels)} label names for {n_labels} columns.")
    return y_true, y_prob, k, labels


def _summary_metrics(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray,
                     k: tuple[int, ...]) -> tuple[dict[str, float], list[int]]:
    """The report's ``summary`` and the columns left out of ``roc_auc_macro`` (one class only)."""
    s: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for avg in ("micro", "macro", "weighted", "samples"):
            p, r, f, _ = _prfs(y_true, y_pred, avg)
            s[f"f1_{avg}"], s[f"precision_{avg}"], s[f"recall_{avg}"] = float(f), float(p), float(r)
        auc_macro, skipped = roc_auc_present(y_true, y_prob, "macro")
        s["roc_auc_macro"] = auc_macro
        s["roc_auc_micro"] = float(skm.roc_auc_score(y_true.ravel(), y_prob.ravel())) \
            if 0 < y_true.sum() < y_true.size else float("nan")
        has_pos = y_true.sum(0) > 0
        s["average_precision_macro"] = float(skm.average_precision_score(y_true[:, has_pos], y_prob[:, has_pos], average="macro")) \
            if has_pos.any() else float("nan")
        s["average_precision_micro"] = float(skm.average_precision_score(y_true.ravel(), y_prob.ravel())) \
            if y_true.sum() > 0 else float("nan")
    for kk in k:
        s[f"precision_at_{kk}"] = _precision_at_k(y_true, y_prob, kk)
    s["hamming_loss"] = float(skm.hamming_loss(y_true, y_pred))
    s["subset_accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    s["accuracy_multi"] = float((y_true == y_pred).mean())
    return s, skipped


def _per_label_metrics(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, t: np.ndarray,
                       labels: list[str]) -> pd.DataFrame:
    """The report's ``per_label`` table (NaN ROC-AUC for one class, NaN AP without positives)."""
    n_labels = len(labels)
    p, r, f, sup = _prfs(y_true, y_pred, None)
    auc = np.full(n_labels, np.nan)
    ap = np.full(n_labels, np.nan)
    for j in range(n_labels):
        if 0 < y_true[:, j].sum() < len(y_true):
            auc[j] = skm.roc_auc_score(y_true[:, j], y_prob[:, j])
        if y_true[:, j].sum() > 0:
            ap[j] = skm.average_precision_score(y_true[:, j], y_prob[:, j])
    return pd.DataFrame({"support": sup.astype(int), "precision": p, "recall": r, "f1": f, "roc_auc": auc,
                         "average_precision": ap, "threshold": t, "predicted": y_pred.sum(0)},
                        index=pd.Index(labels, name="label"))


def _roc_auc_macro(y_prob: np.ndarray, y_true: np.ndarray) -> float:
    # fastai's AccumMetric calls func(preds, targs) (invert_arg=False); named (not a lambda)
    # so a Learner holding it can be pickled by fastai's export.
    return roc_auc_present(y_true, y_prob, "macro")[0]


def _roc_auc_micro(y_prob: np.ndarray, y_true: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    if not 0 < y_true.sum() < y_true.size:
        return float("nan")
    return float(skm.roc_auc_score(y_true.ravel(), np.asarray(y_prob).ravel()))


def _f1_no_warn(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> float:
    return float(_prfs(y_true, y_pred, average)[2])


#: Metric names accepted by :func:`epoch_metrics`.
EPOCH_METRICS = ("accuracy_multi", "f1_macro", "f1_micro", "f1_weighted", "f1_samples", "roc_auc_macro", "roc_auc_micro")


def epoch_metrics(names: Sequence[str] = ("accuracy_multi", "f1_macro", "f1_micro", "roc_auc_macro", "roc_auc_micro")
                  ) -> list:
    """fastai metrics shown in the per-epoch table (and usable as ``save_best_by``).

    F1 uses threshold 0.5 on sigmoid outputs (scikit-learn's ``f1_score`` via fastai's
    ``skm_to_fastai``, without its zero-division warnings). ``roc_auc_macro`` skips labels
    with a single class in the validation set (fastai's ``RocAucMulti`` raises there);
    ``roc_auc_micro`` pools all (text, label) pairs.

    Args:
        names: some of :data:`EPOCH_METRICS`.

    Returns:
        A list of fastai metric objects.
    """
    from fastai.metrics import AccumMetric, ActivationType, accuracy_multi, skm_to_fastai

    out = []
    for n in names:
        if n == "accuracy_multi":
            out.append(accuracy_multi)
        elif n in ("f1_macro", "f1_micro", "f1_weighted", "f1_samples"):
            m = skm_to_fastai(_f1_no_warn, thresh=0.5, activation=ActivationType.Sigmoid, flatten=False,
                              average=n.split("_")[1])
            m._name = n
            out.append(m)
        elif n in ("roc_auc_macro", "roc_auc_micro"):
            out.append(AccumMetric(_roc_auc_macro if n == "roc_auc_macro" else _roc_auc_micro,
                                   activation=ActivationType.Sigmoid, flatten=False, to_np=True, name=n))
        else:
            raise ValueError(f"Unknown epoch metric {n!r}: expected some of {list(EPOCH_METRICS)}.")
    return out
