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

import random
from dataclasses import dataclass
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
from ..utils.config import SELF_TRAIN_TEACHERS, ClassifierConfig, merge_config
from ..utils.persist import atomic_file
from ..utils.validation import extra_text_list

__all__ = ["TEACHERS", "AUTO_MAX_LABELLED", "AUTO_TEXTS", "SelfTrainPlan", "self_train_plan", "unlabelled_texts",
           "self_train"]

TEACHERS = SELF_TRAIN_TEACHERS  #: the teachers :func:`self_train` builds itself
TEACHER_FILE = "teacher.npz"  #: the teacher's probabilities in a checkpoint directory (``resume``)
#: ``self_train="auto"`` trains a student up to this many labelled training texts. Measured (dev macro-F1,
#: bench/RESULTS.md "Learning curve"): the blend-taught student over the classifier alone +0.067 at 500
#: GoEmotions comments, +0.034 at 2,000, +0.010 at 8,000 (1 seed); SemEval +0.040 at 500. The student reads
#: 2,000 more texts: teacher + student take 3-7x the classifier's time at 2,000-500 labels.
AUTO_MAX_LABELLED = 5_000
#: the unlabelled texts ``"auto"`` gives the student (a seeded sample when there are more): the number measured
AUTO_TEXTS = 2_000


@dataclass(frozen=True)
class SelfTrainPlan:
    """What a run's ``self_train`` setting comes to: the ``teacher`` (``None``: the classifier alone),
    at most ``max_texts`` unlabelled texts (``None``: all) and, for the log, ``reason``."""

    teacher: str | None
    max_texts: int | None
    reason: str


def self_train_plan(mode: str | None, *, n_train: int, n_unlabelled: int, multilabel: bool,
                    distributed: bool = False) -> SelfTrainPlan:
    """The one rule behind ``[run] self_train``: ``"blend"``/``"self"`` as given, ``"none"``/``None``
    the classifier alone, and ``"auto"`` (the default) the blend teacher's student on
    :data:`AUTO_TEXTS` unlabelled texts when the run has unlabelled texts, multi-label targets, one
    process and at most :data:`AUTO_MAX_LABELLED` labelled training texts; otherwise the classifier alone.

    Args:
        mode: the ``self_train`` setting.
        n_train: labelled texts in the training split.
        n_unlabelled: unlabelled texts available (``extra_texts`` not among the labelled ones).
        multilabel: whether the targets are multi-label (soft labels need them).
        distributed: a launched multi-process run (self-training runs as one process).
    """
    if mode is None or mode == "none":
        return SelfTrainPlan(None, None, "self_train = 'none'")
    if mode != "auto":
        return SelfTrainPlan(mode, None, f"self_train = {mode!r}")
    why_not = ("no unlabelled texts (run.extra_texts)" if n_unlabelled == 0 else
               "the targets are not multi-label" if not multilabel else
               f"{n_train:,} labelled training texts (> {AUTO_MAX_LABELLED:,})" if n_train > AUTO_MAX_LABELLED else
               "a distributed run" if distributed else None)
    if why_not:
        return SelfTrainPlan(None, None, f"self_train = 'auto': the classifier alone; {why_not}")
    n = min(n_unlabelled, AUTO_TEXTS)
    return SelfTrainPlan("blend", AUTO_TEXTS, f"self_train = 'auto': few labels ({n_train:,} labelled training "
                                              f"texts <= {AUTO_MAX_LABELLED:,}), a student of the ULMFiT + TF-IDF "
                                              f"blend on {n:,} unlabelled texts; self_train = 'none' turns it off")


def unlabelled_texts(data: MultiLabelData, texts: Sequence[str] | None = None) -> list[str]:
    """The unlabelled texts: ``texts`` or ``data.extra_texts``, minus the labelled ones (a
    validation text scored by the teacher and trained on would leak into the thresholds), each once."""
    texts = data.extra_texts if texts is None else extra_text_list(texts, col="texts")
    seen = set(data.texts)
    return list(dict.fromkeys(t for t in texts if t not in seen))


def _unlabelled(data: MultiLabelData, texts: Sequence[str] | None, max_texts: int | None, seed: int) -> list[str]:
    """:func:`unlabelled_texts`, at most ``max_texts`` of them (a sample drawn with ``seed``, in their order)."""
    out = unlabelled_texts(data, texts)
    if not out:
        raise ValueError("self_train needs unlabelled texts of the same kind as the labelled ones: pass texts=[...] "
                         "or build the data with extra_texts= (found none that is not already a labelled text).")
    if max_texts is not None and len(out) > max_texts:
        keep = sorted(random.Random(seed).sample(range(len(out)), max_texts))
        out = [out[i] for i in keep]
    return out


def self_train(data: MultiLabelData, *, encoder: LanguageModel | str | Path | None,
               texts: Sequence[str] | None = None, teacher: str | Any = "blend", max_texts: int | None = None,
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
        max_texts: use at most this many unlabelled texts, a sample drawn with the classifier's
            ``seed`` (``None``: all; the student trains on them all, so its time grows with them).
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
    if max_texts is not None and (isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 1):
        raise ValueError(f"max_texts must be a positive int or None, got {max_texts!r}.")
    seed = merge_config(ClassifierConfig, config, options).seed
    unlabelled = _unlabelled(data, texts, max_texts, seed)
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
