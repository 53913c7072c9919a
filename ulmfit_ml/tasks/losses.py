"""Losses: multi-label BCE with ``pos_weight`` and a sigmoid focal loss; the summed per-column
cross-entropy of multi-category heads; MSE / Huber for regression targets.

Trade-off: ``pos_weight`` > 1 up-weights the positives of rare labels, which raises recall
(and usually macro-F1) at the cost of precision and calibration: probabilities are no longer
frequencies, so thresholds should be tuned afterwards. The focal loss down-weights easy
examples instead (``gamma``), which helps when many easy negatives swamp the loss.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["pos_weight_from_labels", "BCEFocalLossFlat", "make_loss", "MultiCategoryLoss", "RegressionLoss"]


def pos_weight_from_labels(y: np.ndarray, *, cap: float = 10.0) -> np.ndarray:
    """``pos_weight`` per label = ``n_negative / n_positive``, clipped to ``[1, cap]``.

    A label with no positive gets ``cap``. This is the weight that balances the positive
    and negative terms of BCE for that label (what ``nn.BCEWithLogitsLoss`` documents),
    capped so very rare labels do not dominate the gradient.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (n_texts, n_labels), got shape {y.shape}.")
    if not cap >= 1:
        raise ValueError(f"cap must be >= 1, got {cap!r}.")
    pos = y.sum(0)
    neg = len(y) - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(pos > 0, neg / np.maximum(pos, 1e-12), cap)
    return np.clip(w, 1.0, cap).astype(np.float32)


class BCEFocalLossFlat(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) for multi-label targets, fastai-compatible.

    fastai's ``FocalLossFlat`` is softmax-based (single-label), hence this small class.
    ``loss = BCE * (1 - p_t) ** gamma``, with optional ``pos_weight`` per label.
    """

    def __init__(self, gamma: float = 2.0, pos_weight: torch.Tensor | None = None, thresh: float = 0.5) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}.")
        self.gamma, self.thresh = float(gamma), thresh
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)

    def forward(self, inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        # plain tensors: fastai's TensorText / TensorMultiCategory subclasses have no
        # __torch_function__ rule for this op outside a Learner (e.g. a hand-written loop)
        targ = targ.float().as_subclass(torch.Tensor)
        inp = inp.float().as_subclass(torch.Tensor)
        bce = F.binary_cross_entropy_with_logits(inp, targ, reduction="none", pos_weight=self.pos_weight)
        p = torch.sigmoid(inp)
        p_t = p * targ + (1 - p) * (1 - targ)
        return (bce * (1 - p_t) ** self.gamma).mean()

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return x > self.thresh


def make_loss(kind: str, *, y_train: np.ndarray, pos_weight: str | float | Sequence[float] | None,
              cap: float = 10.0, gamma: float = 2.0, device: Any = "cpu"):
    """The classifier's loss: fastai ``BCEWithLogitsLossFlat`` or :class:`BCEFocalLossFlat`.

    Args:
        kind: ``"bce"`` or ``"focal"``.
        y_train: training targets ``(n_texts, n_labels)`` (for ``pos_weight="auto"``).
        pos_weight: ``None`` (unweighted), ``"auto"`` (:func:`pos_weight_from_labels` with
            ``cap``), one number for every label, or one number per label.
        cap: upper bound of the ``"auto"`` weights.
        gamma: focal-loss focusing parameter (``0`` gives plain BCE).
        device: where the ``pos_weight`` tensor lives (the model's device).

    Returns:
        A fastai-compatible loss (has ``activation`` = sigmoid and ``decodes``).
    """
    from fastai.losses import BCEWithLogitsLossFlat

    if kind not in ("bce", "focal"):
        raise ValueError(f"loss must be 'bce' or 'focal', got {kind!r}.")
    y_train = np.asarray(y_train)
    if y_train.ndim != 2:
        raise ValueError(f"y_train must be 2-D (n_texts, n_labels), got shape {y_train.shape}.")
    n_labels = y_train.shape[1]
    pw = None
    if isinstance(pos_weight, str):
        if pos_weight != "auto":
            raise ValueError(f"pos_weight must be None, 'auto', a number or one number per label, got {pos_weight!r}.")
        pw = pos_weight_from_labels(y_train, cap=cap)
    elif pos_weight is not None:
        arr = np.broadcast_to(np.asarray(pos_weight, dtype=np.float32), (n_labels,)) if np.ndim(pos_weight) == 0 \
            else np.asarray(pos_weight, dtype=np.float32)
        if arr.shape != (n_labels,):
            raise ValueError(f"pos_weight has {arr.shape[0]} values but there are {n_labels} labels.")
        if (arr <= 0).any() or not np.isfinite(arr).all():
            raise ValueError("pos_weight values must be finite and > 0.")
        pw = arr
    pw_t = torch.tensor(np.array(pw), dtype=torch.float32, device=device) if pw is not None else None
    if kind == "bce":
        return BCEWithLogitsLossFlat(pos_weight=pw_t)
    if kind == "focal":
        return BCEFocalLossFlat(gamma=gamma, pos_weight=pw_t)
    raise ValueError(f"loss must be 'bce' or 'focal', got {kind!r}.")


def _plain(x: torch.Tensor) -> torch.Tensor:
    """fastai's tensor subclasses (``TensorText`` ...) as a plain float/long tensor for ``F`` ops."""
    return x.as_subclass(torch.Tensor)


class MultiCategoryLoss(nn.Module):
    """Multi-category heads: the model's ``sum(sizes)`` outputs are one block of logits per
    category column; the loss is the sum over columns of each block's cross-entropy
    (``F.cross_entropy``, mean over texts, optionally with per-category ``weights``) against
    that column's category index.

    fastai's ``CrossEntropyLossFlat`` takes one block only, hence this class. It has no
    ``activation``: ``get_preds`` returns the logits, split and soft-maxed per column by the
    target spec (:class:`~ulmfit_ml.tasks.multicategory.CategorySpec`).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        if not sizes or any(int(k) < 2 for k in sizes):
            raise ValueError(f"every category column needs >= 2 categories, got sizes {list(sizes)}.")
        self.sizes = [int(k) for k in sizes]
        if weights is not None:
            if len(weights) != len(self.sizes) or any(len(w) != k for w, k in zip(weights, self.sizes)):
                raise ValueError(f"weights need one list per column with one weight per category ({self.sizes}).")
            for j, w in enumerate(weights):  # buffers: they move with the loss to the model's device
                self.register_buffer(f"weight_{j}", torch.tensor(list(w), dtype=torch.float32))
        self.weighted = weights is not None

    def forward(self, inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        inp, targ = _plain(inp).float(), _plain(targ).long()
        blocks = torch.split(inp, self.sizes, dim=1)
        return sum(F.cross_entropy(b, targ[:, j], weight=getattr(self, f"weight_{j}").to(b.device) if self.weighted else None)
                   for j, b in enumerate(blocks))


class RegressionLoss(nn.Module):
    """Mean squared error (``"mse"``) or Huber loss (``"huber"``, ``delta`` in standard
    deviations) between predicted and true targets, both standardised per target (so every
    target weighs the same whatever its unit)."""

    def __init__(self, kind: str = "mse", *, delta: float = 1.0) -> None:
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValueError(f"regression_loss must be 'mse' or 'huber', got {kind!r}.")
        if not delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {delta!r}.")
        self.kind, self.delta = kind, float(delta)

    def forward(self, inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        inp, targ = _plain(inp).float(), _plain(targ).float().view(inp.shape)
        if self.kind == "mse":
            return F.mse_loss(inp, targ)
        return F.huber_loss(inp, targ, delta=self.delta)
