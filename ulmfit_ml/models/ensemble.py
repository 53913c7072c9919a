"""Average the probabilities of several multi-label models trained on the same labels.

ULMFiT's paper ensembles a forward and a backward classifier; a Kaggle-style experiment
often also blends in the TF-IDF baseline. :class:`MultiLabelEnsemble` does both, with the
same ``predict`` / ``evaluate`` / ``report`` / ``tune_thresholds`` as its members::

    fwd = um.train_classifier(data, encoder=lm_fwd)
    bwd = um.train_classifier(data, encoder=lm_bwd)     # a backward LM's classifier
    tfidf = um.TfidfBaseline().fit(data)
    ens = um.MultiLabelEnsemble([fwd, bwd, tfidf], weights=[1, 1, 1])
    ens.tune_thresholds()          # on the members' shared validation split
    ens.evaluate(test_df)

The members' own thresholds are ignored: an average of probabilities needs its own.
``ens.save(dir)`` writes every member (each in its own format) with the weights and thresholds;
:func:`load_predictor` loads it back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import MultiLabelPredictorMixin
from .baseline import TfidfBaseline
from .classifier import MultiLabelClassifier, TextModel
from .registry import load_classifier
from ..evaluation.thresholds import check_thresholds
from ..utils.manifest import verify_files
from ..utils.kinds import ENSEMBLE_KIND, TFIDF_KIND
from ..utils.persist import FORMAT_VERSION, atomic_dir, read_json, write_json
from ..utils.validation import check_texts, suppress_empty_text_warning
from ..utils.valuetypes import user_path

__all__ = ["MultiLabelEnsemble", "average_probabilities", "resolve_model_dirs", "load_predictor"]


def _check_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights normalised to sum to 1 (equal when ``None``)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must have one entry per model ({n}), got {len(w)}.")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(w)}.")
    return w / w.sum()


def average_probabilities(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of same-shaped ``(n_texts, n_labels)`` probability arrays, float32.

    The arithmetic of :class:`MultiLabelEnsemble`, for probabilities already predicted (e.g.
    by a benchmark that scores every member on its own too).
    """
    arrays = [np.asarray(p, dtype=np.float64) for p in probs]
    if not arrays:
        raise ValueError("average_probabilities needs at least one array.")
    if any(a.shape != arrays[0].shape for a in arrays[1:]):
        raise ValueError(f"probability arrays must share one shape, got {[a.shape for a in arrays]}.")
    w = _check_weights(weights, len(arrays))
    return sum(wi * a for wi, a in zip(w, arrays)).astype(np.float32)


class MultiLabelEnsemble(MultiLabelPredictorMixin):
    """Weighted mean of the members' ``predict_proba`` (arithmetic mean of probabilities).

    Args:
        models: two or more fitted models with the same ``labels`` in the same order
            (:class:`~ulmfit_ml.MultiLabelClassifier`, :class:`~ulmfit_ml.TfidfBaseline`,
            another ensemble, or anything with ``labels`` and ``predict_proba``).
        weights: one non-negative weight per model (normalised to sum to 1); ``None``: equal.

    The validation probabilities (for ``tune_thresholds()`` and ``evaluate()`` without a
    frame) are the weighted mean of the members' own, available when every member kept them
    for the same validation rows (same ``y``); otherwise pass a labelled frame.
    """

    def __init__(self, models: Sequence[Any], *, weights: Sequence[float] | None = None) -> None:
        models = list(models) if not isinstance(models, (str, bytes)) else []
        if len(models) < 2:
            raise ValueError(f"An ensemble needs at least 2 models, got {len(models)}.")
        for i, m in enumerate(models):
            if not (hasattr(m, "predict_proba") and hasattr(m, "labels")):
                raise TypeError(f"models[{i}] ({type(m).__name__}) has no labels/predict_proba: pass fitted "
                                "MultiLabelClassifier / TfidfBaseline objects.")
            if isinstance(m, TextModel) and not m.thresholded:
                raise TypeError(f"models[{i}] is a {type(m).__name__}: an ensemble averages multi-label probabilities; "
                                "average a multi-category or regression model's outputs yourself.")
        labels = list(models[0].labels)
        if not labels:
            raise ValueError("models[0] has no labels: fit it first.")
        for i, m in enumerate(models[1:], start=1):
            if list(m.labels) != labels:
                raise ValueError(f"models[{i}] has labels {list(m.labels)[:6]}... but models[0] has {labels[:6]}...: "
                                 "every member must be trained on the same labels in the same order.")
        self.models = models
        self.weights = _check_weights(weights, len(models))
        self.labels = labels
        self.thresholds = check_thresholds(0.5, len(labels))
        self.meta: dict[str, Any] = dict(getattr(models[0], "meta", {}))
        self.meta["kind"] = ENSEMBLE_KIND
        self._valid = self._mean_valid()

    def _mean_valid(self) -> tuple[np.ndarray, np.ndarray] | None:
        vals = [getattr(m, "_valid", None) for m in self.models]
        if any(v is None for v in vals):
            return None
        y0 = np.asarray(vals[0][0])
        if any(np.asarray(v[0]).shape != y0.shape or not np.array_equal(np.asarray(v[0]), y0) for v in vals[1:]):
            return None  # members validated on different rows: no shared validation split
        return y0, average_probabilities([v[1] for v in vals], self.weights)

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Weighted mean of the members' probabilities, ``(n_texts, n_labels)`` float32."""
        texts = check_texts(texts)  # the text policy's warning once here, not once per member
        used = [(wi, m) for wi, m in zip(self.weights, self.models) if wi > 0]  # weight 0: not run at all
        with suppress_empty_text_warning():
            probs = [m.predict_proba(texts, bs=bs) for _, m in used]
        return average_probabilities(probs, [wi for wi, _ in used])

    def weight_arrays(self) -> dict[str, np.ndarray]:
        """Every member's arrays (keys prefixed by the member's position) and the weights."""
        out = {"weights": np.asarray(self.weights)}
        for i, m in enumerate(self.models):
            if not hasattr(m, "weight_arrays"):
                raise TypeError(f"models[{i}] ({type(m).__name__}) exposes no weight_arrays().")
            out.update({f"{i}.{k}": v for k, v in m.weight_arrays().items()})
        return out

    def save(self, path: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the ensemble to directory ``path`` atomically: ``config.json`` (weights),
        ``labels.json``, ``thresholds.json`` and ``members/00``, ``members/01``, ... (each
        member saved by its own ``save``: a classifier, a TF-IDF baseline, another ensemble).
        ``overwrite`` replaces only a directory ulmfit_ml wrote. Load it with
        :func:`load_predictor` (or ``predict_file`` / ``ulmfit-ml predict``)."""
        for i, m in enumerate(self.models):
            if not callable(getattr(m, "save", None)):
                raise TypeError(f"Cannot save the ensemble: models[{i}] ({type(m).__name__}) has no save(); save "
                                "ensembles of MultiLabelClassifier / TfidfBaseline / MultiLabelEnsemble members.")
        thresholds = [float(t) for t in check_thresholds(self.thresholds, len(self.labels), name="thresholds")]

        def write(tmp: Path) -> None:
            for i, m in enumerate(self.models):
                m.save(tmp / "members" / f"{i:02d}")
            write_json(tmp / "config.json", {"format_version": FORMAT_VERSION, "kind": ENSEMBLE_KIND,
                                             "weights": [float(w) for w in self.weights], "n_labels": len(self.labels)})
            write_json(tmp / "labels.json", list(self.labels))
            write_json(tmp / "thresholds.json", thresholds)

        return atomic_dir(path, write, overwrite=overwrite, kind=ENSEMBLE_KIND, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = "cpu") -> "MultiLabelEnsemble":
        """An ensemble saved by :meth:`save` (every file checked against its save-time checksum)."""
        path = user_path(path)
        cfg = read_json(path / "config.json")
        if not isinstance(cfg, dict) or cfg.get("kind") != ENSEMBLE_KIND:
            raise ValueError(f"{path / 'config.json'} is not a saved MultiLabelEnsemble (kind {ENSEMBLE_KIND!r}).")
        verify_files(path, ENSEMBLE_KIND, format_version=cfg.get("format_version", 0))
        weights = cfg.get("weights")
        dirs = sorted(p for p in (path / "members").iterdir() if p.is_dir()) if (path / "members").is_dir() else []
        if not isinstance(weights, list) or len(dirs) != len(weights):
            raise ValueError(f"{path} holds {len(dirs)} member directories but config.json lists "
                             f"{len(weights) if isinstance(weights, list) else 'no'} weights: the directory was edited. "
                             "Save the ensemble again.")
        ens = cls([_load_model_dir(d, device=device) for d in dirs], weights=weights)
        labels = read_json(path / "labels.json")
        if labels != ens.labels:
            raise ValueError(f"{path / 'labels.json'} lists {labels} but the members' labels are {ens.labels}.")
        ens.thresholds = check_thresholds(read_json(path / "thresholds.json"), len(ens.labels),
                                          name=f"{path / 'thresholds.json'}")
        return ens

    def __repr__(self) -> str:
        parts = ", ".join(f"{type(m).__name__}:{w:.2f}" for m, w in zip(self.models, self.weights))
        return f"MultiLabelEnsemble({len(self.labels)} labels; {parts})"


# ---------------------------------------------------------------------- loading saved models
def _saved_kind(p: Path) -> str | None:
    """The kind of model directory ``p`` is (``"classifier"``, a TF-IDF baseline, an ensemble), or ``None``."""
    if not (p / "config.json").is_file():
        return None
    if (p / "model.safetensors").is_file():
        return "classifier"
    try:
        kind = read_json(p / "config.json").get("kind")
    except (ValueError, AttributeError):  # corrupt or not a dict: not a model directory
        return None
    return kind if kind in (TFIDF_KIND, ENSEMBLE_KIND) else None


def _load_model_dir(p: Path, *, device: str | None) -> Any:
    """One saved model directory, by its kind."""
    kind = _saved_kind(p)
    if kind == TFIDF_KIND:
        return TfidfBaseline.load(p)
    if kind == ENSEMBLE_KIND:
        return MultiLabelEnsemble.load(p, device=device)
    return load_classifier(p, device=device or "cpu")


def resolve_model_dirs(path: str | Path) -> list[Path]:
    """The model directories behind ``path``: a model directory (a classifier, a saved
    :class:`~ulmfit_ml.models.baseline.TfidfBaseline` or :class:`MultiLabelEnsemble`), a ``train`` run
    directory (``model/``) or a ``cv`` run directory (``folds/*/model``)."""
    p = user_path(path)
    if _saved_kind(p) is not None:
        return [p]
    if (p / "model" / "model.safetensors").is_file():
        return [p / "model"]
    folds = sorted((p / "folds").glob("fold*/model")) if (p / "folds").is_dir() else []
    if folds:
        return folds
    raise FileNotFoundError(f"No saved model at {p}: pass a model directory, a `train` run directory (with model/) "
                            "or a `cv` run directory saved with run.save_fold_models = true.")


def load_predictor(path: str | Path, *, device: str | None = "cpu") -> MultiLabelClassifier | MultiLabelEnsemble | TfidfBaseline:
    """Load what :func:`resolve_model_dirs` finds: one saved model (a classifier, a TF-IDF
    baseline, a saved ensemble such as a ULMFiT + TF-IDF blend), or the equal-weight ensemble
    of a cv run's fold models (with the first fold's thresholds, as each fold tuned its own on
    its validation fold)."""
    models = [_load_model_dir(m, device=device) for m in resolve_model_dirs(path)]
    if len(models) == 1:
        return models[0]
    first = models[0].labels
    if any(m.labels != first for m in models[1:]):
        raise ValueError(f"The models under {path} have different labels; they cannot be averaged.")
    ens = MultiLabelEnsemble(models)
    ens.thresholds = models[0].thresholds.copy()
    return ens
