"""Targets other than multi-label 0/1: multi-category columns and numeric regression targets.

A *target spec* is the one place that knows how a kind of target is read from a frame,
validated, encoded for training, scored and decoded:

* :class:`CategorySpec`: several columns that each take one of a few categories (``ekman``:
  joy / anger / ..., ``sentiment``: positive / negative / ...). One softmax head per column.
* :class:`RegressionSpec`: several numeric columns (a 1-10 star rating ...). Targets are
  standardised per column from the training rows; predictions are in the original units.

Multi-label targets keep :class:`~ulmfit_ml.validation.LabelSpec`. Data, model, trainer and
predict delegate every kind-specific step to the spec, so a new kind of target is one class here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from .losses import MultiCategoryLoss, RegressionLoss
from ..utils.validation import check_columns, column_keys

__all__ = ["CategorySpec", "RegressionSpec", "target_spec_from_dict", "CategoryReport", "RegressionReport",
           "TASKS", "MAX_CATEGORIES"]

#: The kinds of target a model can be trained for (``config.json`` ``"task"``).
TASKS = ("multilabel", "multicategory", "regression")
#: Default upper bound on the categories of one column (more usually means a text or id column).
MAX_CATEGORIES = 50


def _check_names(cols: Any, arg: str) -> list[str]:
    if isinstance(cols, str) or not isinstance(cols, Sequence):
        raise TypeError(f"{arg} must be a list of column names, got {cols!r}; e.g. {arg}=[{cols!r}].")
    cols = list(cols)
    if not cols:
        raise ValueError(f"{arg} is empty: name at least one column.")
    if len(set(map(str, cols))) != len(cols):
        raise ValueError(f"{arg} has repeated names: {cols}.")
    return cols


def _frame_columns(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The target columns of ``df``, found by the names they read as (0 and "0" alike)."""
    check_columns(df, cols)
    sub = df[column_keys(df, cols)]
    sub.columns = cols
    return sub


def _json_scalar(v: Any) -> Any:
    """A category value as JSON keeps it: ints stay ints (``2.0`` -> ``2``), strings stay strings."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else float(v)
    return str(v)


def _key(v: Any) -> str:
    """How a cell is matched to a category: by the text it reads as, so a CSV's ``"2"`` is the
    training frame's ``2``."""
    return str(_json_scalar(v))


def _column_metrics(columns: list[str], col_metric: Any, kinds: dict[str, str], *, mean: tuple[str, str]) -> list:
    """fastai epoch metrics: ``<col>_<name>`` for every column and kind (``col_metric(j, kind)``
    gives the function of raw outputs and targets), then the mean over columns of ``mean[0]``
    named ``mean[1]``."""
    from fastai.metrics import AccumMetric

    def mean_of(preds: np.ndarray, targs: np.ndarray) -> float:
        return float(np.mean([col_metric(j, mean[0])(preds, targs) for j in range(len(columns))]))

    out = [AccumMetric(col_metric(j, kind), flatten=False, to_np=True, name=f"{c}_{name}")
           for j, c in enumerate(columns) for kind, name in kinds.items()]
    return out + [AccumMetric(mean_of, flatten=False, to_np=True, name=mean[1])]


# ---------------------------------------------------------------------- multi-category
@dataclass
class CategoryReport:
    """Per-column accuracy and F1 of a multi-category model.

    Attributes:
        summary: ``accuracy`` and ``f1_macro`` (means over columns), then
            ``<col>_accuracy`` / ``<col>_f1_macro`` per column.
        per_column: one row per column (accuracy, macro-F1, weighted F1, rows).
        per_category: one row per (column, category): precision, recall, F1, support.
    """

    summary: dict[str, float]
    per_column: pd.DataFrame
    per_category: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "per_column": self.per_column.reset_index().to_dict(orient="records"),
                "per_category": self.per_category.reset_index().to_dict(orient="records")}

    def __repr__(self) -> str:
        return "CategoryReport\n" + "\n".join(f"{k:>28s}  {v:.4f}" for k, v in self.summary.items())


class CategorySpec:
    """Category columns: ``categories[col]`` lists each column's categories (the column order
    of its probabilities); ``y`` holds one category index per column."""

    task = "multicategory"

    def __init__(self, columns: Sequence[str], categories: dict[str, list[Any]] | None = None, *,
                 max_categories: int = MAX_CATEGORIES) -> None:
        self.columns = _check_names(columns, "category_cols")
        if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 2:
            raise ValueError(f"max_categories must be an int >= 2, got {max_categories!r}.")
        self.max_categories = max_categories
        self.categories = {c: list(v) for c, v in (categories or {}).items()}

    # -------------------------------------------------------------- reading frames
    def fit(self, df: pd.DataFrame) -> "CategorySpec":
        """Validate the columns of the training frame and learn each one's categories."""
        sub = _frame_columns(df, self.columns)
        cats: dict[str, list[Any]] = {}
        for c in self.columns:
            s = sub[c]
            n_missing = int(s.isna().sum() + (s.astype(str).str.strip() == "").sum()) if s.dtype == object \
                else int(s.isna().sum())
            if n_missing:
                raise ValueError(f"Category column {c!r} has {n_missing} missing value(s): every row needs a category. "
                                 f"Drop those rows (df.dropna(subset=[{c!r}])) or fill them with a category of their "
                                 f"own (df[{c!r}].fillna('none')).")
            counts = s.map(_key).value_counts()
            if len(counts) < 2:
                raise ValueError(f"Category column {c!r} has a single category ({counts.index[0]!r}): there is nothing "
                                 "to learn; drop it from category_cols.")
            if len(counts) > self.max_categories:
                raise ValueError(f"Category column {c!r} has {len(counts)} distinct values, more than max_categories="
                                 f"{self.max_categories}: is it a text or id column? Raise max_categories if it really "
                                 "is a category column.")
            once = counts.index[counts == 1].tolist()
            if once:
                warnings.warn(f"Category column {c!r}: {len(once)} categor{'y' if len(once) == 1 else 'ies'} occur once "
                              f"({once[:10]}): the model can hardly learn them and a split puts each on one side only. "
                              "Merge rare categories or collect more rows.", UserWarning, stacklevel=4)  # from_df's caller
            first = {}
            for v in s:
                first.setdefault(_key(v), _json_scalar(v))
            values = list(first.values())
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            cats[c] = sorted(values) if numeric else sorted(values, key=str)
        return CategorySpec(self.columns, cats, max_categories=self.max_categories)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Category indexes ``(n_rows, n_columns)``, int64; a category the model never saw raises."""
        sub = _frame_columns(df, self.columns)
        out = np.zeros((len(sub), len(self.columns)), dtype=np.int64)
        for j, c in enumerate(self.columns):
            index = {_key(v): i for i, v in enumerate(self.categories[c])}
            missing = sub[c].isna()
            if missing.any():
                raise ValueError(f"Category column {c!r} has {int(missing.sum())} missing value(s): every row needs a "
                                 f"category; drop those rows (df.dropna(subset=[{c!r}])).")
            keys = sub[c].map(_key)
            bad = sorted({k for k in keys if k not in index}, key=str)
            if bad:
                raise ValueError(f"Category column {c!r} has value(s) {bad[:10]} the model was not trained on (it knows "
                                 f"{self.categories[c]}): fix or drop those rows.")
            out[:, j] = keys.map(index).to_numpy(dtype=np.int64)
        return out

    def strat_matrix(self, y: np.ndarray) -> np.ndarray:
        """One-hot of every column's category, for iterative stratification of the split."""
        return np.hstack([np.eye(len(self.categories[c]), dtype=int)[y[:, j]] for j, c in enumerate(self.columns)])

    # -------------------------------------------------------------- model side
    @property
    def sizes(self) -> list[int]:
        return [len(self.categories[c]) for c in self.columns]

    @property
    def n_out(self) -> int:
        return sum(self.sizes)

    @property
    def output_names(self) -> list[str]:
        """``<col>:<category>`` for every model output, in order."""
        return [f"{c}:{v}" for c in self.columns for v in self.categories[c]]

    def class_weights(self, y_train: np.ndarray) -> list[list[float]]:
        """scikit-learn's ``class_weight="balanced"`` per column: ``n / (k * count)`` for each of its
        ``k`` categories (written out because ``compute_class_weight`` raises when a category has no
        training row; such a category gets the largest weight of its column)."""
        out = []
        for j, k in enumerate(self.sizes):
            counts = np.bincount(np.asarray(y_train)[:, j], minlength=k).astype(np.float64)
            w = len(y_train) / (k * np.maximum(counts, 1))
            w[counts == 0] = w[counts > 0].max() if (counts > 0).any() else 1.0
            out.append(w.tolist())
        return out

    def make_loss(self, y_train: np.ndarray, config: Any) -> MultiCategoryLoss:
        weights = self.class_weights(y_train) if getattr(config, "class_weight", None) == "balanced" else None
        return MultiCategoryLoss(self.sizes, weights)

    def train_targets(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.int64)

    def probabilities(self, logits: np.ndarray) -> list[np.ndarray]:
        """Softmax of each column's block of logits: one ``(n_texts, n_categories)`` array per column."""
        out, start = [], 0
        for k in self.sizes:
            z = logits[:, start:start + k].astype(np.float64)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            out.append((z / z.sum(axis=1, keepdims=True)).astype(np.float32))
            start += k
        return out

    def report(self, y: np.ndarray, logits: np.ndarray) -> CategoryReport:
        probs = self.probabilities(logits)
        summary: dict[str, float] = {}
        cols, rows = [], []
        for j, c in enumerate(self.columns):
            pred, true = probs[j].argmax(1), y[:, j]
            labels = list(range(len(self.categories[c])))
            acc = float(skm.accuracy_score(true, pred))
            f1m = float(skm.f1_score(true, pred, labels=labels, average="macro", zero_division=0))
            f1w = float(skm.f1_score(true, pred, labels=labels, average="weighted", zero_division=0))
            cols.append({"column": c, "accuracy": acc, "f1_macro": f1m, "f1_weighted": f1w, "n": len(true)})
            p, r, f, s = skm.precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
            rows += [{"column": c, "category": str(v), "precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])}
                     for i, v in enumerate(self.categories[c])]
        summary["accuracy"] = float(np.mean([r["accuracy"] for r in cols]))
        summary["f1_macro"] = float(np.mean([r["f1_macro"] for r in cols]))
        for r in cols:
            summary[f"{r['column']}_accuracy"] = r["accuracy"]
            summary[f"{r['column']}_f1_macro"] = r["f1_macro"]
        return CategoryReport(summary, pd.DataFrame(cols).set_index("column"),
                              pd.DataFrame(rows).set_index(["column", "category"]))

    def epoch_metrics(self) -> list:
        """fastai metrics per epoch: each column's accuracy and macro-F1, and the mean macro-F1
        (``f1_macro``, usable as ``save_best_by``)."""
        sizes = self.sizes

        def col_metric(j: int, kind: str):
            lo, hi = sum(sizes[:j]), sum(sizes[:j + 1])

            def fn(preds: np.ndarray, targs: np.ndarray) -> float:
                pred, true = preds[:, lo:hi].argmax(1), targs[:, j]
                if kind == "accuracy":
                    return float((pred == true).mean())
                return float(skm.f1_score(true, pred, labels=list(range(hi - lo)), average="macro", zero_division=0))
            return fn

        return _column_metrics(self.columns, col_metric, {"accuracy": "accuracy", "f1": "f1_macro"}, mean=("f1", "f1_macro"))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "columns": list(self.columns), "categories": {c: self.categories[c] for c in self.columns},
                "max_categories": self.max_categories}


# ---------------------------------------------------------------------- regression
@dataclass
class RegressionReport:
    """Per-target MAE, RMSE, R^2 and Spearman correlation, in the targets' own units.

    Attributes:
        summary: ``r2`` and ``spearman`` (means over targets), then ``<col>_mae``,
            ``<col>_rmse``, ``<col>_r2``, ``<col>_spearman`` per target.
        per_target: one row per target.
    """

    summary: dict[str, float]
    per_target: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "per_target": self.per_target.reset_index().to_dict(orient="records")}

    def __repr__(self) -> str:
        return "RegressionReport\n" + "\n".join(f"{k:>28s}  {v:.4f}" for k, v in self.summary.items())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # undefined for a constant side (scipy warns and returns nan)
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


class RegressionSpec:
    """Numeric target columns. ``mean``/``std`` standardise each target (from the training rows);
    ``low``/``high`` are its training range, widened by ``margin`` of the range on each side,
    which bounds the model's outputs as fastai's ``y_range`` does (a sigmoid cannot reach its ends)."""

    task = "regression"

    def __init__(self, columns: Sequence[str], *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None, margin: float = 0.05) -> None:
        self.columns = _check_names(columns, "target_cols")
        self.mean, self.std, self.low, self.high = (None if v is None else [float(x) for x in v] for v in (mean, std, low, high))
        self.margin = float(margin)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """The targets as float64 ``(n_rows, n_targets)``; strings, missing and infinite values raise."""
        sub = _frame_columns(df, self.columns)
        out = np.zeros((len(sub), len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            s = sub[c]
            n_missing = int(s.isna().sum())
            if n_missing:
                raise ValueError(f"Target column {c!r} has {n_missing} missing value(s): drop those rows "
                                 f"(df.dropna(subset=[{c!r}])) or fill them before training a regression model.")
            vals = pd.to_numeric(s, errors="coerce") if s.dtype != bool else s.astype(float)
            bad = vals.isna()
            if bad.any():
                ex = s[bad].unique()[:5].tolist()
                raise ValueError(f"Target column {c!r} has non-numeric values like {ex}: regression targets must be "
                                 f"numbers. For a column of categories use category_cols=[{c!r}] instead of target_cols.")
            arr = vals.to_numpy(dtype=np.float64)
            if not np.isfinite(arr).all():
                raise ValueError(f"Target column {c!r} has {int((~np.isfinite(arr)).sum())} infinite value(s): "
                                 "drop or clip them.")
            if len(arr) > 1 and np.ptp(arr) == 0:
                raise ValueError(f"Target column {c!r} is constant (every row is {float(arr[0])!r}): there is nothing to learn; "
                                 "drop it from target_cols.")
            out[:, j] = arr
        return out

    def fit(self, y_train: np.ndarray) -> "RegressionSpec":
        """Learn the standardisation and the output range from the training rows' targets."""
        y_train = np.asarray(y_train, dtype=np.float64)
        lo, hi = y_train.min(0), y_train.max(0)
        const = [c for c, a, b in zip(self.columns, lo, hi) if a == b]
        if const:
            raise ValueError(f"Target column(s) {const} are constant in the training rows: there is nothing to learn; "
                             "drop them from target_cols.")
        return RegressionSpec(self.columns, mean=y_train.mean(0), std=y_train.std(0), low=lo, high=hi, margin=self.margin)

    def strat_matrix(self, y: np.ndarray) -> np.ndarray:
        """One-hot of 5 quantile bins per target, so both sides of the split cover the range."""
        parts = []
        for j in range(y.shape[1]):
            bins = np.asarray(pd.qcut(y[:, j], q=5, labels=False, duplicates="drop"), dtype=float)
            bins = np.nan_to_num(bins, nan=0.0).astype(int)  # a constant column gives one bin
            parts.append(np.eye(int(bins.max()) + 1, dtype=int)[bins])
        return np.hstack(parts)

    # -------------------------------------------------------------- model side
    @property
    def n_out(self) -> int:
        return len(self.columns)

    @property
    def output_names(self) -> list[str]:
        return list(self.columns)

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.std is None:
            raise ValueError("This RegressionSpec has no statistics yet: call fit(y_train) first.")
        return np.asarray(self.mean), np.asarray(self.std)

    def standardise(self, y: np.ndarray) -> np.ndarray:
        mean, std = self._stats()
        return ((np.asarray(y, dtype=np.float64) - mean) / std).astype(np.float32)

    def to_units(self, z: np.ndarray) -> np.ndarray:
        """Standardised model outputs -> the targets' own units."""
        mean, std = self._stats()
        return (np.asarray(z, dtype=np.float64) * std + mean).astype(np.float32)

    def output_range(self) -> tuple[list[float], list[float]]:
        """Per-target output bounds in standardised units (training range +- ``margin``)."""
        mean, std = self._stats()
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        pad = self.margin * (hi - lo)
        return (((lo - pad) - mean) / std).tolist(), (((hi + pad) - mean) / std).tolist()

    def make_loss(self, y_train: np.ndarray, config: Any) -> RegressionLoss:
        return RegressionLoss(config.regression_loss, delta=config.huber_delta)

    def train_targets(self, y: np.ndarray) -> np.ndarray:
        return self.standardise(y)

    def report(self, y: np.ndarray, outputs: np.ndarray) -> RegressionReport:
        """Scores of predictions ``outputs`` (original units) against ``y``."""
        y, pred = np.asarray(y, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
        rows = []
        for j, c in enumerate(self.columns):
            rows.append({"target": c, "mae": float(skm.mean_absolute_error(y[:, j], pred[:, j])),
                         "rmse": float(np.sqrt(skm.mean_squared_error(y[:, j], pred[:, j]))),
                         "r2": float(skm.r2_score(y[:, j], pred[:, j])) if len(y) > 1 else float("nan"),
                         "spearman": _spearman(y[:, j], pred[:, j]), "n": len(y)})
        summary = {"r2": float(np.mean([r["r2"] for r in rows])), "spearman": float(np.mean([r["spearman"] for r in rows]))}
        for r in rows:
            summary.update({f"{r['target']}_{k}": r[k] for k in ("mae", "rmse", "r2", "spearman")})
        return RegressionReport(summary, pd.DataFrame(rows).set_index("target"))

    def epoch_metrics(self) -> list:
        """fastai metrics per epoch, in the targets' units: each target's MAE and R^2, and the
        mean R^2 (``r2``, usable as ``save_best_by``)."""
        def col_metric(j: int, kind: str):
            def fn(preds: np.ndarray, targs: np.ndarray) -> float:
                p, t = self.to_units(preds)[:, j], self.to_units(targs.reshape(preds.shape))[:, j]
                return float(np.abs(p - t).mean()) if kind == "mae" else float(skm.r2_score(t, p))
            return fn

        return _column_metrics(self.columns, col_metric, {"mae": "mae", "r2": "r2"}, mean=("r2", "r2"))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "columns": list(self.columns), "mean": self.mean, "std": self.std,
                "low": self.low, "high": self.high, "margin": self.margin}


def target_spec_from_dict(d: dict[str, Any]) -> CategorySpec | RegressionSpec:
    """Rebuild a spec saved with ``to_dict`` (a model's ``config.json`` ``"targets"``)."""
    if not isinstance(d, dict) or d.get("task") not in ("multicategory", "regression"):
        raise ValueError(f"Not a saved target spec: {d!r}.")
    try:
        if d["task"] == "multicategory":
            cats = d["categories"]
            if not isinstance(cats, dict) or not all(isinstance(v, list) and len(v) >= 2 for v in cats.values()):
                raise ValueError("categories must map each column to a list of >= 2 categories")
            return CategorySpec(d["columns"], cats, max_categories=d.get("max_categories", MAX_CATEGORIES))
        spec = RegressionSpec(d["columns"], mean=d["mean"], std=d["std"], low=d["low"], high=d["high"],
                              margin=d.get("margin", 0.05))
    except (KeyError, TypeError) as e:
        raise ValueError(f"Invalid saved target spec ({type(e).__name__}: {e}).") from e
    if any(v is None or len(v) != len(spec.columns) for v in (spec.mean, spec.std, spec.low, spec.high)) \
            or any(s <= 0 for s in spec.std):
        raise ValueError("Invalid saved regression spec: mean, std (> 0), low and high need one value per target.")
    return spec
