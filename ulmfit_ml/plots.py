"""Diagnostic plots (matplotlib) and the learning-rate finder.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global figure state, nothing shown, works under the ``Agg`` backend and in notebooks);
save it with ``fig.savefig("loss.png")``.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .data import MultiLabelData
from .metrics import MultiLabelReport
from .thresholds import f1_vs_threshold

__all__ = [
    "plot_loss",
    "plot_per_label_f1",
    "plot_f1_vs_threshold",
    "plot_label_frequency",
    "plot_labels_per_text",
    "plot_lr_find",
    "lr_find",
    "LRFindResult",
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
        source: a trained :class:`~ulmfit_ml.classifier.MultiLabelClassifier` or
            :class:`~ulmfit_ml.lm.LanguageModel` (their ``history``; per-batch losses come
            from a ``batch_losses`` attribute when present, else from the in-memory fastai
            learner's recorder, which fastai clears on ``get_preds``), a history
            DataFrame (``epoch``, ``train_loss``, ``valid_loss``, optional ``stage``) or a
            fastai ``Learner``.
        per_batch: add a second panel with the per-batch losses when available.

    Returns:
        The figure; stage boundaries (gradual unfreezing) are dotted lines.
    """
    from ._train import history_frame

    learner = None
    if isinstance(source, pd.DataFrame):
        hist = source
    elif _is_learner(source):
        learner = source
        hist = history_frame(source, "fit") if getattr(source.recorder, "values", None) else pd.DataFrame()
    elif hasattr(source, "history"):
        hist = source.history if source.history is not None else pd.DataFrame()
        learner = getattr(source, "learner", None)
    else:
        raise TypeError(f"plot_loss expects a classifier, a language model, a history DataFrame or a fastai Learner, "
                        f"got {type(source).__name__}.")
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
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    k = 0
    if has_epochs:
        ax = axes[k]
        k += 1
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
    if len(batches):
        ax = axes[k]
        ax.plot(np.arange(1, len(batches) + 1), batches, lw=1)
        ax.set_xlabel("batch")
        ax.set_ylabel("smoothed train loss")
        ax.set_title("loss per batch")
    return fig


# ---------------------------------------------------------------------- evaluation
def plot_per_label_f1(report: MultiLabelReport | pd.DataFrame, *, metric: str = "f1") -> Figure:
    """Horizontal bars of a per-label metric, labels sorted by support (most frequent on top).

    Args:
        report: a :class:`~ulmfit_ml.metrics.MultiLabelReport` or its ``per_label`` table.
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
@dataclass
class LRFindResult:
    """Output of :func:`lr_find`: the loss curve and fastai's suggested learning rates."""

    stage: str
    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)

    @property
    def figure(self) -> Figure:
        """The loss-vs-learning-rate plot (:func:`plot_lr_find`)."""
        return plot_lr_find(self)


def plot_lr_find(result: LRFindResult | Any, *, skip_end: int = 5) -> Figure:
    """Smoothed loss vs learning rate (log scale) with the suggestions marked.

    Args:
        result: an :class:`LRFindResult`, or a fastai ``Learner`` right after ``learn.lr_find()``.
        skip_end: drop the last points (the loss blows up there) when given a Learner.
    """
    if isinstance(result, LRFindResult):
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


def _lm_learner(data: MultiLabelData, options: dict[str, Any], config: Any) -> tuple[Any, bool]:
    from fastai.metrics import accuracy

    from ._train import resolve_device, seed_everything
    from .config import LMConfig, merge_config
    from .lm import _pretrained_weights, build_lm_learner, lm_arch_config

    cfg = merge_config(LMConfig, config, options)
    device = resolve_device(cfg.device)
    start = _pretrained_weights(cfg.pretrained, lm_arch_config(cfg.arch), cfg.backwards)
    seed_everything(cfg.seed)
    dls = data.lm_dataloaders(bs=cfg.bs, seq_len=cfg.seq_len, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab,
                              backwards=cfg.backwards, seed=cfg.seed, device=device)
    learn = build_lm_learner(dls, cfg, start=start, metrics=[accuracy])
    learn.unfreeze()  # the long, unfrozen LM stage
    return learn, cfg.quiet


def _classifier_learner(data: MultiLabelData, encoder: Any, options: dict[str, Any], config: Any) -> tuple[Any, bool]:
    from .classifier import build_classifier_learner
    from .config import ClassifierConfig, merge_config

    arch = options.pop("arch", "cpu")
    cfg = merge_config(ClassifierConfig, config, options)
    learn = build_classifier_learner(data, encoder, cfg, arch=arch)[0]
    k = cfg.unfreeze[0]  # the first gradual-unfreezing stage
    if k == 0:
        learn.unfreeze()
    else:
        learn.freeze_to(-k)
    return learn, cfg.quiet


def lr_find(data: MultiLabelData, *, stage: str = "classifier", encoder: Any = None, config: Any = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, **options: Any) -> LRFindResult:
    """fastai's learning-rate finder (``learn.lr_find``) for either ULMFiT stage.

    The model is built as :func:`~ulmfit_ml.finetune_lm` (``stage="lm"``, unfrozen) or
    :func:`~ulmfit_ml.train_classifier` (``stage="classifier"``, frozen as in its first
    gradual-unfreezing stage) would build it; nothing is kept after the search.

    Args:
        data: a :class:`~ulmfit_ml.data.MultiLabelData`.
        stage: ``"lm"`` or ``"classifier"``.
        encoder: classifier stage only: a :class:`~ulmfit_ml.lm.LanguageModel`, its saved
            directory, or ``None`` (random encoder of size ``arch=``).
        config: an ``LMConfig`` or ``ClassifierConfig``; ``options`` override its fields
            (``arch``, ``bs``, ``seq_len``, ``pretrained``, ``device``, ``quiet`` ...).
        start_lr, end_lr, num_it: the exponential learning-rate sweep.

    Returns:
        :class:`LRFindResult` with the curve, fastai's ``valley``/``slide``/``minimum``/
        ``steep`` suggestions and ``.figure``.
    """
    import torch
    from fastai.callback.schedule import minimum, slide, steep, valley

    from ._train import quiet_mode

    data = _check_data(data, "lr_find")
    if stage not in ("lm", "classifier"):
        raise ValueError(f"stage must be 'lm' or 'classifier', got {stage!r}.")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}.")
    if isinstance(num_it, bool) or not isinstance(num_it, int) or num_it < 6:
        raise ValueError(f"num_it must be an int >= 6, got {num_it!r}.")
    if stage == "lm":
        if encoder is not None:
            raise ValueError("encoder= is for stage='classifier'; the LM stage starts from pretrained= weights.")
        learn, quiet = _lm_learner(data, dict(options), config)
    else:
        learn, quiet = _classifier_learner(data, encoder, dict(options), config)
    workdir = Path(tempfile.mkdtemp(prefix="ulmfit_ml_lrfind_"))
    learn.path = workdir  # fastai saves the weights to restore them after the sweep
    try:
        with quiet_mode(learn, quiet):
            learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False, suggest_funcs=None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rec = learn.recorder
    lrs = np.asarray([float(v) for v in rec.lrs])
    losses = np.asarray([float(v) for v in rec.losses])
    # fastai's own suggestion functions on the window fastai's lr_find uses
    a, b = num_it // 10, len(lrs) - 5
    t_lrs, t_losses = torch.tensor(lrs[a:b]), torch.tensor(losses[a:b])
    finite = torch.isfinite(t_losses)
    if not finite.all():
        cut = int(torch.nonzero(~finite)[0])
        t_lrs, t_losses = t_lrs[:cut], t_losses[:cut]
    sugg: dict[str, float] = {}
    for fn in (valley, slide, minimum, steep) if len(t_lrs) >= 2 else ():
        try:
            sugg[fn.__name__] = float(fn(t_lrs, t_losses, num_it)[0])
        except (IndexError, RuntimeError, ValueError):  # too few points (a short sweep on tiny data)
            sugg[fn.__name__] = float("nan")
    return LRFindResult(stage=stage, lrs=lrs, losses=losses, suggestions=sugg)
