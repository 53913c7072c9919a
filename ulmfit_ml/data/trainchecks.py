"""Checks that only training makes: the label vocabulary a model is trained with is made once
(:func:`fit_label_matrix`, the training side of :func:`~ulmfit_ml.validation.parse_label_matrix`)
and must round-trip through the model's outputs (:func:`check_label_names`); every label with a
positive is trained on (:func:`train_on_every_label`, after the split); a language model gets
enough tokens for one batch (:func:`check_lm_tokens`). :meth:`MultiLabelData.from_df` and
:func:`~ulmfit_ml.data.lm_dataloaders_from_tokens`, which every training path goes through, call them.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..utils.validation import LabelSpec, parse_label_matrix

__all__ = ["check_label_names", "fit_label_matrix", "train_on_every_label", "check_lm_tokens", "stratification_matrix"]


def stratification_matrix(y: np.ndarray) -> np.ndarray:
    """The 0/1 int matrix iterative-stratification splits on (the train/validation split and the CV
    folds); a single label column gets its complement, as iterstrat rejects a "binary" target."""
    strat = (np.asarray(y) > 0).astype(int)
    return np.hstack([strat, 1 - strat]) if strat.shape[1] == 1 else strat


def check_label_names(labels: Sequence[str], *, label_delim: str, label_col: str | None = None,
                      source: str = "the labels") -> None:
    """The label vocabulary a model is trained with must round-trip through its outputs: no two
    labels that differ only by case or whitespace (``BILLING`` / ``billing`` would be learnt as
    two labels), and no label containing ``label_delim`` (``output="labels"`` joins label lists
    with it, so they could not be split back).

    Args:
        label_col: the delimited label column the labels come from (``None``: 0/1 columns);
            the fix named in the message depends on it.

    Raises:
        ValueError: naming the labels and the fix.
    """
    groups: dict[str, list[str]] = {}
    for lab in labels:
        groups.setdefault(" ".join(str(lab).split()).casefold(), []).append(str(lab))
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        pairs = "; ".join(" and ".join(repr(x) for x in g) for g in same[:5])
        fix = (f"df[{label_col!r}] = df[{label_col!r}].str.lower().str.replace(r'\s+', ' ', regex=True)"
               if label_col is not None else
               f"merge the columns, df[{same[0][0]!r}] = df[{same[0]!r}].max(axis=1), and drop the others")
        raise ValueError(
            f"{len(same)} group(s) of labels in {source} differ only by case or whitespace: {pairs}. They would be "
            f"learnt as different labels. Normalise them first, e.g. {fix}.")
    with_delim = [str(lab) for lab in labels if label_delim in str(lab)]
    if with_delim:
        raise ValueError(
            f"Label(s) {with_delim[:5]} in {source} contain the label delimiter {label_delim!r}: predicted label lists "
            f"(output='labels', predict_file, the CLI's labels column) are joined with {label_delim!r} and could not "
            f"be split back. Rename the label(s) (e.g. {with_delim[0].replace(label_delim, '_')!r}) or choose another "
            "label_delim= (CLI --label-delim).")


def fit_label_matrix(df: pd.DataFrame, spec: LabelSpec, labels: Sequence[str] | None = None,
                     ) -> tuple[np.ndarray, list[str]]:
    """Training side of :func:`parse_label_matrix`: the label vocabulary is made here, so it is
    checked here. ``labels=`` with 0/1 columns must name every label column (a shorter list would
    drop the others silently) and only them; the vocabulary passes :func:`check_label_names`.

    Raises:
        ValueError: as :func:`parse_label_matrix`; label columns left out of ``labels``, names in
            ``labels`` that are not label columns, or a vocabulary :func:`check_label_names` refuses.
    """
    if spec.label_cols is not None and labels is not None:
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of label names, got the string {labels!r}.")
        given = {str(x) for x in labels}
        left_out = [c for c in spec.label_cols if str(c) not in given]
        unknown = [x for x in labels if str(x) not in {str(c) for c in spec.label_cols}]
        if left_out:
            raise ValueError(
                f"labels={list(labels)} leaves out {len(left_out)} of the label_cols: {left_out}. They would be dropped "
                "silently. Remove them from label_cols if the model should not learn them, or leave labels unset "
                "(with 0/1 columns the label columns are the labels).")
        if unknown:
            raise ValueError(f"labels= names {unknown}, which are not in label_cols {list(spec.label_cols)}: with 0/1 "
                             "columns every label is one of the label columns.")
    y, labs = parse_label_matrix(df, spec, labels)
    source = f"label_cols {list(spec.label_cols)}" if spec.label_cols is not None else f"column {spec.label_col!r}"
    check_label_names(labs, label_delim=spec.label_delim, label_col=spec.label_col, source=source)
    return y, labs


def train_on_every_label(texts: list[str], y: np.ndarray, labels: list[str], is_valid: np.ndarray, *, moved: bool,
                         stacklevel: int = 3) -> np.ndarray:
    """A label whose positives all fell in the validation rows is never trained on: move one
    positive row of each such label (with every copy of its text) to training, with a warning
    naming the labels (random and stratified splits); with ``valid_col`` only warn."""
    only_valid = [j for j in range(y.shape[1]) if y[is_valid, j].any() and not y[~is_valid, j].any()]
    if not only_valid:
        return is_valid
    names = [labels[j] for j in only_valid]
    out = is_valid.copy()
    if moved:
        for j in only_valid:
            if y[~out, j].any():  # a row moved for an earlier label also holds this one
                continue
            text = texts[int(np.flatnonzero(out & (y[:, j] > 0))[0])]
            out[[i for i, t in enumerate(texts) if t == text]] = False
        if out.any():
            n = int((is_valid & ~out).sum())
            warnings.warn(f"{len(names)} label(s) had positives only in the validation rows: {names[:10]}. {n} row(s) "
                          "were moved to training so that every label is trained on.", UserWarning,
                          stacklevel=stacklevel)
            return out
    warnings.warn(f"{len(names)} label(s) have positives only in the validation rows: {names[:10]}. The model never "
                  "trains on them (their F1 will be about 0): put some of their rows in training (valid_col), or add "
                  "examples.", UserWarning, stacklevel=stacklevel)
    return is_valid


def check_lm_tokens(lengths: np.ndarray, train_idx: list[int], valid_idx: list[int], *, bs: int, seq_len: int,
                    valid_pct: float) -> None:
    """fastai's LM DataLoader cuts each split's token stream into ``bs`` rows: with ``bs`` tokens
    or fewer it has no batch and training ends in a bare ``IndexError`` (or a validation loss of
    None). Refuse early, with the counts and the fix."""
    n_train, n_valid = int(lengths[train_idx].sum()), int(lengths[valid_idx].sum())
    more = "Add texts (unlabelled ones can go in extra_texts=, CLI [run] extra_texts)"
    if not valid_idx:
        raise ValueError(f"Too few texts for the language model: its validation split (valid_pct={valid_pct}) of "
                         f"{len(lengths)} texts is empty; it needs at least {int(np.ceil(1 / valid_pct))} texts. {more}.")
    if n_train <= bs or n_valid <= bs:
        raise ValueError(f"Too few tokens for the language model: with bs={bs} its training and its validation texts "
                         f"each need more than {bs} tokens (one stream per batch row; {bs * seq_len + 1} for one full "
                         f"batch of seq_len={seq_len}), but the {len(lengths)} texts give {n_train} training and "
                         f"{n_valid} validation tokens ({len(valid_idx)} validation text(s), valid_pct={valid_pct}). "
                         f"{more}, or use a smaller bs / seq_len (e.g. bs={max(1, min(n_train, n_valid) - 1)}).")
