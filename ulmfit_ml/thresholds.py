"""Decision thresholds on predicted probabilities: checks, application and F1 search."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["check_thresholds", "apply_thresholds", "tune_thresholds", "f1_vs_threshold", "DEFAULT_GRID"]

#: Candidate thresholds searched by :func:`tune_thresholds`.
DEFAULT_GRID = np.round(np.arange(0.02, 0.96, 0.01), 2)


def check_thresholds(thresholds: float | Sequence[float] | np.ndarray, n_labels: int) -> np.ndarray:
    """Broadcast a scalar or check a per-label array; return float64 shape ``(n_labels,)``."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n_labels, float(t))
    if t.shape != (n_labels,):
        raise ValueError(f"Expected one threshold or {n_labels} (one per label), got shape {t.shape}.")
    if not np.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError("Thresholds must be finite numbers in [0, 1].")
    return t


def apply_thresholds(y_prob: np.ndarray, thresholds: float | Sequence[float] | np.ndarray, *,
                     at_least_one: bool = False) -> np.ndarray:
    """Boolean predictions ``y_prob >= threshold`` (per label).

    With ``at_least_one``, a row where no label passes gets its most probable label.
    """
    y_prob = np.asarray(y_prob)
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be 2-D (n_texts, n_labels), got shape {y_prob.shape}.")
    t = check_thresholds(thresholds, y_prob.shape[1])
    pred = y_prob >= t[None, :]
    if at_least_one and len(pred):
        empty = ~pred.any(axis=1)
        pred[np.flatnonzero(empty), y_prob[empty].argmax(axis=1)] = True
    return pred


def _f1_per_label_at(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of every label at every grid threshold, shape ``(len(grid), n_labels)``.

    Vectorised over the grid (sklearn's ``f1_score`` per threshold would be ~100 calls per
    label); equals ``sklearn.metrics.f1_score(..., average=None, zero_division=0)``, which
    the tests check.
    """
    y = y_true.astype(bool)
    pred = y_prob[None, :, :] >= grid[:, None, None]
    tp = (pred & y[None]).sum(1)
    fp = (pred & ~y[None]).sum(1)
    fn = (~pred & y[None]).sum(1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def f1_vs_threshold(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, macro_f1, micro_f1)`` with one global threshold at each grid value."""
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    y_true, y_prob = _check_pair(y_true, y_prob)
    per = _f1_per_label_at(y_true, y_prob, grid)
    y = y_true.astype(bool)
    pred = y_prob[None] >= grid[:, None, None]
    tp = (pred & y[None]).sum((1, 2))
    fp = (pred & ~y[None]).sum((1, 2))
    fn = (~pred & y[None]).sum((1, 2))
    micro = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return grid, per.mean(1), micro


def _check_pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if y_true.shape != y_prob.shape or y_true.ndim != 2:
        raise ValueError(f"y_true and y_prob must both be (n_texts, n_labels); got {y_true.shape} and {y_prob.shape}.")
    if len(y_true) == 0:
        raise ValueError("Cannot tune thresholds on 0 rows.")
    return y_true, y_prob


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, *, strategy: str = "per_label",
                    min_positives: int = 5, grid: Sequence[float] | None = None) -> np.ndarray:
    """Thresholds that maximise F1 on ``(y_true, y_prob)``.

    Args:
        strategy: ``"global"``: one threshold for all labels maximising macro-F1;
            ``"per_label"``: each label's own F1-maximising threshold, except labels with
            fewer than ``min_positives`` positives, which fall back to the global one
            (a threshold fitted on 1-2 positives is noise).
        grid: candidate thresholds (default 0.02 .. 0.95 step 0.01).

    Returns:
        float64 array ``(n_labels,)``.
    """
    if strategy not in ("global", "per_label"):
        raise ValueError(f"strategy must be 'global' or 'per_label', got {strategy!r}.")
    y_true, y_prob = _check_pair(y_true, y_prob)
    g = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    per = _f1_per_label_at(y_true, y_prob, g)  # (grid, labels)
    global_t = float(g[int(np.argmax(per.mean(1)))])
    out = np.full(y_true.shape[1], global_t)
    if strategy == "per_label":
        pos = y_true.sum(0)
        best = g[np.argmax(per, axis=0)]
        ok = pos >= min_positives
        out[ok] = best[ok]
    return out
