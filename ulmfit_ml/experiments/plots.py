"""Diagnostic plots (matplotlib). Plots draw; they do not train (the learning-rate finder is
:mod:`ulmfit_ml.experiments.lr_find`).

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global figure state, nothing shown, works under the ``Agg`` backend and in notebooks);
save it with ``fig.savefig("loss.png")``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.core import MultiLabelData
from ..evaluation.metrics import MultiLabelReport
from ..utils.runtime import history_frame
from ..evaluation.thresholds import f1_vs_threshold

__all__ = [
    "plot_loss",
    "plot_per_label_f1",
    "plot_f1_vs_threshold",
    "plot_label_frequency",
    "plot_labels_per_text",
    "plot_lr_find",
]


# ---------------------------------------------------------------------- training curves
def _is_learner(obj: Any) -> bool:
    from fastai.learner import Learner

    return isinstance(obj, Learner)


def _batch_losses(learner: Any) -> np.ndarray:
    rec = getattr(learner, "recorder", None) if learner is not None else None
    losses = getattr(rec, "losses", None) or []
    return np.array([float(v) for v in losses], dtype=np.float64)


def plot_loss(source: Any, *, per_batch: bool = True) -> Figure:
    """Training and validation loss per epoch (+ fastai's per-batch smoothed training loss).

    Args:
        source: a trained :class:`~ulmfit_ml.training.trainer.MultiLabelClassifier` or
            :class:`~ulmfit_ml.models.lm.LanguageModel` (their ``history``; per-batch losses from
            their ``batch_losses`` when training recorded them), a history
            DataFrame (``epoch``, ``train_loss``, ``valid_loss``, optional ``stage``) or a
            fastai ``Learner``.
        per_batch: add a second panel with the per-batch losses when available.

    Returns:
        The figure; stage boundaries (gradual unfreezing) are dotted lines.
    """
    hist, learner = _loss_history(source)
    stored = getattr(source, "batch_losses", None)  # per-batch losses kept by the trainer, when it keeps them
    if not per_batch:
        batches = np.zeros(0)
    elif stored is not None and len(stored):
        batches = np.asarray(stored, dtype=np.float64)
    else:
        batches = _batch_losses(learner)
    has_epochs = len(hist) > 0 and "train_loss" in hist.columns
    if not has_epochs and not len(batches):
        raise ValueError("Nothing to plot: the history has no 'train_loss' column and no per-batch losses are "
                         "recorded (a loaded model keeps its history only if history.csv was saved).")
    n_panels = int(has_epochs) + int(len(batches) > 0)
    fig = Figure(figsize=(6 * n_panels, 4), layout="constrained")
    axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    if has_epochs:
        _draw_epoch_losses(axes.pop(0), hist)
    if len(batches):
        ax = axes[0]
        ax.plot(np.arange(1, len(batches) + 1), batches, lw=1)
        ax.set_xlabel("batch")
        ax.set_ylabel("smoothed train loss")
        ax.set_title("loss per batch")
    return fig


def _loss_history(source: Any) -> tuple[pd.DataFrame, Any]:
    """``(per-epoch history, the fastai Learner or None)`` of what :func:`plot_loss` was given."""
    if isinstance(source, pd.DataFrame):
        return source, None
    if _is_learner(source):
        return (history_frame(source, "fit") if getattr(source.recorder, "values", None) else pd.DataFrame()), source
    if hasattr(source, "history"):
        return (source.history if source.history is not None else pd.DataFrame()), None
    raise TypeError(f"plot_loss expects a classifier, a language model, a history DataFrame or a fastai Learner, "
                    f"got {type(source).__name__}.")


def _draw_epoch_losses(ax: Any, hist: pd.DataFrame) -> None:
    """Train (and valid) loss per epoch, stage boundaries dotted."""
    x = hist["epoch"].to_numpy() + 1 if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
    ax.plot(x, hist["train_loss"].to_numpy(dtype=float), "o-", label="train")
    if "valid_loss" in hist.columns:
        ax.plot(x, hist["valid_loss"].to_numpy(dtype=float), "s-", label="valid")
    if "stage" in hist.columns:
        stages = hist["stage"].astype(str).to_numpy()
        for i in np.flatnonzero(stages[1:] != stages[:-1]) + 1:
            ax.axvline(x[i] - 0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss per epoch")
    ax.legend()


# ---------------------------------------------------------------------- evaluation
def plot_per_label_f1(report: MultiLabelReport | pd.DataFrame, *, metric: str = "f1") -> Figure:
    """Horizontal bars of a per-label metric, labels sorted by support (most frequent on top).

    Args:
        report: a :class:`~ulmfit_ml.evaluation.metrics.MultiLabelReport` or its ``per_label`` table.
        metric: a column of the table (``"f1"``, ``"precision"``, ``"recall"``, ``"roc_auc"`` ...).
    """
    per = report.per_label if isinstance(report, MultiLabelReport) else report
    if not isinstance(per, pd.DataFrame):
        raise TypeError(f"plot_per_label_f1 expects a MultiLabelReport or its per_label DataFrame, got {type(report).__name__}.")
    for col in (metric, "support"):
        if col not in per.columns:
            raise ValueError(f"The per-label table has no {col!r} column; columns are {list(per.columns)}.")
    per = per.sort_values("support", ascending=True, kind="stable")  # barh draws bottom-up
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(per) + 1)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(per))
    vals = per[metric].to_numpy(dtype=float)
    ax.barh(y, np.nan_to_num(vals), color="tab:blue")
    ax.set_yticks(y, [str(i) for i in per.index])
    for yi, v, n in zip(y, vals, per["support"].to_numpy()):
        ax.text(min(np.nan_to_num(v), 1.0) + 0.01, yi, f"{v:.2f} (n={int(n)})", va="center", fontsize=8)
    ax.set_xlim(0, 1.25)
    ax.set_xlabel(metric)
    ax.set_title(f"per-label {metric}, sorted by support")
    return fig


def plot_f1_vs_threshold(y_true: np.ndarray, y_prob: np.ndarray, *, grid: Sequence[float] | None = None) -> Figure:
    """Macro- and micro-F1 when one global threshold is used for all labels.

    Marks the default 0.5 and the best macro-F1 threshold. Use the validation split's
    ``(y_true, probabilities)``, e.g. ``clf._valid`` or ``(data.y_valid, clf.predict_proba(data.valid_texts))``.
    """
    g, macro, micro = f1_vs_threshold(y_true, y_prob, grid)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(g, macro, label="macro-F1")
    ax.plot(g, micro, label="micro-F1")
    best = int(np.argmax(macro))
    ax.axvline(0.5, color="grey", ls=":", lw=1, label="0.5")
    ax.plot([g[best]], [macro[best]], "o", color="tab:red", label=f"best macro-F1 {macro[best]:.3f} at {g[best]:.2f}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.set_title("F1 vs global threshold")
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------- data
def _check_data(data: Any, fn: str) -> MultiLabelData:
    if not isinstance(data, MultiLabelData):
        raise TypeError(f"{fn} expects a MultiLabelData (um.MultiLabelData.from_df(...)), got {type(data).__name__}.")
    return data


def plot_label_frequency(data: MultiLabelData) -> Figure:
    """Positives per label in the training and validation splits, most frequent on top."""
    counts = _check_data(data, "plot_label_frequency").label_counts()
    counts = counts.assign(_total=counts.sum(1)).sort_values("_total", kind="stable")
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(counts) + 1)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(counts))
    ax.barh(y, counts["train"], label="train")
    ax.barh(y, counts["valid"], left=counts["train"], label="valid")
    ax.set_yticks(y, [str(i) for i in counts.index])
    ax.set_xlabel("texts with the label")
    ax.set_title(f"label frequency ({len(data.texts)} texts)")
    ax.legend()
    return fig


def plot_labels_per_text(data: MultiLabelData) -> Figure:
    """Histogram of the number of labels per text (0 = no label), train and validation."""
    d = _check_data(data, "plot_labels_per_text")
    n = d.y.sum(1).astype(int)
    width = 0.4
    k = np.arange(int(n.max()) + 1)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(k - width / 2, np.bincount(n[~d.is_valid], minlength=len(k)), width, label="train")
    ax.bar(k + width / 2, np.bincount(n[d.is_valid], minlength=len(k)), width, label="valid")
    ax.set_xticks(k)
    ax.set_xlabel("labels per text")
    ax.set_ylabel("texts")
    ax.set_title(f"labels per text (mean {n.mean():.2f})")
    ax.legend()
    return fig


# ---------------------------------------------------------------------- learning-rate finder
def plot_lr_find(result: Any, *, skip_end: int = 5) -> Figure:
    """Smoothed loss vs learning rate (log scale) with the suggestions marked.

    Args:
        result: an :class:`~ulmfit_ml.experiments.lr_find.LRFindResult`, or a fastai ``Learner`` right after ``learn.lr_find()``.
        skip_end: drop the last points (the loss blows up there) when given a Learner.
    """
    if hasattr(result, "suggestions") and hasattr(result, "lrs"):  # an LRFindResult
        lrs, losses, sugg, title = result.lrs, result.losses, result.suggestions, f"LR finder ({result.stage})"
    elif _is_learner(result):
        rec = result.recorder
        end = -skip_end if skip_end else None
        lrs = np.asarray([float(v) for v in getattr(rec, "lrs", [])][:end])
        losses = np.asarray([float(v) for v in getattr(rec, "losses", [])][:end])
        sugg, title = {}, "LR finder"
    else:
        raise TypeError(f"plot_lr_find expects an LRFindResult or a fastai Learner, got {type(result).__name__}.")
    if len(lrs) == 0:
        raise ValueError("No learning-rate curve to plot: run lr_find first.")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    order = np.argsort(lrs)
    for name, lr in sugg.items():
        if np.isfinite(lr):
            ax.plot([lr], [np.interp(lr, lrs[order], losses[order])], "o", label=f"{name}: {lr:.1e}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.set_title(title)
    if sugg:
        ax.legend(fontsize=8)
    return fig
