"""Regression targets: several numeric columns (a 1-10 star rating ...), standardised per column
from the training rows; predictions are in the original units, bounded to the training range."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn import metrics as skm
from torch import nn

from .base import check_names, column_metrics, frame_columns
from .losses import RegressionLoss

__all__ = ["RegressionSpec", "RegressionReport", "TargetRange"]


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
    meta_key = "targets"

    def __init__(self, columns: Sequence[str], *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None, margin: float = 0.05) -> None:
        self.columns = check_names(columns, "target_cols")
        self.mean, self.std, self.low, self.high = (None if v is None else [float(x) for x in v] for v in (mean, std, low, high))
        self.margin = float(margin)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """The targets as float64 ``(n_rows, n_targets)``; strings, missing and infinite values raise."""
        sub = frame_columns(df, self.columns)
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

    def fit_frame(self, df: pd.DataFrame, *, labels: Sequence[str] | None = None, config: Any = None
                  ) -> tuple["RegressionSpec", np.ndarray, list[str], pd.DataFrame]:
        """The training frame's targets, checked and encoded (statistics come after the split)."""
        return self, self.encode(df), list(self.columns), df

    def after_split(self, texts: list[str], y: np.ndarray, is_valid: np.ndarray, *, moved: bool
                    ) -> tuple["RegressionSpec", np.ndarray, np.ndarray]:
        """Standardisation and output range from the training rows only."""
        return self.fit(y[~is_valid]), np.asarray(y, dtype=np.float32), is_valid

    def describe(self) -> str:
        return f"{len(self.columns)} regression targets"

    def counts(self, y_train: np.ndarray, y_valid: np.ndarray) -> pd.DataFrame:
        raise ValueError("label_counts() counts labels; regression data has targets: see data.y_train / y_valid.")

    def fingerprint(self, y: np.ndarray) -> dict[str, Any]:
        return {}

    def target_block(self) -> Any:
        from fastai.data.block import TransformBlock

        return TransformBlock()

    def finish_network(self, model: Any) -> None:
        """Append the output bounds to the classifier network's head (in place)."""
        low, high = self.output_range()
        model[1].layers.append(TargetRange(low, high))

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

    def make_loss(self, y_train: np.ndarray, config: Any, *, device: Any = None) -> RegressionLoss:
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

        return column_metrics(self.columns, col_metric, {"mae": "mae", "r2": "r2"}, mean=("r2", "r2"))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "columns": list(self.columns), "mean": self.mean, "std": self.std,
                "low": self.low, "high": self.high, "margin": self.margin}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegressionSpec":
        spec = cls(d["columns"], mean=d["mean"], std=d["std"], low=d["low"], high=d["high"], margin=d.get("margin", 0.05))
        if any(v is None or len(v) != len(spec.columns) for v in (spec.mean, spec.std, spec.low, spec.high)) \
                or any(s <= 0 for s in spec.std):
            raise ValueError("Invalid saved regression spec: mean, std (> 0), low and high need one value per target.")
        return spec


class TargetRange(nn.Module):
    """fastai's ``SigmoidRange`` with one ``(low, high)`` per output, kept as buffers (saved with
    the weights, moved with ``.to()``): bounds each regression output to its training range."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(list(low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(high), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * (self.high - self.low) + self.low
