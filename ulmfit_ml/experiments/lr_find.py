"""fastai's learning-rate finder for either ULMFiT stage, on the learner the trainers build."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..training.trainer import ClassifierTrainer
from ..data.core import MultiLabelData
from ..training.finetune import LMTrainer
from .plots import plot_lr_find
from ..utils.arch import check_at_most
from ..utils.runtime import progress_mode

__all__ = ["lr_find", "LRFindResult"]

#: lr_find iterations (batches); fastai's default is 100
_MAX_NUM_IT = 10_000


@dataclass
class LRFindResult:
    """Output of :func:`lr_find`: the loss curve and fastai's suggested learning rates."""

    stage: str
    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)

    @property
    def figure(self) -> Figure:
        """The loss-vs-learning-rate plot (:func:`~ulmfit_ml.experiments.plots.plot_lr_find`)."""
        return plot_lr_find(self)


def lr_find(data: MultiLabelData, *, stage: str = "classifier", encoder: Any = None, config: Any = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, **options: Any) -> LRFindResult:
    """fastai's learning-rate finder (``learn.lr_find``) for either ULMFiT stage.

    The model is built as :func:`~ulmfit_ml.finetune_lm` (``stage="lm"``, unfrozen) or
    :func:`~ulmfit_ml.train_classifier` (``stage="classifier"``, frozen as in its first
    gradual-unfreezing stage) would build it; nothing is kept after the search.

    Args:
        data: a :class:`~ulmfit_ml.data.core.MultiLabelData`.
        stage: ``"lm"`` or ``"classifier"``.
        encoder: classifier stage only: a :class:`~ulmfit_ml.models.lm.LanguageModel`, its saved
            directory, or ``None`` (random encoder of size ``arch=``).
        config: an ``LMConfig`` or ``ClassifierConfig``; ``options`` override its fields
            (``arch``, ``bs``, ``seq_len``, ``pretrained``, ``device``, ``quiet`` ...).
        start_lr, end_lr, num_it: the exponential learning-rate sweep.

    Returns:
        :class:`LRFindResult` with the curve, fastai's ``valley``/``slide``/``minimum``/
        ``steep`` suggestions and ``.figure``.
    """
    _check_sweep(data, stage, start_lr, end_lr, num_it)
    learn, quiet = _stage_learner(data, stage, encoder, config, options)
    workdir = Path(tempfile.mkdtemp(prefix="ulmfit_ml_lrfind_"))
    learn.path = workdir  # fastai saves the weights to restore them after the sweep
    try:
        with progress_mode(learn, quiet):
            learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False, suggest_funcs=None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # our own mkdtemp directory (fastai's saved weights)
    rec = learn.recorder
    lrs = np.asarray([float(v) for v in rec.lrs])
    losses = np.asarray([float(v) for v in rec.losses])
    return LRFindResult(stage=stage, lrs=lrs, losses=losses, suggestions=_suggestions(lrs, losses, num_it))


def _check_sweep(data: Any, stage: str, start_lr: float, end_lr: float, num_it: int) -> None:
    if not isinstance(data, MultiLabelData):
        raise TypeError(f"lr_find expects a MultiLabelData (um.MultiLabelData.from_df(...)), got {type(data).__name__}.")
    if stage not in ("lm", "classifier"):
        raise ValueError(f"stage must be 'lm' or 'classifier', got {stage!r}.")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}.")
    if isinstance(num_it, bool) or not isinstance(num_it, int) or num_it < 6:
        raise ValueError(f"num_it must be an int >= 6, got {num_it!r}.")
    check_at_most("num_it", num_it, _MAX_NUM_IT, "each iteration is one training batch, fastai sets up the epochs "
                  "they span before the first one (its progress bar lists them) and the sweep needs ~100 (fastai's default)")


def _stage_learner(data: MultiLabelData, stage: str, encoder: Any, config: Any,
                   options: dict[str, Any]) -> tuple[Any, bool]:
    """``(learner, quiet)`` built by the stage's trainer, unfrozen as its first stage trains."""
    if stage == "lm":
        if encoder is not None:
            raise ValueError("encoder= is for stage='classifier'; the LM stage starts from pretrained= weights.")
        lm_trainer = LMTrainer(data, config=config, **options)
        learn, quiet = lm_trainer.learner, lm_trainer.config.quiet
        learn.unfreeze()  # the long, unfrozen LM stage
        return learn, quiet
    trainer = ClassifierTrainer(data, encoder=encoder, config=config, **options)
    learn, quiet = trainer.learner, trainer.config.quiet
    k = trainer.config.unfreeze[0]  # the first gradual-unfreezing stage
    if k == 0:
        learn.unfreeze()
    else:
        learn.freeze_to(-k)
    return learn, quiet


def _suggestions(lrs: np.ndarray, losses: np.ndarray, num_it: int) -> dict[str, float]:
    """fastai's own suggestion functions on the window fastai's lr_find uses (NaN where too few points)."""
    from fastai.callback.schedule import minimum, slide, steep, valley

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
    return sugg
