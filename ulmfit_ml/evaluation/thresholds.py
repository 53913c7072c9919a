"""Decision thresholds on predicted probabilities: checks, application and F1 search."""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["check_thresholds", "apply_thresholds", "tune_thresholds", "f1_vs_threshold", "DEFAULT_GRID"]

#: Candidate thresholds searched by :func:`tune_thresholds`.
DEFAULT_GRID = np.round(np.arange(0.02, 0.96, 0.01), 2)


def _not_a_number(x: Any) -> bool:
    """True for what numpy would read as a threshold without being a number: bools (True is
    1.0), strings ('0.3'), bytes, None and other objects."""
    if isinstance(x, (bool, np.bool_, str, bytes, np.str_, np.bytes_)):
        return True
    return not isinstance(x, (numbers.Real, np.integer, np.floating))


def _check_threshold_types(thresholds: Any, name: str) -> None:
    """The type half of :func:`check_thresholds`: numbers only, never a bool or a string."""
    if isinstance(thresholds, np.ndarray) and thresholds.dtype.kind in "iuf":
        return
    if isinstance(thresholds, (np.ndarray, list, tuple, pd.Series, pd.Index)):
        items = list(np.asarray(thresholds, dtype=object).ravel()) if isinstance(thresholds, np.ndarray) \
            else list(thresholds)
        where = [(f"{name}[{i}]", x) for i, x in enumerate(items) if _not_a_number(x)]
    else:
        where = [(name, thresholds)] if _not_a_number(thresholds) else []
    if not where:
        return
    label, x = where[0]
    more = f" ({len(where)} such values)" if len(where) > 1 else ""
    if isinstance(x, (bool, np.bool_)):
        fix = (f"{bool(x)} is not read as {float(x)}: pass a number, e.g. {name}=0.5 (one for every label) or one "
               "number per label")
    elif isinstance(x, (str, bytes, np.str_, np.bytes_)):
        try:
            num = float(x)
        except ValueError:
            num = None
        fix = (f"convert it first: {name}={num!r}" if num is not None and np.isfinite(num) else
               f"pass a number, e.g. {name}=0.5") + " (strings are not read as numbers)"
    else:
        fix = f"pass a number in [0, 1], e.g. {name}=0.5, or one number per label"
    raise TypeError(f"{label} = {x!r}{more}: a threshold must be a number in [0, 1], got {type(x).__name__}; {fix}.")


def check_thresholds(thresholds: float | Sequence[float] | np.ndarray, n_labels: int, *,
                     name: str = "threshold") -> np.ndarray:
    """Broadcast a scalar or check a per-label array; return float64 shape ``(n_labels,)``.

    The one check of every threshold a user gives (``predict``, ``predict_file``, ``evaluate``,
    ``report``, the CLI's ``--threshold``, ``cross_validate``, ``clf.thresholds`` at save).

    Raises:
        TypeError: a bool (``True`` would be read as 1.0), a string (``'0.3'``) or another
            non-number, named with the fix.
        ValueError: the wrong number of thresholds, or one outside [0, 1].
    """
    _check_threshold_types(thresholds, name)
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


def _counts_at(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives of every label at every grid
    threshold, each of shape ``(len(grid), n_labels)``.

    Hand-rolled (one vectorised pass per threshold, memory ``n_texts x n_labels``) because
    sklearn's ``f1_score`` per threshold and label would be thousands of calls; the tests
    check it equals ``sklearn.metrics.f1_score(..., zero_division=0)``.
    """
    y = y_true.astype(bool)
    n_pos = y.sum(0)
    tp = np.empty((len(grid), y.shape[1]), dtype=np.int64)
    n_pred = np.empty_like(tp)
    for i, t in enumerate(grid):
        pred = y_prob >= t
        tp[i] = (pred & y).sum(0)
        n_pred[i] = pred.sum(0)
    return tp, n_pred - tp, n_pos[None, :] - tp


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # zero_division=0, as sklearn


def _f1_per_label_at(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of every label at every grid threshold, shape ``(len(grid), n_labels)``."""
    return _f1(*_counts_at(y_true, y_prob, grid))


def _check_grid(grid: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if grid is None:
        return DEFAULT_GRID
    g = np.asarray(grid, dtype=np.float64).ravel()
    if g.size == 0 or not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
        raise ValueError("grid must be a non-empty sequence of thresholds in [0, 1], e.g. np.arange(0.05, 0.95, 0.01).")
    return g


def f1_vs_threshold(y_true: np.ndarray, y_prob: np.ndarray, grid: Sequence[float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Macro- and micro-F1 when one global threshold is used for every label.

    Args:
        y_true: 0/1 array ``(n_texts, n_labels)``.
        y_prob: probabilities of the same shape.
        grid: candidate thresholds (default :data:`DEFAULT_GRID`).

    Returns:
        ``(grid, macro_f1, micro_f1)``, three float arrays of length ``len(grid)``.
    """
    g = _check_grid(grid)
    y_true, y_prob = _check_pair(y_true, y_prob)
    tp, fp, fn = _counts_at(y_true, y_prob, g)
    micro = _f1(tp.sum(1), fp.sum(1), fn.sum(1))
    return g, _f1(tp, fp, fn).mean(1), micro


def _check_pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if y_true.shape != y_prob.shape or y_true.ndim != 2:
        raise ValueError(f"y_true and y_prob must both be (n_texts, n_labels); got {y_true.shape} and {y_prob.shape}.")
    if len(y_true) == 0:
        raise ValueError("Cannot tune thresholds on 0 rows.")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0/1 (multi-hot targets); did you swap y_true and y_prob?")
    return y_true, y_prob


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, *, strategy: str = "per_label",
                    min_positives: int = 5, shrink: float = 10.0, grid: Sequence[float] | None = None,
                    labels: Sequence[str] | None = None) -> np.ndarray:
    """Thresholds that maximise F1 on ``(y_true, y_prob)``.

    Data too small to tune on is never used silently (a ``UserWarning`` with the count says
    what is kept):

    - no positive at all, or fewer than ``min_positives`` positives over all labels (e.g. a
      1-row frame): every threshold stays 0.5 (untuned);
    - ``"per_label"``: labels with fewer than ``min_positives`` positives (a label without
      positives always) keep the global threshold.

    Args:
        strategy: ``"global"``: one threshold for all labels maximising macro-F1;
            ``"per_label"``: each label's own F1-maximising threshold ``t``, pulled toward the
            global one ``g`` by its number of positives ``k``: ``(k t + shrink g) / (k + shrink)``
            (a label seen 200 times keeps about its own, one seen 5 times lands a third of the way);
            labels with fewer than ``min_positives`` positives take the global one.
        shrink: the pull toward the global threshold, in positives (``0``: each label's own
            threshold as it is). The default 10 was measured on validation splits of 100 to 1,600
            rows (bench/RESULTS.md, "Small data"): dev macro-F1 at or near the best of every
            strategy at each size, where unshrunk per-label thresholds lost up to 0.03.
        grid: candidate thresholds (default 0.02 .. 0.95 step 0.01).
        labels: the label names, for the warnings.

    Returns:
        float64 array ``(n_labels,)``.
    """
    if strategy not in ("global", "per_label"):
        raise ValueError(f"strategy must be 'global' or 'per_label', got {strategy!r}.")
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float, np.integer, np.floating)) or not shrink >= 0:
        raise ValueError(f"shrink must be a number >= 0 (0: no pull toward the global threshold), got {shrink!r}.")
    if isinstance(min_positives, bool) or not isinstance(min_positives, (int, np.integer)) or min_positives < 0:
        raise ValueError(f"min_positives must be an int >= 0, got {min_positives!r}.")
    y_true, y_prob = _check_pair(y_true, y_prob)
    g = _check_grid(grid)
    per = _f1_per_label_at(y_true, y_prob, g)  # (grid, labels)
    if not y_true.any():
        warnings.warn("No label has a positive example in the data the thresholds are tuned on: every F1 is 0, so "
                      "the thresholds are 0.5 (untuned). Tune them on labelled data with positives.",
                      UserWarning, stacklevel=2)
        return np.full(y_true.shape[1], 0.5)
    n_rows, n_labels = y_true.shape
    pos = y_true.sum(0).astype(np.int64)
    if pos.sum() < min_positives:
        warnings.warn(f"Only {int(pos.sum())} positive example(s) in the {n_rows} row(s) the thresholds are tuned "
                      f"on (fewer than min_positives={min_positives}): a threshold fitted on so few is noise, so "
                      f"all {n_labels} thresholds stay 0.5 (untuned). Tune them on more labelled rows (or lower "
                      "min_positives).", UserWarning, stacklevel=2)
        return np.full(n_labels, 0.5)
    global_t = _plateau_middle(g, per.mean(1))
    out = np.full(n_labels, global_t)
    if strategy == "per_label":
        for j in np.flatnonzero(pos >= max(min_positives, 1)):  # a label without positives has no F1 to maximise
            own = _plateau_middle(g, per[:, j])
            out[j] = own + (global_t - own) * shrink / (pos[j] + shrink)  # = (k own + shrink g) / (k + shrink)
        _warn_few_positives(np.flatnonzero(pos < max(min_positives, 1)), labels, n_labels=n_labels, n_rows=n_rows,
                            min_positives=max(min_positives, 1), global_t=global_t)
    return out


def _warn_few_positives(few: np.ndarray, labels: Sequence[str] | None, *, n_labels: int, n_rows: int,
                        min_positives: int, global_t: float) -> None:
    """The warning naming the labels that keep the global threshold (too few positives), to the
    caller of :func:`tune_thresholds`."""
    if not len(few):
        return
    named = labels is not None and len(labels) == n_labels
    names = [labels[j] for j in few] if named else few.tolist()
    shown = ("" if named else "at column(s) ") + ", ".join(map(repr, names[:5])) + \
        (f" and {len(names) - 5} more" if len(names) > 5 else "")
    warnings.warn(f"{len(few)} of {n_labels} label(s) have fewer than min_positives={min_positives} "
                  f"positive example(s) in the {n_rows} row(s) the thresholds are tuned on ({shown}): they "
                  f"keep the global threshold {global_t:.2f} instead of one of their own.",
                  UserWarning, stacklevel=3)


def _plateau_middle(grid: np.ndarray, f1: np.ndarray) -> float:
    """The middle of the thresholds that reach the best F1.

    On well-separated labels F1 is flat over a wide range; taking its first point (plain
    argmax) puts the threshold right next to the negatives and generalises badly.
    """
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(grid[best[len(best) // 2]])
