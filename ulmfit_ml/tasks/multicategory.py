"""Multi-category targets: several columns that each take one of a few categories (``ekman``:
joy / anger / ..., ``sentiment``: positive / negative / ...), one softmax head per column;
``y`` holds one category index per column."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .base import check_names, column_metrics, frame_columns
from .losses import MultiCategoryLoss

__all__ = ["CategorySpec", "CategoryReport", "MAX_CATEGORIES"]

#: Default upper bound on the categories of one column (more usually means a text or id column).
MAX_CATEGORIES = 50


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
    meta_key = "targets"

    def __init__(self, columns: Sequence[str], categories: dict[str, list[Any]] | None = None, *,
                 max_categories: int = MAX_CATEGORIES) -> None:
        self.columns = check_names(columns, "category_cols")
        if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 2:
            raise ValueError(f"max_categories must be an int >= 2, got {max_categories!r}.")
        self.max_categories = max_categories
        self.categories = {c: list(v) for c, v in (categories or {}).items()}

    # -------------------------------------------------------------- reading frames
    def fit(self, df: pd.DataFrame) -> "CategorySpec":
        """Validate the columns of the training frame and learn each one's categories."""
        sub = frame_columns(df, self.columns)
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
        sub = frame_columns(df, self.columns)
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

    def fit_frame(self, df: pd.DataFrame, *, labels: Sequence[str] | None = None, config: Any = None
                  ) -> tuple["CategorySpec", np.ndarray, list[str], pd.DataFrame]:
        """The training frame: categories learnt (:meth:`fit`), then encoded; every row kept."""
        spec = self.fit(df)
        return spec, spec.encode(df), list(spec.columns), df

    def after_split(self, texts: list[str], y: np.ndarray, is_valid: np.ndarray, *, moved: bool
                    ) -> tuple["CategorySpec", np.ndarray, np.ndarray]:
        return self, y, is_valid

    def describe(self) -> str:
        return f"{len(self.columns)} category columns ({self.n_out} categories)"

    def counts(self, y_train: np.ndarray, y_valid: np.ndarray) -> pd.DataFrame:
        """Rows per (column, category) in train and valid."""
        rows = [{"column": col, "category": str(v), "train": int((y_train[:, j] == i).sum()),
                 "valid": int((y_valid[:, j] == i).sum())}
                for j, col in enumerate(self.columns) for i, v in enumerate(self.categories[col])]
        return pd.DataFrame(rows).set_index(["column", "category"])

    def fingerprint(self, y: np.ndarray) -> dict[str, Any]:
        return {}

    def target_block(self) -> Any:
        from fastai.data.block import TransformBlock

        return TransformBlock()  # the index of every column, collated as it is (CategoryBlock holds one column)

    def finish_network(self, model: Any) -> None:
        return None

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

    def make_loss(self, y_train: np.ndarray, config: Any, *, device: Any = None) -> MultiCategoryLoss:
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

        return column_metrics(self.columns, col_metric, {"accuracy": "accuracy", "f1": "f1_macro"}, mean=("f1", "f1_macro"))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "columns": list(self.columns), "categories": {c: self.categories[c] for c in self.columns},
                "max_categories": self.max_categories}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CategorySpec":
        cats = d["categories"]
        if not isinstance(cats, dict) or not all(isinstance(v, list) and len(v) >= 2 for v in cats.values()):
            raise ValueError("categories must map each column to a list of >= 2 categories")
        return cls(d["columns"], cats, max_categories=d.get("max_categories", MAX_CATEGORIES))
