"""Soft-labelled training rows: unlabelled texts whose targets are a teacher model's probabilities
(the data side of :func:`ulmfit_ml.training.selftrain.self_train`).

The labelled rows and their split are kept as they are; the new rows join the training split
only, so thresholds and every validation figure still come from real labels.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .core import MultiLabelData
from ..tasks.multilabel import MultiLabelSpec
from ..utils.validation import extra_text_list

__all__ = ["takes_soft_labels", "check_soft_label_targets", "with_soft_labels"]


def takes_soft_labels(spec: Any) -> bool:
    """Whether targets of ``spec`` take soft labels: multi-label 0/1 labels (each label's probability
    becomes its own target); :func:`check_soft_label_targets` raises where this is false."""
    return isinstance(spec, MultiLabelSpec)


def check_soft_label_targets(spec: Any, *, what: str = "Soft labels need") -> None:
    """The one rule of which targets take soft labels (and so self-training): multi-label 0/1
    labels, since each label's probability becomes its own target. ``spec`` is a data's target
    spec (``data.spec``, or ``spec_for_config(data_config)`` before any data is read); ``what``
    starts the error message (the caller's name).

    Raises:
        ValueError: category or numeric targets.
    """
    if not takes_soft_labels(spec):
        raise ValueError(f"{what} multi-label data (0/1 label columns or a delimited label column); these targets "
                         f"are {spec.task!r}: train them with train_classifier.")


def with_soft_labels(data: MultiLabelData, texts: Sequence[str], probabilities: np.ndarray) -> MultiLabelData:
    """A copy of ``data`` whose training split also holds ``texts``, with ``probabilities`` as
    their targets (soft labels; the multi-label loss reads any target in [0, 1]).

    Args:
        data: multi-label :class:`~ulmfit_ml.data.core.MultiLabelData` (its rows and split are kept).
        texts: the unlabelled texts.
        probabilities: ``(len(texts), data.n_labels)`` values in [0, 1], in ``data.labels``' order.

    Returns:
        A new :class:`~ulmfit_ml.data.core.MultiLabelData`: ``data``'s rows, then ``texts`` as
        training rows (index ``-1, -2, ...``: they are no row of the user's frame). It shares
        ``data``'s tokenizer.

    Raises:
        ValueError: ``data`` is not multi-label, a text is missing or empty, ``probabilities`` has
            the wrong shape, or values outside [0, 1] (or NaN).
        TypeError: ``texts`` is a single string or a DataFrame.
    """
    check_soft_label_targets(data.spec)
    texts = extra_text_list(texts, empty_text="raise", col="texts")  # aligned with probabilities: none may drop
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape != (len(texts), data.n_labels):
        raise ValueError(f"probabilities must have shape (n_texts, n_labels) = ({len(texts)}, {data.n_labels}), "
                         f"got {p.shape}.")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite values in [0, 1] (a model's predict_proba output), "
                         "found values outside that range.")
    return data.with_training_rows(texts, p)
