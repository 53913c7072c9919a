"""A TF-IDF + logistic-regression baseline with the same interface as the ULMFiT classifier.

Every experiment should print the neural model next to this baseline on the same split::

    base = um.TfidfBaseline().fit(data)
    clf = um.train_classifier(data, encoder=lm)
    for m in (base, clf):
        m.tune_thresholds()
        print(m.evaluate(test_df))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import MultiLabelPredictorMixin
from ..data.core import MultiLabelData
from ..evaluation.thresholds import check_thresholds
from ..utils.manifest import verify_files
from ..utils.kinds import TFIDF_KIND
from ..utils.persist import FORMAT_VERSION, atomic_dir, read_json, versions, write_json
from ..utils.validation import check_texts
from ..utils.valuetypes import user_path

__all__ = ["TfidfBaseline"]

_ARRAYS = "tfidf.safetensors"


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
        self._fitted_cols = np.zeros(0, dtype=np.int64)  # labels with both classes in train
        self._constant = np.zeros(0, dtype=np.float32)  # probability of the other labels (0 or 1)
        # the fitted logistic regressions, one row per label of _fitted_cols: P = sigmoid(x . coef + intercept),
        # which is LogisticRegression.predict_proba for a binary problem; fitted and loaded models predict alike
        self._coef = np.zeros((0, 0), dtype=np.float32)
        self._intercept = np.zeros(0, dtype=np.float32)

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
        self.meta = {"text_col": data.text_col, "label_spec": data.spec.to_dict(), "kind": TFIDF_KIND,
                     "options": dict(o), "n_features": len(vec.vocabulary_)}
        self.vectorizer = vec
        self._fitted_cols = np.flatnonzero(both).astype(np.int64)
        self._constant = (pos >= len(y)).astype(np.float32)
        self._coef = np.zeros((0, x.shape[1]), dtype=np.float32)
        self._intercept = np.zeros(0, dtype=np.float32)
        if both.any():
            lr = LogisticRegression(C=o["C"], class_weight=o["class_weight"], max_iter=o["max_iter"],
                                    random_state=o["seed"])
            ovr = OneVsRestClassifier(lr, n_jobs=o["n_jobs"]).fit(x, y[:, both].astype(int))
            self._coef = np.vstack([e.coef_ for e in ovr.estimators_]).astype(np.float32)
            self._intercept = np.concatenate([e.intercept_ for e in ovr.estimators_]).astype(np.float32)
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
        if not len(self._fitted_cols) or not texts:
            return out
        for s in range(0, len(texts), bs):
            z = np.asarray(self.vectorizer.transform(texts[s:s + bs]) @ self._coef.T) + self._intercept
            out[s:s + bs, self._fitted_cols] = 1.0 / (1.0 + np.exp(-np.clip(z, -80, 80)))
        return out

    # ------------------------------------------------------------------ persistence
    def weight_arrays(self) -> dict[str, np.ndarray]:
        """Everything fitted, as named arrays (what :meth:`save` writes; a predictor's fingerprint)."""
        if self.vectorizer is None:
            raise ValueError("This TfidfBaseline is not fitted yet: call .fit(data) first.")
        return {"idf": np.asarray(self.vectorizer.idf_, dtype=np.float32), "coef": self._coef,
                "intercept": self._intercept, "fitted_cols": self._fitted_cols, "constant": self._constant}

    def save(self, path: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the fitted baseline to directory ``path`` atomically: ``config.json`` (options,
        columns), ``vocab.json`` (the n-grams in column order), ``labels.json``,
        ``thresholds.json`` and ``tfidf.safetensors`` (idf, coefficients: arrays only, nothing
        pickled), with ulmfit_ml's ownership marker and checksums. ``overwrite`` replaces only a
        directory ulmfit_ml wrote, as :meth:`MultiLabelClassifier.save` does.
        """
        from safetensors.numpy import save_file

        arrays = self.weight_arrays()
        thresholds = [float(t) for t in check_thresholds(self.thresholds, len(self.labels), name="thresholds")]
        vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        options = {**self.options, "ngram_range": list(self.options["ngram_range"])}

        def write(tmp: Path) -> None:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / _ARRAYS))
            write_json(tmp / "config.json", {"format_version": FORMAT_VERSION, "kind": TFIDF_KIND, "options": options,
                                             "n_labels": len(self.labels), "n_features": len(vocab),
                                             "text_col": self.meta["text_col"], "label_spec": self.meta["label_spec"],
                                             "versions": versions()})
            write_json(tmp / "vocab.json", vocab)
            write_json(tmp / "labels.json", list(self.labels))
            write_json(tmp / "thresholds.json", thresholds)

        return atomic_dir(path, write, overwrite=overwrite, kind=TFIDF_KIND, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> "TfidfBaseline":
        """A baseline saved by :meth:`save`. Nothing is unpickled; every file is checked against
        the checksum recorded at save time, and shapes against each other."""
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        path = user_path(path)
        cfg = read_json(path / "config.json")
        if not isinstance(cfg, dict) or cfg.get("kind") != TFIDF_KIND:
            raise ValueError(f"{path / 'config.json'} is not a saved TfidfBaseline (kind {TFIDF_KIND!r}).")
        verify_files(path, TFIDF_KIND, format_version=cfg.get("format_version", 0))
        vocab, labels, thresholds = (read_json(path / f) for f in ("vocab.json", "labels.json", "thresholds.json"))
        try:
            arrays = load_file(str(path / _ARRAYS))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on bad headers
            raise ValueError(f"{path / _ARRAYS} is corrupt or not a safetensors file ({type(e).__name__}: {e}).") from e
        n_lab = len(labels) if isinstance(labels, list) else -1
        idf, coef, intercept = (arrays.get(k) for k in ("idf", "coef", "intercept"))
        cols, const = arrays.get("fitted_cols"), arrays.get("constant")
        ok = (isinstance(vocab, list) and all(isinstance(t, str) for t in vocab) and n_lab == cfg.get("n_labels")
              and all(a is not None for a in (idf, coef, intercept, cols, const))
              and idf.shape == (len(vocab),) and coef.ndim == 2 and coef.shape[1] == len(vocab)
              and intercept.shape == cols.shape == (coef.shape[0],) and const.shape == (n_lab,)
              and bool(np.all((cols >= 0) & (cols < n_lab))))
        if not ok:
            raise ValueError(f"The files of {path} do not fit together (vocab, labels and the arrays of {_ARRAYS} "
                             "differ in size): the directory was edited. Save the baseline again.")
        o = dict(cfg["options"])
        o["ngram_range"] = tuple(o["ngram_range"])
        base = cls(**o)
        vec = TfidfVectorizer(ngram_range=o["ngram_range"], sublinear_tf=o["sublinear_tf"], dtype=np.float32,
                              vocabulary={t: i for i, t in enumerate(vocab)})
        vec.idf_ = idf
        base.vectorizer, base.labels = vec, list(labels)
        base._coef, base._intercept = coef.astype(np.float32), intercept.astype(np.float32)
        base._fitted_cols, base._constant = cols.astype(np.int64), const.astype(np.float32)
        base.thresholds = check_thresholds(thresholds, n_lab, name=f"{path / 'thresholds.json'}")
        base.meta = {"text_col": cfg["text_col"], "label_spec": cfg["label_spec"], "kind": TFIDF_KIND,
                     "options": dict(cfg["options"]), "n_features": len(vocab)}
        return base

    def __repr__(self) -> str:
        state = f"{len(self.labels)} labels, {self.meta.get('n_features', 0)} n-grams" if self.labels else "not fitted"
        return f"TfidfBaseline({state})"
