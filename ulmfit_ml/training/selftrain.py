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

from .checkpoint import checkpoint_info, clear_checkpoint, open_checkpoint_dir
from .trainer import train_classifier
from ..data.core import MultiLabelData, hash_texts
from ..data.soft import check_soft_label_targets, with_soft_labels
from ..models.baseline import TfidfBaseline
from ..models.classifier import TextModel
from ..models.ensemble import MultiLabelEnsemble
from ..models.lm import LanguageModel
from ..utils.config import SELF_TRAIN_TEACHERS, ClassifierConfig
from ..utils.persist import atomic_file
from ..utils.validation import extra_text_list

__all__ = ["TEACHERS", "self_train"]

TEACHERS = SELF_TRAIN_TEACHERS  #: the teachers :func:`self_train` builds itself
TEACHER_FILE = "teacher.npz"  #: the teacher's probabilities in a checkpoint directory (``resume``)


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
               checkpoint_dir: str | Path | None = None, resume: bool = False, **options: Any) -> TextModel:
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
        checkpoint_dir: when set, the teacher's probabilities are saved there (``teacher.npz``)
            as soon as they are computed, and the epochs of the built-in teacher's classifier, then
            the student's, as with :func:`~ulmfit_ml.train_classifier`.
        resume: continue an interrupted run from ``checkpoint_dir``: the saved teacher
            probabilities (the same unlabelled texts and labels are required) and the student's
            last completed epoch; without saved probabilities, the built-in teacher's classifier
            goes on from its own last completed epoch.

    Returns:
        The student: a :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` with thresholds
        tuned on ``data``'s validation split.

    Raises:
        ValueError: ``data`` is not multi-label; no unlabelled text; an unknown teacher name; a
            teacher whose labels are not ``data.labels``; ``resume`` without ``checkpoint_dir``,
            or saved teacher probabilities for other texts or labels.
    """
    check_soft_label_targets(data.spec, what="self_train needs")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir= (the directory the interrupted run saved its checkpoints to).")
    unlabelled = _unlabelled(data, texts)
    probs = _saved_probs(checkpoint_dir, unlabelled, data.labels) if resume else None
    if probs is None:
        # a built-in teacher's classifier saves its epochs in the same directory (a kill while it trains
        # resumes it there); they make way for the student's once the teacher's probabilities are saved
        probs = _teacher_probs(data, unlabelled, teacher, encoder=encoder, config=config, arch=arch,
                               checkpoint_dir=checkpoint_dir, resume=resume, **options)
        if checkpoint_dir is not None:
            _save_probs(checkpoint_dir, unlabelled, data.labels, probs)
            if isinstance(teacher, str):  # the built-in teacher's epochs, saved there by this call
                clear_checkpoint(checkpoint_dir)
    elif _is_teachers_checkpoint(checkpoint_dir, data):  # killed between saving the probabilities and clearing
        clear_checkpoint(checkpoint_dir)
    return train_classifier(with_soft_labels(data, unlabelled, probs), encoder=encoder, config=config, arch=arch,
                            checkpoint_dir=checkpoint_dir, resume=resume, **options)


def _teacher_probs(data: MultiLabelData, unlabelled: list[str], teacher: str | Any, **train: Any) -> np.ndarray:
    """The teacher's probabilities of ``unlabelled`` (a built-in teacher is trained first)."""
    if isinstance(teacher, str):
        if teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS} or a fitted model, got {teacher!r}.")
        clf = train_classifier(data, **train)
        teacher = clf if teacher == "self" else MultiLabelEnsemble([clf, TfidfBaseline().fit(data)])
    elif not hasattr(teacher, "predict_proba") or list(getattr(teacher, "labels", [])) != list(data.labels):
        raise ValueError(f"The teacher must have predict_proba and the data's labels {list(data.labels)[:5]}...; "
                         f"got {type(teacher).__name__} with labels {list(getattr(teacher, 'labels', []))[:5]}.")
    return np.clip(np.asarray(teacher.predict_proba(unlabelled), dtype=np.float32), 0.0, 1.0)


def _is_teachers_checkpoint(directory: str | Path, data: MultiLabelData) -> bool:
    """Whether the epoch checkpoint in ``directory`` is the teacher's: made on the labelled data
    alone (the student's data also holds the unlabelled texts)."""
    info = checkpoint_info(directory)  # the JSON alone: the trainer loads the weights it resumes from
    return info is not None and info.get("data_sha256") == data.fingerprint()["sha256"]


def _save_probs(directory: str | Path, texts: list[str], labels: list[str], probs: np.ndarray) -> None:
    """``teacher.npz`` in the checkpoint directory, written atomically (plain arrays: loaded without pickle)."""
    with atomic_file(open_checkpoint_dir(directory) / TEACHER_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, probs=probs, labels=np.asarray(labels, dtype=str),
                     texts_sha256=np.asarray(hash_texts(texts).hexdigest()))


def _saved_probs(directory: str | Path | None, texts: list[str], labels: list[str]) -> np.ndarray | None:
    """The teacher probabilities an interrupted run saved, or ``None`` when there are none."""
    path = Path(directory) / TEACHER_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        same = str(z["texts_sha256"]) == hash_texts(texts).hexdigest() and z["labels"].tolist() == list(labels)
        probs = z["probs"]
    if not same or probs.shape != (len(texts), len(labels)):
        raise ValueError(f"{path} holds a teacher's probabilities for other unlabelled texts or labels: resume with "
                         f"the same data and texts, or delete {directory} to start over.")
    return probs
