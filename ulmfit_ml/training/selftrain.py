"""Self-training (knowledge distillation) for few labels: a teacher scores unlabelled texts and a
new ULMFiT classifier, the student, learns from the labelled rows and those soft labels.

Why: with a few hundred labelled texts the fine-tuned classifier fits its training texts
(bench/RESULTS.md, "Small data": training mean AP 0.95, dev 0.13) and misses the one-word cues
that a linear model over word counts finds at once. Unlabelled texts of the same kind are what
few-label users have in plenty; scored by a teacher that ranks better than either model alone
(the ULMFiT + TF-IDF blend), they give the student thousands of targets in place of hundreds. What
predicts afterwards is one ULMFiT model (saved, loaded and quantised like any other).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .trainer import train_classifier
from ..data.core import MultiLabelData
from ..data.soft import with_soft_labels
from ..models.baseline import TfidfBaseline
from ..models.classifier import TextModel
from ..models.ensemble import MultiLabelEnsemble
from ..models.lm import LanguageModel
from ..tasks.multilabel import MultiLabelSpec
from ..utils.config import ClassifierConfig
from ..utils.validation import extra_text_list

__all__ = ["TEACHERS", "self_train"]

#: the teachers :func:`self_train` builds itself
TEACHERS = ("blend", "self")


def _unlabelled(data: MultiLabelData, texts: Sequence[str] | None) -> list[str]:
    """The unlabelled texts: ``texts`` or ``data.extra_texts``, minus the labelled ones (a
    validation text scored by the teacher and trained on would leak into the thresholds)."""
    texts = data.extra_texts if texts is None else extra_text_list(texts, col="texts")
    seen = set(data.texts)
    out = list(dict.fromkeys(t for t in texts if t not in seen))  # each text once
    if not out:
        raise ValueError("self_train needs unlabelled texts of the same kind as the labelled ones: pass texts=[...] "
                         "or build the data with extra_texts= (found none that is not already a labelled text).")
    return out


def self_train(data: MultiLabelData, *, encoder: LanguageModel | str | Path | None,
               texts: Sequence[str] | None = None, teacher: str | Any = "blend",
               config: ClassifierConfig | None = None, arch: str | dict[str, Any] = "cpu",
               **options: Any) -> TextModel:
    """Train a classifier on ``data``'s labelled rows plus unlabelled ``texts`` whose targets are a
    teacher's probabilities.

    Args:
        data: multi-label :class:`~ulmfit_ml.data.core.MultiLabelData`; its validation split (real
            labels only) tunes the student's thresholds.
        encoder: the fine-tuned language model (as for :func:`~ulmfit_ml.train_classifier`).
        texts: unlabelled texts; ``None`` uses ``data.extra_texts``. Texts that are also labelled
            rows, repeats and empty texts are left out.
        teacher: ``"blend"`` (the default): ``train_classifier(data, encoder=encoder)`` and a
            :class:`~ulmfit_ml.TfidfBaseline` on the same split, probabilities averaged;
            ``"self"``: that classifier alone; or any fitted model with ``labels`` equal to
            ``data.labels`` and ``predict_proba(texts)`` (e.g. a saved ensemble loaded with
            :func:`~ulmfit_ml.load_predictor`).
        config, arch, options: the classifier's options, for the teacher's classifier and the
            student alike (see :func:`~ulmfit_ml.train_classifier`).

    Returns:
        The student: a :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` with thresholds
        tuned on ``data``'s validation split.

    Raises:
        ValueError: ``data`` is not multi-label; no unlabelled text; an unknown teacher name; a
            teacher whose labels are not ``data.labels``.
    """
    if not isinstance(data.spec, MultiLabelSpec):
        raise ValueError(f"self_train needs multi-label data; this data's targets are {data.task!r} "
                         "(use train_classifier).")
    unlabelled = _unlabelled(data, texts)
    if isinstance(teacher, str):
        if teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS} or a fitted model, got {teacher!r}.")
        clf = train_classifier(data, encoder=encoder, config=config, arch=arch, **options)
        teacher = clf if teacher == "self" else MultiLabelEnsemble([clf, TfidfBaseline().fit(data)])
    elif not hasattr(teacher, "predict_proba") or list(getattr(teacher, "labels", [])) != list(data.labels):
        raise ValueError(f"The teacher must have predict_proba and the data's labels {list(data.labels)[:5]}...; "
                         f"got {type(teacher).__name__} with labels {list(getattr(teacher, 'labels', []))[:5]}.")
    probs = np.clip(np.asarray(teacher.predict_proba(unlabelled), dtype=np.float32), 0.0, 1.0)
    return train_classifier(with_soft_labels(data, unlabelled, probs), encoder=encoder, config=config, arch=arch,
                            **options)
