"""A TF-IDF + logistic-regression baseline with the same interface as the ULMFiT classifier.

Every experiment should print the neural model next to this baseline on the same split::

    base = um.TfidfBaseline().fit(data)
    clf = um.train_classifier(data, encoder=lm)
    for m in (base, clf):
        m.tune_thresholds()
        print(m.evaluate(test_df))
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import MultiLabelPredictorMixin
from ..data.core import MultiLabelData
from ..evaluation.thresholds import check_thresholds
from ..utils.validation import check_texts

__all__ = ["TfidfBaseline"]


class TfidfBaseline(MultiLabelPredictorMixin):
    """Word 1-2-gram TF-IDF + one-vs-rest logistic regression with balanced class weights.

    Built from scikit-learn's ``TfidfVectorizer`` and ``OneVsRestClassifier(LogisticRegression)``.
    ``predict_proba``, ``predict``, ``evaluate``, ``report`` and ``tune_thresholds`` behave
    as on :class:`~ulmfit_ml.training.trainer.MultiLabelClassifier`.

    Args:
        ngram_range: word n-gram sizes.
        min_df: drop n-grams seen in fewer training texts.
        max_features: keep the most frequent n-grams only (bounds memory).
        sublinear_tf: ``1 + log(tf)`` instead of raw counts.
        C: inverse regularisation strength of the logistic regressions.
        class_weight: ``"balanced"`` (re-weights each label's rare positives) or ``None``.
        max_iter: solver iterations.
        n_jobs: labels fitted in parallel (``None``: one process).
        seed: ``random_state`` of the solver.
    """

    def __init__(self, *, ngram_range: tuple[int, int] = (1, 2), min_df: int | float = 2,
                 max_features: int | None = 200_000, sublinear_tf: bool = True, C: float = 4.0,
                 class_weight: str | None = "balanced", max_iter: int = 1000, n_jobs: int | None = None,
                 seed: int = 42) -> None:
        if not (isinstance(C, (int, float)) and C > 0):
            raise ValueError(f"C must be a number > 0, got {C!r}.")
        if class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {class_weight!r}.")
        self.options: dict[str, Any] = {"ngram_range": tuple(ngram_range), "min_df": min_df, "max_features": max_features,
                                        "sublinear_tf": sublinear_tf, "C": float(C), "class_weight": class_weight,
                                        "max_iter": max_iter, "n_jobs": n_jobs, "seed": seed}
        self.labels: list[str] = []
        self.thresholds = np.zeros(0)
        self.meta: dict[str, Any] = {}
        self._valid: tuple[np.ndarray, np.ndarray] | None = None
        self.vectorizer: Any = None
        self.model: Any = None
        self._fitted_cols = np.zeros(0, dtype=int)  # labels with both classes in train
        self._constant = np.zeros(0)  # probability of the other labels (0 or 1)

    def fit(self, data: MultiLabelData) -> "TfidfBaseline":
        """Fit on ``data``'s training split; store validation predictions for
        ``tune_thresholds()`` / ``evaluate()`` without a frame.

        Labels with no positive (or no negative) training text get a constant probability
        0 (or 1) instead of a regression: scikit-learn cannot fit a one-class problem.

        Returns:
            ``self``, with thresholds reset to 0.5.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        if not isinstance(data, MultiLabelData):
            raise TypeError(f"TfidfBaseline.fit expects a MultiLabelData (um.MultiLabelData.from_df(...)), "
                            f"got {type(data).__name__}.")
        o = self.options
        texts, y = data.train_texts, np.asarray(data.y_train)
        if not texts:
            raise ValueError("The training split is empty: nothing to fit.")
        vec = TfidfVectorizer(ngram_range=o["ngram_range"], min_df=o["min_df"], max_features=o["max_features"],
                              sublinear_tf=o["sublinear_tf"], dtype=np.float32)
        try:
            x = vec.fit_transform(texts)
        except ValueError as e:  # e.g. "After pruning, no terms remain"
            raise ValueError(f"TF-IDF found no usable n-gram in the {len(texts)} training texts ({e}); "
                             "lower min_df (e.g. TfidfBaseline(min_df=1)) or give more texts.") from e
        pos = y.sum(0)
        both = (pos > 0) & (pos < len(y))
        self.labels = list(data.labels)
        self.meta = {"text_col": data.text_col, "label_spec": data.spec.to_dict(), "kind": "tfidf_baseline",
                     "options": dict(o), "n_features": len(vec.vocabulary_)}
        self.vectorizer = vec
        self._fitted_cols = np.flatnonzero(both)
        self._constant = (pos >= len(y)).astype(np.float32)
        self.model = None
        if both.any():
            lr = LogisticRegression(C=o["C"], class_weight=o["class_weight"], max_iter=o["max_iter"],
                                    random_state=o["seed"])
            self.model = OneVsRestClassifier(lr, n_jobs=o["n_jobs"]).fit(x, y[:, both].astype(int))
        self.thresholds = check_thresholds(0.5, len(self.labels))
        if data.is_valid.any():
            self._valid = (np.asarray(data.y_valid, dtype=np.float32), self.predict_proba(data.valid_texts))
        else:
            self._valid = None
        return self

    def predict_proba(self, texts: Sequence[str], *, bs: int = 4096) -> np.ndarray:
        """Probabilities ``(n_texts, n_labels)``, float32, columns = ``labels``.

        Args:
            texts: list or Series of strings.
            bs: texts transformed at once (bounds memory).
        """
        if self.vectorizer is None:
            raise ValueError("This TfidfBaseline is not fitted yet: call .fit(data) first.")
        texts = check_texts(texts)
        if not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs must be a positive int, got {bs!r}.")
        out = np.tile(self._constant, (len(texts), 1)).astype(np.float32)
        if self.model is None or not texts:
            return out
        for s in range(0, len(texts), bs):
            x = self.vectorizer.transform(texts[s:s + bs])
            p = np.asarray(self.model.predict_proba(x))
            if len(self._fitted_cols) == 1 and p.ndim == 2 and p.shape[1] == 2:
                p = p[:, 1:]  # one fitted label: sklearn treats it as binary and returns [P(0), P(1)]
            out[s:s + bs, self._fitted_cols] = p.reshape(len(x.indptr) - 1, -1)
        return out

    def __repr__(self) -> str:
        state = f"{len(self.labels)} labels, {self.meta.get('n_features', 0)} n-grams" if self.labels else "not fitted"
        return f"TfidfBaseline({state})"
